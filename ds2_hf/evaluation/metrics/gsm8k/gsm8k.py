"""GSM8K exact match for DS2 evaluation (a local `evaluate` module; no hub fetch)."""

import datasets
import evaluate

from ds2_hf.evaluation import scoring

_DESCRIPTION = """
GSM8K exact match as in the DS2 paper's protocol: thousands separators are stripped, the last number
in the output (sign kept) is the answer and must equal the gold number. ``strict_match`` instead
takes the number after "the answer is". Scores are percentages.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model outputs (str).
    references: list of gold answers: the dataset's ``answer`` field ("... #### 72") or the number.
Returns:
    exact_match: percent of outputs whose last number equals the gold number.
    strict_match: percent whose "the answer is N" number equals it.
Examples:
    >>> import evaluate, ds2_hf.evaluation as ev
    >>> gsm = evaluate.load(ev.metric_path("gsm8k"))
    >>> gsm.compute(predictions=["5 + 7 = 12. The answer is 12."], references=["... #### 12"])
    {'exact_match': 100.0, 'strict_match': 100.0}
"""

_CITATION = """
@article{cobbe2021gsm8k, title={Training Verifiers to Solve Math Word Problems},
  author={Cobbe, Karl and others}, journal={arXiv preprint arXiv:2110.14168}, year={2021}}
"""


class Gsm8k(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return scoring.gsm8k_scores(predictions, references)
