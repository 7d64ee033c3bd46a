"""Answer extraction, normalisation and scoring for the five DS2 evaluation tasks.

This is the one place these rules live: the ``evaluate`` metric scripts under
``ds2_hf/evaluation/metrics/`` and the harness both call it, so a score computed by
``evaluate.load(metric_path("gsm8k")).compute(...)`` and one in a ``ds2 eval`` result are the same
number. Every score is a percentage in [0, 100].

    >>> from ds2_hf.evaluation.scoring import gsm8k_extract, bbh_extract, squad_f1
    >>> gsm8k_extract("She pays 1,234 - 34 = 1,200 dollars.")
    '1200'
    >>> bbh_extract("Let's see. So the answer is (B).")
    '(B)'
    >>> round(squad_f1("the Nile river", ["Nile"]), 2)
    66.67

Decisions where the paper's protocol (open-instruct's scripts) is ambiguous or brittle:

- GSM8K: thousands separators are commas followed by exactly three digits ("1,234" -> 1234, but
  "3,4" stays two numbers); a minus sign counts only when it is not a hyphen between word
  characters ("5-3" -> 3, "-3" -> -3); numbers compare by value ("18.00" == "18").
- BBH: the "the answer is X." search ignores case ("The answer is (B)." -> "(B)"), the final period
  must end a sentence (so "the answer is 3.5." -> "3.5"), and a missing period at the end of a line
  is tolerated; without a match the whole stripped output is the answer, as in the paper.
- Multiple choice from scores: ties are split evenly (a correct answer tied with one wrong answer
  earns 0.5), i.e. the expected accuracy under a random tie-break. NaN scores rank lowest.
- TydiQA: SQuAD normalisation with Unicode punctuation, English articles removed only for English.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

# ---------------------------------------------------------------------------------------------
# GSM8K


_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})
# A comma between digits that is followed by exactly three digits is a thousands separator.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_STRICT = re.compile(r"the answer is\s*:?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def canonical_number(text: str) -> str | None:
    """Canonical string of a decimal number: ``"1,234.50" -> "1234.5"``, ``"-0" -> "0"``; None if not a number."""
    cleaned = _THOUSANDS.sub("", text.translate(_MINUS_SIGNS).strip().lstrip("$").strip())
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    if value == 0:
        return "0"
    return format(value, "f")


def _numbers(text: str) -> list[str]:
    text = _THOUSANDS.sub("", text.translate(_MINUS_SIGNS))
    found = []
    for match in _NUMBER.finditer(text):
        number = match.group()
        # "5-3" is a hyphen between operands, not a negative three.
        if number.startswith("-") and match.start() > 0 and text[match.start() - 1].isalnum():
            number = number[1:]
        found.append(number)
    return found


def gsm8k_extract(text: str) -> str | None:
    """The last number in a model output (the paper's rule), canonicalised; None when there is none.

    >>> gsm8k_extract("The answer is -7.")
    '-7'
    """
    numbers = _numbers(text or "")
    return canonical_number(numbers[-1]) if numbers else None


def gsm8k_extract_strict(text: str) -> str | None:
    """The number right after the first "the answer is" (any case); None when that phrase is absent.

    >>> gsm8k_extract_strict("So 3 + 4 = 7. The answer is 7.")
    '7'
    """
    match = _STRICT.search(text or "")
    return canonical_number(match.group(1).rstrip(",")) if match else None


def gsm8k_reference(reference: str) -> str:
    """The gold number from a GSM8K ``answer`` field (text after ``####``) or from a bare number."""
    tail = reference.split("####")[-1]
    number = canonical_number(tail)
    if number is None:
        number = gsm8k_extract(tail)
    if number is None:
        raise ValueError(
            f"GSM8K reference {reference[-80:]!r} holds no number; pass the dataset's 'answer' field "
            "(ending in '#### <number>') or the number itself."
        )
    return number


def gsm8k_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Exact match of the last number (``exact_match``) and of the "the answer is N" number (``strict_match``)."""
    _check_lengths(predictions, references)
    gold = [gsm8k_reference(r) for r in references]
    flexible = [gsm8k_extract(p) == g for p, g in zip(predictions, gold)]
    strict = [gsm8k_extract_strict(p) == g for p, g in zip(predictions, gold)]
    return {"exact_match": _percent(flexible), "strict_match": _percent(strict)}


# ---------------------------------------------------------------------------------------------
# BBH

# Non-greedy up to the first sentence-ending period (or the end of the line).
_BBH_ANSWER = re.compile(r"the answer is\s+(.*?)(?:\.(?=\s|$)|$)", re.IGNORECASE | re.MULTILINE)


def bbh_extract(text: str) -> str:
    """The span after the first "the answer is" up to the sentence's period; else the whole stripped output.

    >>> bbh_extract("The answer is (B).")
    '(B)'
    >>> bbh_extract("  valid ")
    'valid'
    """
    text = text or ""
    match = _BBH_ANSWER.search(text)
    return match.group(1).strip() if match else text.strip()


def bbh_scores(
    predictions: Sequence[str], references: Sequence[str], tasks: Sequence[str] | None = None
) -> dict[str, Any]:
    """Exact match of the extracted answer per task; ``exact_match`` is the macro mean over tasks."""
    _check_lengths(predictions, references)
    tasks = list(tasks) if tasks is not None else ["bbh"] * len(predictions)
    _check_lengths(predictions, tasks, "tasks")
    hits: dict[str, list[bool]] = defaultdict(list)
    for pred, ref, task in zip(predictions, references, tasks):
        hits[task].append(bbh_extract(pred) == ref.strip())
    per_task = {task: _percent(values) for task, values in sorted(hits.items())}
    return {
        "exact_match": _mean(per_task.values()),
        "micro_exact_match": _percent([h for values in hits.values() for h in values]),
        "per_task": per_task,
    }


# ---------------------------------------------------------------------------------------------
# Multiple choice (MMLU, TruthfulQA)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LEADING_LETTER = re.compile(r"^\(?([A-Z])\)?(?=$|[\s.:,;)])")


def extract_choice_letter(text: str, n_choices: int = 4) -> str | None:
    """The option letter a generated answer names: ``"B"``, ``"(B)"``, ``"B. Paris"``, ``"The answer is (B)."``.

    Returns None for anything else (an empty output, a bare option text), which then scores as wrong.

    >>> extract_choice_letter("The answer is (C).")
    'C'
    """
    candidate = bbh_extract(text or "")
    match = _LEADING_LETTER.match(candidate)
    if match and match.group(1) in LETTERS[:n_choices]:
        return match.group(1)
    return None


def _clean_scores(scores: Sequence[float]) -> list[float]:
    values = [float(s) for s in scores]
    if not values:
        raise ValueError("Got an empty list of choice scores; every question needs one score per choice.")
    return [-math.inf if math.isnan(v) else v for v in values]


def argmax_credit(scores: Sequence[float], correct: Iterable[int]) -> float:
    """Credit in [0, 1] for picking the top-scored choice, ties split evenly.

    >>> argmax_credit([-1.0, -1.0, -3.0], correct=[0])
    0.5
    """
    values = _clean_scores(scores)
    best = max(values)
    tied = [i for i, v in enumerate(values) if v == best]
    correct = set(correct)
    return sum(i in correct for i in tied) / len(tied)


def true_mass(log_likelihoods: Sequence[float], labels: Sequence[int]) -> float:
    """Normalised probability mass on the true answers (TruthfulQA MC2), computed stably in log space."""
    values = _clean_scores(log_likelihoods)
    if len(values) != len(labels):
        raise ValueError(f"Got {len(values)} scores but {len(labels)} labels for one question.")
    top = max(values)
    if top == -math.inf:
        raise ValueError("Every choice has log-likelihood -inf (or NaN); cannot normalise probabilities.")
    weights = [math.exp(v - top) for v in values]
    return sum(w for w, label in zip(weights, labels) if label) / sum(weights)


def mmlu_scores(
    predictions: Sequence[str | Sequence[float]],
    references: Sequence[int],
    subjects: Sequence[str] | None = None,
    categories: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """MMLU accuracy from predicted letters or per-choice scores (log-likelihoods), micro and per subject/category.

    ``categories`` maps a subject to its category (stem, humanities, social_sciences, other); subjects
    it does not list are grouped under ``"other"``.
    """
    _check_lengths(predictions, references)
    subjects = list(subjects) if subjects is not None else ["all"] * len(predictions)
    _check_lengths(predictions, subjects, "subjects")
    credits = []
    for pred, ref in zip(predictions, references):
        answer = int(ref)
        if isinstance(pred, str):
            letter = extract_choice_letter(pred, n_choices=max(4, answer + 1))
            credits.append(float(letter is not None and LETTERS.index(letter) == answer))
        else:
            credits.append(argmax_credit(pred, [answer]))
    by_subject: dict[str, list[float]] = defaultdict(list)
    by_category: dict[str, list[float]] = defaultdict(list)
    for credit, subject in zip(credits, subjects):
        by_subject[subject].append(credit)
        if categories is not None:
            by_category[categories.get(subject, "other")].append(credit)
    per_subject = {s: _percent(v) for s, v in sorted(by_subject.items())}
    result: dict[str, Any] = {
        "accuracy": _percent(credits),
        "macro_accuracy": _mean(per_subject.values()),
        "per_subject": per_subject,
    }
    if categories is not None:
        result["per_category"] = {c: _percent(v) for c, v in sorted(by_category.items())}
    return result


def truthfulqa_scores(
    predictions: Sequence[Mapping[str, Sequence[float]]], references: Sequence[Mapping[str, Sequence[int]]]
) -> dict[str, float]:
    """TruthfulQA MC1 (top-scored of the ``mc1`` choices is the true one) and MC2 (true mass over ``mc2`` choices).

    Each prediction is ``{"mc1": [log-likelihood per mc1 choice], "mc2": [...]}``; each reference is
    ``{"mc1": [label per choice], "mc2": [...]}`` with 1 for a true answer (the hub's
    ``mc1_targets["labels"]`` / ``mc2_targets["labels"]``).
    """
    _check_lengths(predictions, references)
    mc1, mc2 = [], []
    for pred, ref in zip(predictions, references):
        labels1 = list(ref["mc1"])
        if len(pred["mc1"]) != len(labels1):
            raise ValueError(f"Got {len(pred['mc1'])} mc1 scores but {len(labels1)} mc1 labels for one question.")
        mc1.append(argmax_credit(pred["mc1"], [i for i, label in enumerate(labels1) if label]))
        mc2.append(true_mass(pred["mc2"], list(ref["mc2"])))
    return {"mc1": _percent(mc1), "mc2": _percent(mc2)}


# ---------------------------------------------------------------------------------------------
# TydiQA (SQuAD-style F1 / exact match)

_ENGLISH_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_answer(text: str, language: str | None = None) -> str:
    """SQuAD normalisation made Unicode-aware: NFKC, lower case, punctuation removed, collapsed spaces.

    English articles are removed for English (and when the language is unknown), as SQuAD does.

    >>> normalize_answer("«Москва»!", "russian")
    'москва'
    """
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(ch for ch in text if not _is_punctuation(ch))
    if language in (None, "", "english", "en"):
        text = _ENGLISH_ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = prediction.split(), gold.split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, answers: Sequence[str], language: str | None = None) -> float:
    """Token F1 (percent) of a prediction against its best-matching gold answer."""
    if not answers:
        raise ValueError("A TydiQA reference needs at least one gold answer.")
    pred = normalize_answer(prediction, language)
    return 100.0 * max(_f1(pred, normalize_answer(a, language)) for a in answers)


def squad_exact_match(prediction: str, answers: Sequence[str], language: str | None = None) -> float:
    """100 if the normalised prediction equals a normalised gold answer, else 0."""
    if not answers:
        raise ValueError("A TydiQA reference needs at least one gold answer.")
    pred = normalize_answer(prediction, language)
    return 100.0 * any(pred == normalize_answer(a, language) for a in answers)


def tydiqa_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], languages: Sequence[str] | None = None
) -> dict[str, Any]:
    """SQuAD F1 and exact match per language; ``f1`` / ``exact_match`` are means over languages."""
    _check_lengths(predictions, references)
    languages = list(languages) if languages is not None else [None] * len(predictions)
    _check_lengths(predictions, languages, "languages")
    f1s: dict[Any, list[float]] = defaultdict(list)
    ems: dict[Any, list[float]] = defaultdict(list)
    for pred, answers, lang in zip(predictions, references, languages):
        f1s[lang].append(squad_f1(pred, list(answers), lang))
        ems[lang].append(squad_exact_match(pred, list(answers), lang))
    per_language = {
        str(lang): {"f1": _mean(f1s[lang]), "exact_match": _mean(ems[lang]), "n": len(f1s[lang])}
        for lang in sorted(f1s, key=str)
    }
    return {
        "f1": _mean(v["f1"] for v in per_language.values()),
        "exact_match": _mean(v["exact_match"] for v in per_language.values()),
        "per_language": per_language,
    }


# ---------------------------------------------------------------------------------------------


def _check_lengths(predictions: Sequence[Any], other: Sequence[Any], name: str = "references") -> None:
    if len(predictions) != len(other):
        raise ValueError(f"Got {len(predictions)} predictions but {len(other)} {name}; pass one per prediction.")


def _percent(values: Iterable[float]) -> float:
    values = [float(v) for v in values]
    return 100.0 * sum(values) / len(values) if values else float("nan")


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
