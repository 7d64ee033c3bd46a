"""The evaluation harness: the DS2 paper's five tasks, one JSON result and a printed table.

    >>> from ds2_hf.evaluation import EvalConfig, evaluate_model
    >>> result = evaluate_model(EvalConfig(model="./llama31-ds2", tasks="mmlu,gsm8k,bbh,tydiqa,truthfulqa",
    ...                                    output="results.json"))
    >>> result["average"]

``ds2 eval --model ./llama31-ds2 --tasks mmlu,gsm8k,bbh,tydiqa,truthfulqa --output results.json`` runs
the same thing from the shell (flags, or a YAML file of the same fields with ``--config``).

The defaults are the paper's protocol (DS2_SPEC.md §6): MMLU all test questions, 0-shot, next-token
scores of " A".." D"; GSM8K 200 test problems (seed 42), 8 chain-of-thought exemplars, greedy, 512
tokens, stop at a newline; BBH 40 per task (seed 42), 3 chain-of-thought exemplars, greedy; TydiQA
GoldP 100 per language, 1 gold-passage shot, 50 tokens, stop at a newline; TruthfulQA all questions
with the 6-shot QA primer, MC1/MC2 from log-likelihoods. Every shot count and subsample size is a
field below and is recorded in the result.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ds2_hf.evaluation import data as eval_data
from ds2_hf.evaluation import prompts, scoring
from ds2_hf.evaluation.exemplars import BBH_TASKS, mmlu_categories

logger = logging.getLogger(__name__)

TASKS = ("mmlu", "gsm8k", "bbh", "tydiqa", "truthfulqa")
MAIN_METRIC = {"mmlu": "accuracy", "gsm8k": "exact_match", "bbh": "exact_match", "tydiqa": "f1", "truthfulqa": "mc2"}
DEFAULT_MAX_NEW_TOKENS = {"gsm8k": 512, "bbh": 512, "tydiqa": 50}
DEFAULT_STOP = {"gsm8k": ("\n",), "bbh": ("\n\n", "\nQ:"), "tydiqa": ("\n",)}
RESULT_FORMAT_VERSION = 1


def _split_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [i.strip() for i in items if i and i.strip()]
    return items or None


@dataclass
class EvalConfig:
    """Settings of one evaluation run (every field is also a ``ds2 eval`` flag and a YAML key)."""

    model: str = field(metadata={"help": "hub id, local folder, or .gguf file of the model to evaluate"})
    tasks: str = field(default=",".join(TASKS), metadata={"help": "comma-separated subset of " + ",".join(TASKS)})
    output: str | None = field(default=None, metadata={"help": "write the JSON result here"})
    save_predictions: bool = field(
        default=True, metadata={"help": "also write per-example outputs to <output>.predictions.jsonl"}
    )
    # backend
    backend: str = field(default="transformers", metadata={"help": "'transformers' or 'server'"})
    server_url: str | None = field(default=None, metadata={"help": "base URL of an OpenAI-compatible server"})
    server_api: str = field(
        default="completions",
        metadata={"help": "'completions' (raw prompts, the protocol) or 'chat' (server applies its chat template)"},
    )
    served_model_name: str | None = field(default=None, metadata={"help": "model name on the server (default: model)"})
    max_concurrency: int = field(default=8, metadata={"help": "concurrent server requests"})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file name inside `model` (folder/hub repo)"})
    dtype: str = field(default="auto", metadata={"help": "torch dtype for transformers: auto, float32, bfloat16..."})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per forward pass / generate call"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "override every generation task's token limit (gsm8k/bbh 512, tydiqa 50)"}
    )
    seed: int = field(default=42, metadata={"help": "seed of the subsampling"})
    # shots
    mmlu_shots: int = field(default=0, metadata={"help": "MMLU dev-split shots per subject (paper: 0; common: 5)"})
    gsm8k_shots: int = field(default=8, metadata={"help": "GSM8K chain-of-thought exemplars (max 8)"})
    bbh_shots: int = field(default=3, metadata={"help": "BBH chain-of-thought exemplars per task (max 3)"})
    tydiqa_shots: int = field(default=1, metadata={"help": "TydiQA gold-passage shots per language"})
    # subsampling (empty = all)
    mmlu_max_examples: int | None = field(default=None, metadata={"help": "MMLU questions to sample (default all)"})
    gsm8k_max_examples: int | None = field(default=200, metadata={"help": "GSM8K problems to sample"})
    bbh_max_per_task: int | None = field(default=40, metadata={"help": "BBH examples per task to sample"})
    tydiqa_max_per_language: int | None = field(default=100, metadata={"help": "TydiQA questions per language"})
    truthfulqa_max_examples: int | None = field(default=None, metadata={"help": "TruthfulQA questions (default all)"})
    bbh_tasks: str | None = field(default=None, metadata={"help": "comma-separated BBH tasks (default all 27)"})
    mmlu_subjects: str | None = field(default=None, metadata={"help": "comma-separated MMLU subjects (default all)"})
    tydiqa_languages: str | None = field(default=None, metadata={"help": "comma-separated TydiQA languages"})
    # data and prompts
    mmlu_path: str = field(default=eval_data.HUB_DEFAULTS["mmlu"], metadata={"help": "hub id or local copy"})
    gsm8k_path: str = field(default=eval_data.HUB_DEFAULTS["gsm8k"], metadata={"help": "hub id or local copy"})
    bbh_path: str = field(
        default=eval_data.HUB_DEFAULTS["bbh"], metadata={"help": "hub id, local copy, or 'bigbench' (offline source)"}
    )
    tydiqa_path: str = field(default=eval_data.HUB_DEFAULTS["tydiqa"], metadata={"help": "hub id or local copy"})
    truthfulqa_path: str = field(
        default=eval_data.HUB_DEFAULTS["truthfulqa"],
        metadata={"help": "hub id, local copy, or 'bigbench' (offline source)"},
    )
    prompts_dir: str | None = field(
        default=None, metadata={"help": "folder of your own exemplar files in lm-eval's tasks layout"}
    )
    tydiqa_templates: str | None = field(default=None, metadata={"help": "JSON file with per-language TydiQA wording"})

    def __post_init__(self) -> None:
        self.tasks = ",".join(_split_list(self.tasks) or [])
        unknown = [t for t in self.task_list if t not in TASKS]
        if unknown or not self.task_list:
            raise ValueError(f"Unknown or no tasks {unknown or self.tasks!r}; choose from: {', '.join(TASKS)}")
        for name in ("bbh_tasks", "mmlu_subjects", "tydiqa_languages"):
            items = _split_list(getattr(self, name))
            setattr(self, name, ",".join(items) if items else None)
        bad_bbh = [t for t in self.bbh_task_list if t not in BBH_TASKS]
        if bad_bbh:
            raise ValueError(f"Unknown BBH tasks {bad_bbh}; choose from: {', '.join(BBH_TASKS)}")
        if self.backend not in ("transformers", "server"):
            raise ValueError(f"backend must be 'transformers' or 'server', got {self.backend!r}")
        if self.backend == "server" and not self.server_url:
            raise ValueError("backend='server' needs server_url (e.g. http://127.0.0.1:8000).")
        for name in ("mmlu_shots", "gsm8k_shots", "bbh_shots", "tydiqa_shots", "batch_size", "max_concurrency"):
            if getattr(self, name) < (1 if name in ("batch_size", "max_concurrency") else 0):
                raise ValueError(f"{name} must be >= {1 if name in ('batch_size', 'max_concurrency') else 0}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")

    @property
    def task_list(self) -> list[str]:
        return _split_list(self.tasks) or []

    @property
    def bbh_task_list(self) -> list[str]:
        return _split_list(self.bbh_tasks) or []

    def generation_settings(self, task: str) -> dict[str, Any]:
        return {
            "decoding": "greedy",
            "max_new_tokens": self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task],
            "stop": list(DEFAULT_STOP[task]),
        }


# ---------------------------------------------------------------------------------------------
# One runner per task: (config, backend) -> (result dict, per-example records)

Records = list[dict[str, Any]]


def _run_mmlu(config: EvalConfig, backend: Any) -> tuple[dict[str, Any], Records]:
    rows, shots = eval_data.load_mmlu(
        config.mmlu_path,
        max_examples=config.mmlu_max_examples,
        seed=config.seed,
        n_shots=config.mmlu_shots,
        subjects=_split_list(config.mmlu_subjects),
    )
    built = []
    for row in rows:
        subject_shots = shots.get(row["subject"], [])
        if len(subject_shots) < config.mmlu_shots:
            raise ValueError(
                f"MMLU subject {row['subject']!r} has {len(subject_shots)} dev question(s) in {config.mmlu_path!r} "
                f"but mmlu_shots={config.mmlu_shots}; add dev rows or lower mmlu_shots."
            )
        built.append(prompts.mmlu_prompt(row, subject_shots, config.prompts_dir))
    # Questions share the continuation set (" A".." D"), so score each group in one call.
    scores: list[list[float]] = [[] for _ in rows]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (_, conts) in enumerate(built):
        groups.setdefault(tuple(conts), []).append(i)
    for conts, idx in groups.items():
        for i, s in zip(idx, backend.choice_logprobs([built[i][0] for i in idx], list(conts))):
            scores[i] = s
    answers = [int(r["answer"]) for r in rows]
    subjects = [r["subject"] for r in rows]
    metrics = scoring.mmlu_scores(scores, answers, subjects, categories=mmlu_categories(config.prompts_dir, True))
    records = [
        {
            "subject": r["subject"],
            "question": r["question"],
            "scores": s,
            "prediction": scoring.LETTERS[max(range(len(s)), key=s.__getitem__)],
            "answer": scoring.LETTERS[a],
        }
        for r, s, a in zip(rows, scores, answers)
    ]
    result = {
        "metrics": {"accuracy": metrics["accuracy"], "macro_accuracy": metrics["macro_accuracy"]},
        "subtasks": metrics["per_subject"],
        "categories": metrics.get("per_category", {}),
        "n": len(rows),
        "settings": {
            "shots": config.mmlu_shots,
            "max_examples": config.mmlu_max_examples,
            "scoring": "next-token log-probability of each choice letter",
            "source": config.mmlu_path,
        },
        "example_prompt": built[0][0] if built else "",
    }
    return result, records


def _run_gsm8k(config: EvalConfig, backend: Any) -> tuple[dict[str, Any], Records]:
    rows = eval_data.load_gsm8k(config.gsm8k_path, max_examples=config.gsm8k_max_examples, seed=config.seed)
    texts = [prompts.gsm8k_prompt(r, config.gsm8k_shots, config.prompts_dir) for r in rows]
    gen = config.generation_settings("gsm8k")
    outputs = backend.generate(texts, max_new_tokens=gen["max_new_tokens"], stop=gen["stop"])
    refs = [r["answer"] for r in rows]
    metrics = scoring.gsm8k_scores(outputs, refs)
    records = [
        {
            "question": r["question"],
            "output": o,
            "extracted": scoring.gsm8k_extract(o),
            "answer": scoring.gsm8k_reference(ref),
        }
        for r, o, ref in zip(rows, outputs, refs)
    ]
    result = {
        "metrics": metrics,
        "n": len(rows),
        "settings": {
            "shots": config.gsm8k_shots,
            "max_examples": config.gsm8k_max_examples,
            "source": config.gsm8k_path,
            **gen,
        },
        "example_prompt": texts[0] if texts else "",
    }
    return result, records


def _run_bbh(config: EvalConfig, backend: Any) -> tuple[dict[str, Any], Records]:
    tasks = config.bbh_task_list or list(BBH_TASKS)
    if config.bbh_path == eval_data.BIGBENCH and not config.bbh_task_list:
        from ds2_hf.evaluation.bigbench import BBH_TO_BIGBENCH

        tasks = [t for t in BBH_TASKS if t in BBH_TO_BIGBENCH]
        logger.info("BBH from BIG-bench: %d tasks have JSON sources (the 3 programmatic ones are skipped).", len(tasks))
    per_task = eval_data.load_bbh(
        config.bbh_path, tasks, max_per_task=config.bbh_max_per_task, seed=config.seed, prompts_dir=config.prompts_dir
    )
    flat = [(task, row) for task in tasks for row in per_task[task]]
    texts = [prompts.bbh_prompt(row, task, config.bbh_shots, config.prompts_dir) for task, row in flat]
    gen = config.generation_settings("bbh")
    outputs = backend.generate(texts, max_new_tokens=gen["max_new_tokens"], stop=gen["stop"])
    targets = [row["target"] for _, row in flat]
    names = [task for task, _ in flat]
    metrics = scoring.bbh_scores(outputs, targets, names)
    records = [
        {"subtask": t, "input": row["input"], "output": o, "extracted": scoring.bbh_extract(o), "target": row["target"]}
        for (t, row), o in zip(flat, outputs)
    ]
    result = {
        "metrics": {"exact_match": metrics["exact_match"], "micro_exact_match": metrics["micro_exact_match"]},
        "subtasks": metrics["per_task"],
        "n": len(flat),
        "settings": {
            "shots": config.bbh_shots,
            "max_per_task": config.bbh_max_per_task,
            "tasks": tasks,
            "source": config.bbh_path,
            **gen,
        },
        "example_prompt": texts[0] if texts else "",
    }
    return result, records


def _run_tydiqa(config: EvalConfig, backend: Any) -> tuple[dict[str, Any], Records]:
    rows, shots = eval_data.load_tydiqa(
        config.tydiqa_path,
        max_per_language=config.tydiqa_max_per_language,
        seed=config.seed,
        n_shots=config.tydiqa_shots,
        languages=_split_list(config.tydiqa_languages),
    )
    templates = prompts.load_tydiqa_templates(config.tydiqa_templates)
    texts = [prompts.tydiqa_prompt(r, shots.get(r["language"], []), templates) for r in rows]
    gen = config.generation_settings("tydiqa")
    outputs = [o.strip() for o in backend.generate(texts, max_new_tokens=gen["max_new_tokens"], stop=gen["stop"])]
    answers = [list(r["answers"]["text"]) for r in rows]
    languages = [r["language"] for r in rows]
    metrics = scoring.tydiqa_scores(outputs, answers, languages)
    records = [
        {"id": r.get("id"), "language": r["language"], "question": r["question"], "output": o, "answers": a}
        for r, o, a in zip(rows, outputs, answers)
    ]
    result = {
        "metrics": {"f1": metrics["f1"], "exact_match": metrics["exact_match"]},
        "subtasks": metrics["per_language"],
        "n": len(rows),
        "settings": {
            "shots": config.tydiqa_shots,
            "max_per_language": config.tydiqa_max_per_language,
            "languages": sorted(set(languages)),
            "source": config.tydiqa_path,
            "templates": config.tydiqa_templates or str(prompts.TYDIQA_TEMPLATES),
            **gen,
        },
        "example_prompt": texts[0] if texts else "",
    }
    return result, records


def _run_truthfulqa(config: EvalConfig, backend: Any) -> tuple[dict[str, Any], Records]:
    rows = eval_data.load_truthfulqa(
        config.truthfulqa_path, max_examples=config.truthfulqa_max_examples, seed=config.seed
    )
    requests: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    built = []
    for row in rows:
        prompt, delimiter = prompts.truthfulqa_prompt(row, config.prompts_dir)
        built.append((prompt, delimiter))
        # mc1 choices are mostly a subset of mc2's: score each distinct (prompt, answer) once.
        for choice in list(row["mc1_targets"]["choices"]) + list(row["mc2_targets"]["choices"]):
            key = (prompt, delimiter + choice)
            if key not in index:
                index[key] = len(requests)
                requests.append(key)
    lls = backend.loglikelihood(requests)
    preds, refs, records = [], [], []
    for row, (prompt, delimiter) in zip(rows, built):
        pred = {
            k: [lls[index[(prompt, delimiter + c)]] for c in row[f"{k}_targets"]["choices"]] for k in ("mc1", "mc2")
        }
        ref = {k: list(row[f"{k}_targets"]["labels"]) for k in ("mc1", "mc2")}
        preds.append(pred)
        refs.append(ref)
        records.append({"question": row["question"], "scores": pred, "labels": ref})
    metrics = scoring.truthfulqa_scores(preds, refs)
    result = {
        "metrics": metrics,
        "n": len(rows),
        "settings": {
            "shots": 6,
            "primer": "lm-eval truthfulqa_mc1 QA primer",
            "max_examples": config.truthfulqa_max_examples,
            "scoring": "sum of answer-token log-likelihoods after ' '",
            "source": config.truthfulqa_path,
        },
        "example_prompt": built[0][0] if built else "",
    }
    return result, records


RUNNERS: dict[str, Callable[[EvalConfig, Any], tuple[dict[str, Any], Records]]] = {
    "mmlu": _run_mmlu,
    "gsm8k": _run_gsm8k,
    "bbh": _run_bbh,
    "tydiqa": _run_tydiqa,
    "truthfulqa": _run_truthfulqa,
}


# ---------------------------------------------------------------------------------------------


def build_backend(config: EvalConfig) -> Any:
    """The backend ``config`` asks for (a transformers model, or a server plus a transformers scorer)."""
    from ds2_hf.evaluation.backends import ServerBackend, TransformersBackend

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)

    def load() -> TransformersBackend:
        return TransformersBackend.from_pretrained(
            config.model, gguf_file=config.gguf_file, dtype=config.dtype, device=config.device,
            batch_size=config.batch_size,
        )

    if config.backend == "transformers":
        return load()
    needs_scores = any(t in ("mmlu", "truthfulqa") for t in config.task_list)
    scorer = None
    if needs_scores:
        try:
            scorer = load()
        except (OSError, ValueError) as err:
            raise ValueError(
                f"mmlu/truthfulqa are scored with log-likelihoods from transformers, and {config.model!r} could not "
                f"be loaded ({err}). Pass --model as a loadable folder/hub id and --served-model-name for the "
                "server's name, or drop mmlu,truthfulqa from --tasks."
            ) from err
    return ServerBackend(
        config.server_url or "",
        config.served_model_name or config.model,
        api=config.server_api,
        scorer=scorer,
        max_concurrency=config.max_concurrency,
    )


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("ds2_hf", "transformers", "torch", "datasets", "lm_eval"):
        try:
            out[pkg] = md.version(pkg.replace("_", "-") if pkg == "lm_eval" else pkg)
        except md.PackageNotFoundError:
            continue
    return out


def evaluate_model(config: EvalConfig, backend: Any = None) -> dict[str, Any]:
    """Run every task in ``config`` and return (and write, if ``config.output``) the result dict.

    The result holds, per task, its main ``score`` (MMLU accuracy, GSM8K exact match, BBH macro exact
    match, TydiQA F1, TruthfulQA MC2; percentages), all ``metrics``, per-``subtasks`` scores, the
    example count ``n``, the task's ``settings`` and wall time; then the ``average`` of the task
    scores, the full ``config``, the backend description and package versions.
    """
    start = time.perf_counter()
    backend = backend if backend is not None else build_backend(config)
    load_s = time.perf_counter() - start
    tasks: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    for task in config.task_list:
        t0 = time.perf_counter()
        logger.info("Evaluating %s ...", task)
        result, task_records = RUNNERS[task](config, backend)
        score = result["metrics"][MAIN_METRIC[task]]
        tasks[task] = {
            "score": score,
            "metric": MAIN_METRIC[task],
            **result,
            "wall_time_s": round(time.perf_counter() - t0, 3),
        }
        records.extend({"task": task, **r} for r in task_records)
        logger.info("%s: %s = %.2f (n=%d)", task, MAIN_METRIC[task], score, result["n"])
    scores = [t["score"] for t in tasks.values()]
    out: dict[str, Any] = {
        "format_version": RESULT_FORMAT_VERSION,
        "model": config.model,
        "tasks": tasks,
        "average": sum(scores) / len(scores) if scores else math.nan,
        "average_over": list(tasks),
        "complete": set(tasks) == set(TASKS),
        "config": asdict(config),
        "backend": backend.describe() if hasattr(backend, "describe") else {"backend": type(backend).__name__},
        "versions": _versions(),
        "command": " ".join(sys.argv),
        "model_load_s": round(load_s, 3),
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    if config.output:
        write_result(out, config.output, records if config.save_predictions else None)
    return out


def predictions_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".predictions.jsonl")


def write_result(result: dict[str, Any], output: str | Path, records: list[dict[str, Any]] | None = None) -> Path:
    """Write the result JSON (and the per-example records as JSON lines next to it)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if records is not None:
        result["predictions_file"] = str(predictions_path(output))
        tmp = predictions_path(output).with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(predictions_path(output))
    tmp = output.with_suffix(output.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(output)
    return output


def format_table(result: dict[str, Any], subtasks: bool = False) -> str:
    """A plain-text table of the task scores (and, with ``subtasks``, each subtask's score)."""
    header = f"{'task':<40} {'metric':<12} {'score':>7} {'n':>6} {'shots':>5}"
    lines = [header, "-" * len(header)]
    for name, task in result["tasks"].items():
        shots = task["settings"].get("shots", "")
        lines.append(f"{name:<40} {task['metric']:<12} {task['score']:>7.2f} {task['n']:>6} {shots!s:>5}")
        if subtasks:
            for sub, value in task.get("subtasks", {}).items():
                value = value[MAIN_METRIC[name]] if isinstance(value, dict) else value
                lines.append(f"  {sub:<38} {'':<12} {value:>7.2f}")
    lines.append("-" * len(header))
    label = "average" if result.get("complete") else f"average ({len(result['tasks'])} of {len(TASKS)} tasks)"
    lines.append(f"{label:<40} {'':<12} {result['average']:>7.2f}")
    return "\n".join(lines)


def main(config: EvalConfig, subtasks: bool = False) -> dict[str, Any]:
    """Evaluate, print the table, and return the result (the ``ds2 eval`` entry point)."""
    result = evaluate_model(config)
    print(format_table(result, subtasks=subtasks))
    print(f"wall time {result['wall_time_s']:.1f} s (model load {result['model_load_s']:.1f} s)")
    if config.output:
        print(f"wrote {config.output}")
    return result
