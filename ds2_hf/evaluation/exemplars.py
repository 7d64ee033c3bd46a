"""Few-shot exemplars and prompt formats, read as data from lm-eval's task files (or your copy of them).

The exemplars the DS2 protocol uses (8 GSM8K chain-of-thought exemplars, 3 BBH chain-of-thought
exemplars per task, the TruthfulQA 6-shot QA primer, the MMLU subject headers) ship inside the
``lm-eval`` package (MIT) as task YAML files. We read them from there, so no third-party prompt text
lives in this repository. To use your own, copy lm-eval's ``tasks`` folder layout (only the files
you change) and pass it as ``prompts_dir``:

    prompts/bbh/cot_fewshot/<task>.yaml      (+ _cot_fewshot_template_yaml)
    prompts/gsm8k/gsm8k-cot.yaml
    prompts/truthfulqa/truthfulqa_mc1.yaml
    prompts/mmlu/default/mmlu_<subject>.yaml (+ _default_template_yaml)

    >>> from ds2_hf.evaluation.exemplars import gsm8k_template
    >>> template = gsm8k_template()
    >>> len(template.samples)
    8
    >>> prompt = template.prompt({"question": "What is 2 + 2?"}, n_shots=8)
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LM_EVAL_HINT = "pip install 'ds2_hf[eval]' (lm-eval ships the exemplar files)"

# The 27 BBH tasks (names as in the BBH release and lm-eval).
BBH_TASKS: tuple[str, ...] = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)


def lm_eval_tasks_dir() -> Path:
    """The ``tasks`` folder of the installed ``lm_eval`` package (found without importing it)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The exemplar prompts are read from lm-eval's task files, and lm-eval is not installed. "
            f"Install it with: {LM_EVAL_HINT}, or pass prompts_dir= a folder with your own copies."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def _resolve(relative: str, prompts_dir: str | os.PathLike | None) -> Path:
    """A task file from the user's prompts folder when it has one, else from lm-eval."""
    if prompts_dir is not None:
        candidate = Path(prompts_dir) / relative
        if candidate.is_file():
            return candidate
    path = lm_eval_tasks_dir() / relative
    if not path.is_file():
        where = f"{prompts_dir} or " if prompts_dir is not None else ""
        raise FileNotFoundError(
            f"Exemplar file {relative!r} not found in {where}{path.parent}. Your lm-eval version may lay its "
            f"tasks out differently: put a copy at {Path(prompts_dir or 'PROMPTS_DIR') / relative}."
        )
    return path


class _TaskLoader(yaml.SafeLoader):
    """SafeLoader that reads lm-eval's ``!function module.name`` tags as None (we never run their code)."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def read_task_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """An lm-eval task YAML as a dict, with its ``include`` chain merged in (the file's own keys win)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_TaskLoader) or {}
    include = data.pop("include", None)
    if include:
        base = read_task_yaml(path.parent / include)
        base.update(data)
        data = base
    return data


@functools.lru_cache(maxsize=1)
def _jinja_env() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Sandboxed: prompt templates may come from user files. Trailing newlines are part of prompts.
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def render(template: str, doc: dict[str, Any]) -> str:
    """Render an lm-eval ``doc_to_*`` value for one document: a Jinja template or a bare column name."""
    if "{{" not in template and "{%" not in template:
        if template in doc:
            return str(doc[template])
        return template
    return _jinja_env().from_string(template).render(**doc)


@dataclass(frozen=True)
class FewShotTemplate:
    """An lm-eval style prompt format: description, then shots (text + delimiter + target), then the query.

    >>> t = FewShotTemplate(doc_to_text="Q: {{q}}\\nA:", doc_to_target="{{a}}", samples=({"q": "1+1?", "a": "2"},))
    >>> t.prompt({"q": "2+2?"}, n_shots=1)
    'Q: 1+1?\\nA: 2\\n\\nQ: 2+2?\\nA:'
    """

    doc_to_text: str
    doc_to_target: str = "{{target}}"
    description: str = ""
    samples: tuple[dict[str, Any], ...] = ()
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    source: str = ""
    stop: tuple[str, ...] = field(default=())
    choices: tuple[str, ...] = field(default=())  # a fixed ``doc_to_choice`` list (MMLU: A-D)

    def text(self, doc: dict[str, Any]) -> str:
        return render(self.doc_to_text, doc)

    def target(self, doc: dict[str, Any]) -> str:
        value = render(self.doc_to_target, doc)
        # lm-eval semantics: an integer target indexes the task's fixed choice list.
        if self.choices and value.strip().isdigit():
            return self.choices[int(value)]
        return value

    def prompt(self, doc: dict[str, Any], n_shots: int, shots: list[dict[str, Any]] | None = None) -> str:
        """The full prompt for ``doc`` with the first ``n_shots`` exemplars (or the given ``shots``)."""
        pool = list(self.samples) if shots is None else list(shots)
        if n_shots > len(pool):
            raise ValueError(
                f"Asked for {n_shots} shots but only {len(pool)} exemplars are available"
                f"{' in ' + self.source if self.source else ''}; lower the shot count."
            )
        parts = [self.description]
        for shot in pool[:n_shots]:
            parts.append(self.text(shot) + self.target_delimiter + self.target(shot) + self.fewshot_delimiter)
        parts.append(self.text(doc))
        return "".join(parts)


def _template_from_yaml(data: dict[str, Any], source: Path) -> FewShotTemplate:
    fewshot = data.get("fewshot_config") or {}
    return FewShotTemplate(
        doc_to_text=data.get("doc_to_text", ""),
        doc_to_target=str(data.get("doc_to_target", "{{target}}")),
        description=data.get("description") or "",
        samples=tuple(fewshot.get("samples") or ()),
        target_delimiter=data.get("target_delimiter", " "),
        fewshot_delimiter=data.get("fewshot_delimiter", "\n\n"),
        source=str(source),
        stop=tuple((data.get("generation_kwargs") or {}).get("until") or ()),
        choices=tuple(str(c) for c in choice) if isinstance(choice := data.get("doc_to_choice"), list) else (),
    )


def bbh_template(task: str, prompts_dir: str | os.PathLike | None = None) -> FewShotTemplate:
    """The 3-shot chain-of-thought format and exemplars of one BBH task (``input``/``target`` docs)."""
    if task not in BBH_TASKS:
        raise ValueError(f"Unknown BBH task {task!r}; choose from: {', '.join(BBH_TASKS)}")
    path = _resolve(f"bbh/cot_fewshot/{task}.yaml", prompts_dir)
    return _template_from_yaml(read_task_yaml(path), path)


def gsm8k_template(prompts_dir: str | os.PathLike | None = None) -> FewShotTemplate:
    """The 8-shot chain-of-thought GSM8K format and exemplars (``question`` docs)."""
    path = _resolve("gsm8k/gsm8k-cot.yaml", prompts_dir)
    return _template_from_yaml(read_task_yaml(path), path)


def truthfulqa_template(prompts_dir: str | os.PathLike | None = None) -> FewShotTemplate:
    """The TruthfulQA multiple-choice format: the 6-shot QA primer, then ``Q: {question}\\nA:``."""
    path = _resolve("truthfulqa/truthfulqa_mc1.yaml", prompts_dir)
    return _template_from_yaml(read_task_yaml(path), path)


def mmlu_template(subject: str, prompts_dir: str | os.PathLike | None = None) -> FewShotTemplate:
    """The MMLU format for one subject: its header line, then question, lettered choices and ``Answer:``."""
    try:
        path = _resolve(f"mmlu/default/mmlu_{subject}.yaml", prompts_dir)
    except FileNotFoundError:
        # A subject lm-eval does not know (a user's own MMLU-style data): same format, generic header.
        path = _resolve("mmlu/default/_default_template_yaml", prompts_dir)
        data = read_task_yaml(path)
        data["description"] = ""
    else:
        data = read_task_yaml(path)
    return _template_from_yaml(data, path)


_CATEGORY_TAG_SUFFIX = "_tasks"


def mmlu_categories(prompts_dir: str | os.PathLike | None = None, missing_ok: bool = False) -> dict[str, str]:
    """Subject -> category (stem, humanities, social_sciences, other) as lm-eval's MMLU task files tag them.

    With ``missing_ok`` an empty dict is returned when lm-eval is not installed.
    """
    try:
        folder = _resolve("mmlu/default/_default_template_yaml", prompts_dir).parent
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise
    return dict(_categories_in(str(folder)))


@functools.lru_cache(maxsize=4)
def _categories_in(folder: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for path in sorted(Path(folder).glob("mmlu_*.yaml")):
        data = read_task_yaml(path)
        subject, tag = data.get("dataset_name"), data.get("tag")
        if isinstance(tag, list):
            tag = tag[0] if tag else None
        if subject and isinstance(tag, str) and tag.startswith("mmlu_"):
            pairs.append((subject, tag[len("mmlu_") :].removesuffix(_CATEGORY_TAG_SUFFIX)))
    return tuple(pairs)
