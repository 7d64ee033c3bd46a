"""BIG-Bench Hard exact match for DS2 evaluation (a local `evaluate` module; no hub fetch)."""

import datasets
import evaluate

from ds2_hf.evaluation import scoring

_DESCRIPTION = """
BBH exact match as in the DS2 paper's protocol: the answer is the text after the first
"the answer is" up to the sentence's period (any case), else the whole stripped output; it must
equal the target exactly. ``exact_match`` is the macro mean of per-task exact match. Percentages.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model outputs (str).
    references: list of targets, e.g. "(A)", "Yes", "valid".
    tasks: optional list naming each example's BBH task; without it everything is one task.
Returns:
    exact_match: macro mean over tasks; micro_exact_match: over all examples; per_task: dict.
Examples:
    >>> import evaluate, ds2_hf.evaluation as ev
    >>> bbh = evaluate.load(ev.metric_path("bbh"))
    >>> bbh.compute(predictions=["So the answer is (B)."], references=["(B)"], tasks=["snarks"])["exact_match"]
    100.0
"""

_CITATION = """
@article{suzgun2022challenging, title={Challenging BIG-Bench Tasks and Whether Chain-of-Thought Can Solve Them},
  author={Suzgun, Mirac and others}, journal={arXiv preprint arXiv:2210.09261}, year={2022}}
"""


class Bbh(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, tasks=None):
        return scoring.bbh_scores(predictions, references, tasks=tasks)
