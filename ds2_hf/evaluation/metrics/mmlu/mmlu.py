"""MMLU accuracy for DS2 evaluation (a local `evaluate` module; no hub fetch)."""

import datasets
import evaluate

from ds2_hf.evaluation import exemplars
from ds2_hf.evaluation import scoring

_DESCRIPTION = """
MMLU accuracy from either a generated answer naming a letter ("B", "(B)", "The answer is (B).") or
per-choice scores such as log-likelihoods of " A".." D" (argmax; ties split evenly). Reports the
micro accuracy, the mean over subjects, and per-subject and per-category accuracy. Percentages.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers (str) or list of per-choice scores (list of float).
    references: list of gold choice indices (int, 0 = A), the hub's ``answer`` column.
    subjects: optional list of each question's subject (the hub's ``subject`` column).
    categories: optional dict subject -> category; defaults to the categories lm-eval's MMLU task
        files assign (stem, humanities, social_sciences, other) when lm-eval is installed.
Returns:
    accuracy (micro), macro_accuracy (mean over subjects), per_subject, per_category.
Examples:
    >>> import evaluate, ds2_hf.evaluation as ev
    >>> mmlu = evaluate.load(ev.metric_path("mmlu"))
    >>> mmlu.compute(predictions=[[-1.0, -0.5, -3.0, -2.0]], references=[1], subjects=["anatomy"])["accuracy"]
    100.0
"""

_CITATION = """
@article{hendrycks2021measuring, title={Measuring Massive Multitask Language Understanding},
  author={Hendrycks, Dan and others}, journal={ICLR}, year={2021}}
"""


class Mmlu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("int64")}
                ),
                datasets.Features(
                    {
                        "predictions": datasets.List(datasets.Value("float64")),
                        "references": datasets.Value("int64"),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, subjects=None, categories=None):
        if categories is None and subjects is not None:
            categories = exemplars.mmlu_categories(missing_ok=True)
        return scoring.mmlu_scores(predictions, references, subjects=subjects, categories=categories)
