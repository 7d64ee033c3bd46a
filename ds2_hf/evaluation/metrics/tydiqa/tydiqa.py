"""TydiQA GoldP SQuAD-style F1 / exact match for DS2 evaluation (a local `evaluate` module; no hub fetch)."""

import datasets
import evaluate

from ds2_hf.evaluation import scoring

_DESCRIPTION = """
TydiQA GoldP scored like SQuAD: F1 over whitespace tokens and exact match after normalisation
(NFKC, lower case, Unicode punctuation removed, English articles removed for English), best over
the gold answers, averaged per language and then over languages. Percentages.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of answers (str).
    references: list of lists of gold answer strings (the hub's ``answers["text"]``).
    languages: optional list naming each example's language (e.g. "arabic").
Returns:
    f1, exact_match: means over languages; per_language: {language: {f1, exact_match, n}}.
Examples:
    >>> import evaluate, ds2_hf.evaluation as ev
    >>> tydi = evaluate.load(ev.metric_path("tydiqa"))
    >>> tydi.compute(predictions=["Москва"], references=[["Москва"]], languages=["russian"])["f1"]
    100.0
"""

_CITATION = """
@article{clark2020tydi, title={TyDi QA: A Benchmark for Information-Seeking Question Answering in Typologically
  Diverse Languages}, author={Clark, Jonathan H. and others}, journal={TACL}, year={2020}}
"""


class Tydiqa(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references, languages=None):
        return scoring.tydiqa_scores(predictions, references, languages=languages)
