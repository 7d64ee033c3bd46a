"""TruthfulQA MC1 / MC2 for DS2 evaluation (a local `evaluate` module; no hub fetch)."""

import datasets
import evaluate

from ds2_hf.evaluation import scoring

_DESCRIPTION = """
TruthfulQA multiple-choice scores from per-answer log-likelihoods: MC1 is the accuracy of picking the
single true answer among the mc1 choices (ties split evenly); MC2 is the normalised probability mass
on the true answers among the mc2 choices. Percentages.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"mc1": [log-likelihood per mc1 choice], "mc2": [log-likelihood per mc2 choice]}.
    references: list of {"mc1": [label per mc1 choice], "mc2": [label per mc2 choice]}, 1 = true
        (the hub's mc1_targets["labels"] and mc2_targets["labels"]).
Returns:
    mc1, mc2.
Examples:
    >>> import evaluate, ds2_hf.evaluation as ev
    >>> tqa = evaluate.load(ev.metric_path("truthfulqa"))
    >>> tqa.compute(predictions=[{"mc1": [-1.0, -2.0], "mc2": [-1.0, -1.0]}],
    ...             references=[{"mc1": [1, 0], "mc2": [1, 0]}])
    {'mc1': 100.0, 'mc2': 50.0}
"""

_CITATION = """
@article{lin2021truthfulqa, title={TruthfulQA: Measuring How Models Mimic Human Falsehoods},
  author={Lin, Stephanie and Hilton, Jacob and Evans, Owain}, journal={arXiv preprint arXiv:2109.07958}, year={2021}}
"""


class Truthfulqa(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "mc1": datasets.List(datasets.Value("float64")),
                        "mc2": datasets.List(datasets.Value("float64")),
                    },
                    "references": {
                        "mc1": datasets.List(datasets.Value("int64")),
                        "mc2": datasets.List(datasets.Value("int64")),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        return scoring.truthfulqa_scores(predictions, references)
