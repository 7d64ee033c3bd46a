"""Evaluation the DS2 way: MMLU, GSM8K, BBH, TydiQA and TruthfulQA with the paper's protocol.

    >>> import evaluate, ds2_hf.evaluation as ev
    >>> gsm = evaluate.load(ev.metric_path("gsm8k"))      # a local module: no hub fetch
    >>> gsm.compute(predictions=["6 * 7 = 42. The answer is 42."], references=["#### 42"])
    {'exact_match': 100.0, 'strict_match': 100.0}
    >>> result = ev.evaluate_model(ev.EvalConfig(model="./my-model", output="results.json"))

Modules: ``scoring`` (answer extraction and scores, shared by the metrics and the harness),
``metrics/<task>/<task>.py`` (``evaluate`` modules), ``exemplars`` (few-shot exemplars read from
lm-eval's task files), ``bigbench`` (offline BBH/TruthfulQA from BIG-bench), ``data`` (hub or local
evaluation sets), ``prompts``, ``backends`` (transformers / server) and ``harness`` (``EvalConfig``,
``evaluate_model``, the ``ds2 eval`` entry point).
"""

from __future__ import annotations

from pathlib import Path

from ds2_hf._lazy import lazy_exports

METRICS = ("mmlu", "gsm8k", "bbh", "tydiqa", "truthfulqa")

_LAZY = {
    "EvalConfig": "ds2_hf.evaluation.harness",
    "evaluate_model": "ds2_hf.evaluation.harness",
    "format_table": "ds2_hf.evaluation.harness",
    "TASKS": "ds2_hf.evaluation.harness",
    "TransformersBackend": "ds2_hf.evaluation.backends",
    "ServerBackend": "ds2_hf.evaluation.backends",
}


def metric_path(name: str) -> str:
    """Folder of the local ``evaluate`` metric module for ``name``: ``evaluate.load(metric_path("gsm8k"))``."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; choose from: {', '.join(METRICS)}")
    return str(Path(__file__).parent / "metrics" / name)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = ["METRICS", "metric_path", *sorted(_LAZY)]
