"""Loading the five evaluation sets: hub ids by default, local copies in the same schema, or BIG-bench.

Every loader takes a ``source``:

- a hub dataset id (the default): ``cais/mmlu``, ``openai/gsm8k``, ``SaylorTwift/bbh``,
  ``google-research-datasets/tydiqa``, ``truthfulqa/truthful_qa``;
- a local file or folder in the hub's schema. A folder holds one file per split named after the split
  (``test.jsonl``, ``dev.parquet``, ``validation.json``, ``train-00000-of-00001.parquet``...),
  directly or in a sub-folder named like the hub config (a hub snapshot works as is). A single file
  is the evaluated split. BBH folders hold one file per task (``causal_judgement.json``, as in the
  BBH release, or ``causal_judgement/test.parquet``);
- ``"bigbench"`` for BBH and TruthfulQA: the BIG-bench source tasks from the ``bigbench`` sdist
  (see ``ds2_hf.evaluation.bigbench``).

Offline, a hub id fails with an error that names the local files to provide instead.

    >>> from ds2_hf.evaluation.data import load_split
    >>> test = load_split("tests/fixtures/eval/gsm8k", task="gsm8k", split="test")
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BIGBENCH = "bigbench"

HUB_DEFAULTS: dict[str, str] = {
    "mmlu": "cais/mmlu",
    "gsm8k": "openai/gsm8k",
    # lukaemon/bbh (the BBH release on the hub) is script-based, which datasets 5 cannot run; this parquet
    # copy (one config per task, split "test", input/target) is the one lm-eval reads.
    "bbh": "SaylorTwift/bbh",
    "tydiqa": "google-research-datasets/tydiqa",
    "truthfulqa": "truthfulqa/truthful_qa",
}

# task -> (hub config, evaluated split, shot split or None)
HUB_LAYOUT: dict[str, tuple[str | None, str, str | None]] = {
    "mmlu": ("all", "test", "dev"),
    "gsm8k": ("main", "test", None),
    "bbh": (None, "test", None),  # the config is the BBH task name
    "tydiqa": ("secondary_task", "validation", "train"),
    "truthfulqa": ("multiple_choice", "validation", None),
}

SCHEMAS: dict[str, str] = {
    "mmlu": "question (str), subject (str), choices (list of 4 str), answer (int 0-3)",
    "gsm8k": "question (str), answer (str ending in '#### <number>')",
    "bbh": "input (str), target (str)",
    "tydiqa": "id (str, starting with the language, e.g. 'arabic-...'), context, question, "
    "answers ({'text': [str], 'answer_start': [int]})",
    "truthfulqa": "question (str), mc1_targets and mc2_targets ({'choices': [str], 'labels': [int]})",
}

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


class EvalDataError(FileNotFoundError):
    """An evaluation set could not be loaded; the message says which file to provide."""


def _is_local(source: str) -> bool:
    path = Path(source).expanduser()
    return path.exists() or source.startswith((".", "/", "~")) or path.suffix in _BUILDERS


def _split_files(folder: Path, split: str) -> list[Path]:
    def matches(p: Path) -> bool:
        stem = p.name[: -len(p.suffix)] if p.suffix else p.name
        return p.suffix in _BUILDERS and (stem == split or stem.startswith((split + "-", split + "_")))

    return sorted(p for p in folder.iterdir() if p.is_file() and matches(p)) if folder.is_dir() else []


def _local_files(root: Path, split: str, config: str | None) -> list[Path]:
    for folder in (root, root / config if config else None, root / "data"):
        if folder is not None:
            files = _split_files(folder, split)
            if files:
                return files
    return []


def _read_files(files: Sequence[Path], split: str) -> Any:
    import datasets

    builder = _BUILDERS[files[0].suffix]
    kwargs: dict[str, Any] = {}
    if files[0].suffix == ".json":
        with open(files[0], encoding="utf-8") as f:
            head = f.read(1).strip() or " "
            if head == "{":
                f.seek(0)
                try:
                    top = json.load(f)
                except json.JSONDecodeError:
                    top = None  # JSON lines with a .json suffix
                if isinstance(top, dict) and isinstance(top.get("examples"), list):
                    kwargs["field"] = "examples"  # the BBH / BIG-bench release layout
    return datasets.load_dataset(builder, data_files={split: [str(f) for f in files]}, split=split, **kwargs)


def _missing_message(task: str, source: str, split: str, config: str | None, cause: str) -> str:
    flag = f"--{task}-path"
    layout = (
        f"a folder with one file per BBH task named <task>.json / <task>.jsonl (columns {SCHEMAS[task]})"
        if task == "bbh"
        else f"a folder with {split}.jsonl (or .json/.parquet/.csv) holding columns {SCHEMAS[task]}"
    )
    extra = " or 'bigbench' for the offline BIG-bench source tasks" if task in ("bbh", "truthfulqa") else ""
    return (
        f"Could not load {task} {split!r} data from {source!r}{f' (config {config!r})' if config else ''}: {cause}. "
        f"If you are offline, provide a local copy in the hub schema and pass its path with {flag} "
        f"(EvalConfig.{task}_path): {layout}{extra}. Setting HF_HUB_OFFLINE=1 skips the network retries."
    )


def load_split(
    source: str,
    *,
    task: str,
    split: str,
    config: str | None = None,
    required: bool = True,
) -> Any:
    """One split of an evaluation set as a ``datasets.Dataset`` (None if absent and not ``required``)."""
    if task not in HUB_LAYOUT:
        raise ValueError(f"Unknown task {task!r}; choose from: {', '.join(HUB_LAYOUT)}")
    hub_config, main_split, _ = HUB_LAYOUT[task]
    config = config if config is not None else hub_config
    if _is_local(source):
        root = Path(source).expanduser()
        if not root.exists():
            raise EvalDataError(_missing_message(task, source, split, config, "no such file or folder"))
        if root.is_file():
            files = [root] if split == main_split else []
        else:
            files = _local_files(root, split, config)
        if not files:
            if not required:
                return None
            raise EvalDataError(_missing_message(task, source, split, config, f"no {split} file in it"))
        return _read_files(files, split)
    import datasets

    try:
        return datasets.load_dataset(source, config, split=split)
    except Exception as err:  # noqa: BLE001 - network, auth and missing-split errors all mean "provide a file"
        if not required and isinstance(err, (ValueError, KeyError)) and "split" in str(err).lower():
            return None
        raise EvalDataError(_missing_message(task, source, split, config, f"{type(err).__name__}: {err}")) from err


def subsample(n_total: int, k: int | None, seed: int) -> list[int]:
    """Sorted indices of ``k`` of ``n_total`` rows drawn with ``random.Random(seed)``; all rows when k is None."""
    if k is None or k >= n_total:
        return list(range(n_total))
    if k < 0:
        raise ValueError(f"A subsample size must be >= 0, got {k}")
    return sorted(random.Random(seed).sample(range(n_total), k))


def _rows(ds: Any, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    if indices is not None:
        ds = ds.select(indices)
    return ds.to_list() if hasattr(ds, "to_list") else list(ds)


def _require_columns(rows: list[dict[str, Any]], task: str, source: str, columns: Sequence[str]) -> None:
    if rows:
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise ValueError(
                f"{task} data from {source!r} lacks columns {missing}; expected the hub schema: {SCHEMAS[task]}. "
                "Rename columns with `ds.rename_column(old, new)` before saving your copy."
            )


# ---------------------------------------------------------------------------------------------


def load_mmlu(
    source: str, *, max_examples: int | None, seed: int, n_shots: int, subjects: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """MMLU test questions (optionally subsampled / filtered by subject) and dev shots per subject."""
    test = load_split(source, task="mmlu", split="test")
    if subjects:
        wanted = set(subjects)
        test = test.filter(lambda s: s in wanted, input_columns="subject")
        if len(test) == 0:
            raise ValueError(f"No MMLU test question has a subject in {sorted(wanted)} in {source!r}.")
    rows = _rows(test, subsample(len(test), max_examples, seed))
    _require_columns(rows, "mmlu", source, ["question", "subject", "choices", "answer"])
    shots: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if n_shots > 0:
        dev = load_split(source, task="mmlu", split="dev")
        for row in _rows(dev):
            if len(shots[row["subject"]]) < n_shots:
                shots[row["subject"]].append(row)
    return rows, dict(shots)


def load_gsm8k(source: str, *, max_examples: int | None, seed: int) -> list[dict[str, Any]]:
    """GSM8K test problems (the paper evaluates 200 drawn with seed 42)."""
    test = load_split(source, task="gsm8k", split="test")
    rows = _rows(test, subsample(len(test), max_examples, seed))
    _require_columns(rows, "gsm8k", source, ["question", "answer"])
    return rows


def _bbh_local(root: Path, task: str) -> Any:
    for candidate in (root / f"{task}.json", root / f"{task}.jsonl", root / f"{task}.parquet"):
        if candidate.is_file():
            return _read_files([candidate], "test")
    files = _local_files(root / task, "test", None) if (root / task).is_dir() else []
    if files:
        return _read_files(files, "test")
    raise EvalDataError(_missing_message("bbh", str(root), "test", task, f"no file for task {task!r} in it"))


def load_bbh(
    source: str,
    tasks: Sequence[str],
    *,
    max_per_task: int | None,
    seed: int,
    prompts_dir: str | os.PathLike | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """BBH test examples per task (the paper evaluates 40 per task drawn with seed 42)."""
    out: dict[str, list[dict[str, Any]]] = {}
    if source == BIGBENCH:
        from ds2_hf.evaluation.bigbench import bbh_examples, bigbench_root

        root = bigbench_root(*tasks)  # one pass over the sdist for every task
        for task in tasks:
            rows = bbh_examples(task, prompts_dir=prompts_dir, root=root)
            out[task] = [rows[i] for i in subsample(len(rows), max_per_task, seed)]
        return out
    for task in tasks:
        if _is_local(source):
            root = Path(source).expanduser()
            if not root.is_dir():
                raise EvalDataError(_missing_message("bbh", source, "test", task, "not a folder"))
            ds = _bbh_local(root, task)
        else:
            ds = load_split(source, task="bbh", split="test", config=task)
        rows = _rows(ds, subsample(len(ds), max_per_task, seed))
        _require_columns(rows, "bbh", source, ["input", "target"])
        out[task] = rows
    return out


def tydiqa_language(row: dict[str, Any]) -> str:
    """The language of a TydiQA row: its ``language`` column, else the prefix of its id (``arabic-...``)."""
    language = row.get("language") or str(row.get("id", "")).split("-")[0]
    if not language:
        raise ValueError(f"TydiQA row has neither a 'language' column nor an id like 'arabic-...': {row!r:.120}")
    return str(language)


def load_tydiqa(
    source: str,
    *,
    max_per_language: int | None,
    seed: int,
    n_shots: int,
    languages: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """TydiQA GoldP dev questions (up to ``max_per_language`` per language) and train shots per language."""
    dev = load_split(source, task="tydiqa", split="validation")
    by_language: dict[str, list[int]] = defaultdict(list)
    ids = dev["id"] if "id" in dev.column_names else [""] * len(dev)
    langs = dev["language"] if "language" in dev.column_names else [i.split("-")[0] for i in ids]
    for index, lang in enumerate(langs):
        if not lang:
            raise ValueError(
                f"TydiQA row {index} in {source!r} has neither a 'language' column nor an id like 'arabic-...'."
            )
        by_language[lang].append(index)
    if languages:
        unknown = sorted(set(languages) - set(by_language))
        if unknown:
            raise ValueError(f"No TydiQA questions in languages {unknown}; {source!r} has {sorted(by_language)}.")
        by_language = {lang: by_language[lang] for lang in languages}
    picked: list[int] = []
    for lang in sorted(by_language):
        indices = by_language[lang]
        picked.extend(indices[i] for i in subsample(len(indices), max_per_language, seed))
    rows = _rows(dev, picked)
    _require_columns(rows, "tydiqa", source, ["context", "question", "answers"])
    for row in rows:
        row["language"] = tydiqa_language(row)
    shots: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if n_shots > 0:
        train = load_split(source, task="tydiqa", split="train", required=False)
        if train is None:
            raise EvalDataError(
                _missing_message("tydiqa", source, "train", "secondary_task", "no train split for the shots")
                + " Or set tydiqa_shots=0."
            )
        train_ids = train["id"] if "id" in train.column_names else [""] * len(train)
        train_langs = train["language"] if "language" in train.column_names else [i.split("-")[0] for i in train_ids]
        wanted = {row["language"] for row in rows}
        chosen = []
        counts: dict[str, int] = defaultdict(int)
        for index, lang in enumerate(train_langs):
            if lang in wanted and counts[lang] < n_shots:
                counts[lang] += 1
                chosen.append(index)
        for row in _rows(train, chosen):
            shots[tydiqa_language(row)].append(row)
        short = sorted(lang for lang in wanted if counts[lang] < n_shots)
        if short:
            raise EvalDataError(
                f"TydiQA train data in {source!r} has fewer than {n_shots} example(s) for {short}; add train rows "
                "for those languages or lower tydiqa_shots."
            )
    return rows, dict(shots)


def load_truthfulqa(source: str, *, max_examples: int | None, seed: int) -> list[dict[str, Any]]:
    """TruthfulQA multiple-choice questions (the paper evaluates all 817)."""
    if source == BIGBENCH:
        from ds2_hf.evaluation.bigbench import truthfulqa_examples

        rows = truthfulqa_examples()
        return [rows[i] for i in subsample(len(rows), max_examples, seed)]
    ds = load_split(source, task="truthfulqa", split="validation")
    rows = _rows(ds, subsample(len(ds), max_examples, seed))
    _require_columns(rows, "truthfulqa", source, ["question", "mc1_targets", "mc2_targets"])
    return rows
