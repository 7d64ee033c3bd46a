"""Real instruction-tuning samples for the offline demo: BIG-bench's ``natural_instructions`` tasks.

The ``bigbench`` sdist on PyPI (Apache-2.0) ships 61 Natural Instructions sub-tasks (about 193k
examples); `ds2_hf.assets.bigbench_tasks` downloads it once and extracts only that folder. Each
example becomes an Alpaca row: the sub-task's prompt as ``instruction``, the example's input as
``input``, its first reference answer as ``output``, and the sub-task name as ``source``.

    >>> ds = natural_instructions(200, seed=0)
    >>> ds.column_names
    ['id', 'source', 'instruction', 'input', 'output']

BIG-bench asks that its data never appear in training corpora (its canary string): use these rows
to exercise data selection, not to train a model you release.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any


def _instruction(task: dict[str, Any]) -> str:
    prefix = str(task.get("task_prefix") or task.get("description") or "")
    # "Definition: ... Prompt: <the one-line instruction>" -> the prompt; the definition is long.
    prompt = prefix.rsplit("Prompt:", 1)[-1].strip()
    return prompt or prefix.strip()


def natural_instructions(
    n: int = 200,
    *,
    seed: int = 0,
    max_input_chars: int = 600,
    tasks_root: str | Path | None = None,
) -> Any:
    """``n`` examples drawn evenly across the Natural Instructions sub-tasks, as a `datasets.Dataset`.

    Examples whose input is longer than ``max_input_chars`` are skipped (they make rating slow
    on a CPU). The same ``seed`` gives the same rows.
    """
    import datasets

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if tasks_root is None:
        from ds2_hf.assets import bigbench_tasks

        tasks_root = bigbench_tasks("natural_instructions")
    root = Path(tasks_root) / "natural_instructions"
    task_dirs = sorted(p for p in root.iterdir() if (p / "task.json").is_file())
    if not task_dirs:
        raise FileNotFoundError(f"No Natural Instructions sub-tasks under {root}")
    rng = random.Random(seed)
    per_task = -(-n // len(task_dirs))
    rows: list[dict[str, Any]] = []
    for task_dir in task_dirs:
        task = json.loads((task_dir / "task.json").read_text(encoding="utf-8"))
        instruction = _instruction(task)
        usable = [i for i, ex in enumerate(task.get("examples", [])) if len(str(ex.get("input", ""))) <= max_input_chars]
        for i in sorted(rng.sample(usable, min(per_task, len(usable)))):
            ex = task["examples"][i]
            target = ex.get("target")
            if isinstance(target, list):
                target = target[0] if target else ""
            if target is None and "target_scores" in ex:  # multiple choice: the best-scored option
                target = max(ex["target_scores"], key=ex["target_scores"].get)
            rows.append({"id": f"{task_dir.name}/{i}", "source": task_dir.name, "instruction": instruction,
                         "input": str(ex.get("input", "")), "output": str(target or "")})
    rng.shuffle(rows)
    return datasets.Dataset.from_list(rows[:n])
