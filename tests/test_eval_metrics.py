"""The five local `evaluate` metric modules on hand-made predictions with hand-computed scores.

Each case lists which prediction is right and why, so a change in an extraction rule shows up as a
changed number here. Traps: negative numbers, "1,234", trailing periods, "The answer is (B).",
empty outputs, Unicode answers, ties in multiple-choice scores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from ds2_hf.evaluation import metric_path, scoring


@pytest.fixture(scope="module")
def load_metric():
    import evaluate

    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = evaluate.load(metric_path(name))
        return cache[name]

    return load


# --------------------------------------------------------------------------------------------- GSM8K


def test_gsm8k_metric_flexible_and_strict(load_metric):
    cases = [
        # (prediction, reference, flexible right?, strict right?)
        ("She has 1,234 apples. The answer is 1,234.", "#### 1234", True, True),  # thousands separator
        ("It drops to -5 degrees. The answer is -5.", "Work...\n#### -5", True, True),  # sign kept
        ("5-3 = 2 so 2 are left. Actually 18.", "#### 18", True, False),  # no "the answer is"
        ("The answer is 7. Then I add 3 more to get 10", "7", False, True),  # last number is 10
        ("", "#### 3", False, False),  # empty output
        ("The answer is 18.00.", "#### 18", True, True),  # value equality, trailing period
        ("Answer: 12", "12", True, False),
        ("He read pages 10-12", "#### 12", True, False),  # a hyphen is not a minus sign
    ]
    preds, refs = [c[0] for c in cases], [c[1] for c in cases]
    result = load_metric("gsm8k").compute(predictions=preds, references=refs)
    assert result == {"exact_match": 75.0, "strict_match": 50.0}
    assert [c[2] for c in cases].count(True) == 6 and [c[3] for c in cases].count(True) == 4


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,234,567 people", "1234567"),
        ("values 3,4", "4"),  # a list, not a thousands separator
        ("it is \u22127 now", "-7"),  # Unicode minus
        ("x = -0.50.", "-0.5"),
        ("costs $1,000.00", "1000"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_gsm8k_last_number_extraction(text, expected):
    assert scoring.gsm8k_extract(text) == expected


def test_gsm8k_reference_without_number_is_a_clear_error():
    with pytest.raises(ValueError, match="#### <number>"):
        scoring.gsm8k_scores(["1"], ["no number in this reference"])


# --------------------------------------------------------------------------------------------- BBH


def test_bbh_metric_per_task_and_macro(load_metric):
    cases = [
        ("Let's think. So the answer is (B).", "(B)", "t1", True),
        ("The answer is (B).", "(B)", "t1", True),  # capital "The"
        ("So the answer is (A). But the answer is (B).", "(B)", "t1", False),  # the first match counts
        ("Step by step: the answer is 3.5.", "3.5", "t2", True),  # a decimal point is not the period
        ("", "Yes", "t2", False),  # empty output
        ("Yes", "Yes", "t2", True),  # no phrase: the whole stripped output
        ("no answer here", "No", "t2", False),
    ]
    result = load_metric("bbh").compute(
        predictions=[c[0] for c in cases], references=[c[1] for c in cases], tasks=[c[2] for c in cases]
    )
    assert result["per_task"] == pytest.approx({"t1": 200 / 3, "t2": 50.0})
    assert result["exact_match"] == pytest.approx((200 / 3 + 50.0) / 2)  # macro over tasks
    assert result["micro_exact_match"] == pytest.approx(400 / 7)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("So the answer is Yes.", "Yes"),
        ("so THE ANSWER IS valid.", "valid"),
        ("So the answer is yes", "yes"),  # no final period at the end of the output
        ("So the answer is (C)\nQ: next question", "(C)"),
        ("   (A)  ", "(A)"),
        ("the answer is ] } ].", "] } ]"),
    ],
)
def test_bbh_extraction(text, expected):
    assert scoring.bbh_extract(text) == expected


# --------------------------------------------------------------------------------------------- MMLU


def test_mmlu_metric_from_letters_with_subjects_and_categories(load_metric):
    preds = ["B", "(C)", "The answer is (D).", "", "Paris", " a"]
    refs = [1, 2, 3, 0, 0, 0]  # right, right, right, empty, no letter, lower-case is not a letter
    subjects = ["astronomy", "astronomy", "anatomy", "anatomy", "anatomy", "virology"]
    result = load_metric("mmlu").compute(predictions=preds, references=refs, subjects=subjects)
    assert result["accuracy"] == 50.0
    assert result["per_subject"] == pytest.approx({"anatomy": 100 / 3, "astronomy": 100.0, "virology": 0.0})
    assert result["macro_accuracy"] == pytest.approx((100 / 3 + 100.0 + 0.0) / 3)
    # lm-eval tags astronomy and anatomy as STEM and virology as "other".
    assert result["per_category"] == pytest.approx({"stem": 60.0, "other": 0.0})  # 3 of 5 STEM right


def test_mmlu_metric_from_loglikelihoods_splits_ties(load_metric):
    preds = [
        [-1.0, -2.0, -3.0, -4.0],  # answer A is the argmax -> 1
        [-1.0, -1.0, -5.0, -5.0],  # answer B tied with A -> 1/2
        [-2.0, -1.0, -1.0, -1.0],  # answer A below a three-way tie -> 0
        [float("nan"), -3.0, -2.0, -9.0],  # NaN ranks lowest; answer C -> 1
    ]
    result = load_metric("mmlu").compute(predictions=preds, references=[0, 1, 0, 2])
    assert result["accuracy"] == pytest.approx(62.5)


def test_choice_letter_extraction():
    assert scoring.extract_choice_letter("B. Paris") == "B"
    assert scoring.extract_choice_letter("(D)") == "D"
    assert scoring.extract_choice_letter("E", n_choices=4) is None  # not an option
    assert scoring.extract_choice_letter("Because it is obvious") is None


# --------------------------------------------------------------------------------------------- TydiQA


def test_tydiqa_metric_per_language_with_unicode(load_metric):
    cases = [
        ("english", "the Atlantic Ocean.", ["Atlantic Ocean"]),  # article + period normalised: EM
        ("english", "Atlantic", ["the Atlantic Ocean"]),  # P=1, R=1/2: F1 2/3
        ("russian", "«Москва»", ["Москва"]),  # Unicode quotes are punctuation: EM
        ("russian", "город Москва", ["Москва"]),  # P=1/2, R=1: F1 2/3
        ("korean", "", ["서울"]),  # empty output
        ("arabic", "القاهرة", ["مدينة القاهرة", "القاهرة"]),  # best gold answer counts
    ]
    result = load_metric("tydiqa").compute(
        predictions=[c[1] for c in cases], references=[c[2] for c in cases], languages=[c[0] for c in cases]
    )
    per = result["per_language"]
    assert per["english"]["f1"] == pytest.approx((100 + 200 / 3) / 2) and per["english"]["exact_match"] == 50.0
    assert per["russian"]["f1"] == pytest.approx((100 + 200 / 3) / 2) and per["russian"]["exact_match"] == 50.0
    assert per["korean"] == {"f1": 0.0, "exact_match": 0.0, "n": 1}
    assert per["arabic"] == {"f1": 100.0, "exact_match": 100.0, "n": 1}
    assert result["f1"] == pytest.approx((250 / 3 + 250 / 3 + 0 + 100) / 4)  # mean over languages
    assert result["exact_match"] == pytest.approx(50.0)


def test_normalisation_is_language_aware():
    assert scoring.normalize_answer("The cat", "english") == "cat"
    assert scoring.normalize_answer("a bata", "swahili") == "a bata"  # English articles only for English
    assert scoring.normalize_answer("ＡＢＣ！", "finnish") == "abc"  # NFKC folds full-width forms
    assert scoring.squad_f1("বাংলাদেশের রাজধানী ঢাকা", ["ঢাকা"], "bengali") == pytest.approx(50.0)


# --------------------------------------------------------------------------------------------- TruthfulQA


def test_truthfulqa_metric_mc1_mc2(load_metric):
    preds = [
        {"mc1": [-1.0, -2.0, -3.0], "mc2": [math.log(0.5), math.log(0.3), math.log(0.2)]},
        {"mc1": [-1.0, -1.0], "mc2": [0.0, 0.0, 0.0, 0.0]},  # MC1 tie: half credit
    ]
    refs = [{"mc1": [1, 0, 0], "mc2": [1, 1, 0]}, {"mc1": [1, 0], "mc2": [1, 0, 0, 0]}]
    result = load_metric("truthfulqa").compute(predictions=preds, references=refs)
    assert result["mc1"] == pytest.approx(75.0)
    assert result["mc2"] == pytest.approx((80.0 + 25.0) / 2)


def test_mc2_is_stable_for_very_negative_loglikelihoods():
    assert scoring.true_mass([-1000.0, -1001.0], [1, 0]) == pytest.approx(1 / (1 + math.exp(-1)))
    with pytest.raises(ValueError, match="-inf"):
        scoring.true_mass([float("-inf"), float("nan")], [1, 0])


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        scoring.gsm8k_scores(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="3 mc1 scores but 2 mc1 labels"):
        scoring.truthfulqa_scores([{"mc1": [0, 0, 0], "mc2": [0]}], [{"mc1": [1, 0], "mc2": [1]}])


# --------------------------------------------------------------------------------------------- offline loading


def test_all_metrics_load_by_path_with_evaluate_offline(tmp_path):
    """A fresh process with HF_EVALUATE_OFFLINE=1 (and no hub) loads every module from its folder."""
    script = """
import json, evaluate
from ds2_hf.evaluation import metric_path
load = lambda name: evaluate.load(metric_path(name))
out = {}
out["gsm8k"] = load("gsm8k").compute(predictions=["The answer is 1,234."], references=["#### 1234"])
out["bbh"] = load("bbh").compute(predictions=["So the answer is (A)."], references=["(A)"])["exact_match"]
out["mmlu"] = load("mmlu").compute(predictions=["C"], references=[2])["accuracy"]
out["tydiqa"] = load("tydiqa").compute(predictions=["서울"], references=[["서울"]], languages=["korean"])["f1"]
out["truthfulqa"] = load("truthfulqa").compute(
    predictions=[{"mc1": [0.0, -1.0], "mc2": [0.0, -1.0]}], references=[{"mc1": [1, 0], "mc2": [0, 1]}])["mc1"]
print(json.dumps(out))
"""
    env = dict(os.environ, HF_EVALUATE_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")  # a cold module cache: nothing pre-copied
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "gsm8k": {"exact_match": 100.0, "strict_match": 100.0},
        "bbh": 100.0,
        "mmlu": 100.0,
        "tydiqa": 100.0,
        "truthfulqa": 100.0,
    }
