"""Prompt builders for the DS2 evaluation protocol: plain few-shot text, no chat template.

| task | prompt |
|---|---|
| MMLU | subject header, ``n`` dev shots, question, lettered choices, ``Answer:``; scored on " A".." D" |
| GSM8K | ``n`` chain-of-thought exemplars (``Q: ...\\nA: ... The answer is N.``), then the question |
| BBH | task description, ``n`` chain-of-thought exemplars, then ``Q: ...\\nA: Let's think step by step.`` |
| TydiQA | per-language instruction, ``n`` gold-passage examples of that language, passage, question |
| TruthfulQA | the 6-shot QA primer, ``Q: ...\\nA:``; scored on " " + each answer |

Formats and exemplars of MMLU, GSM8K, BBH and TruthfulQA come from lm-eval's task files (see
``ds2_hf.evaluation.exemplars``); the TydiQA wording is ours (``tydiqa_templates.json``).

    >>> from ds2_hf.evaluation.prompts import gsm8k_prompt
    >>> gsm8k_prompt({"question": "What is 2 + 2?"}, n_shots=8).endswith("Q: What is 2 + 2?\\nA:")
    True
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ds2_hf.evaluation import exemplars

logger = logging.getLogger(__name__)

TYDIQA_TEMPLATES = Path(__file__).with_name("tydiqa_templates.json")
_TEMPLATE_KEYS = ("instruction", "passage", "question", "answer")


def mmlu_prompt(
    row: dict[str, Any], shots: Sequence[dict[str, Any]] = (), prompts_dir: str | os.PathLike | None = None
) -> tuple[str, list[str]]:
    """``(prompt, continuations)`` for one MMLU question; continuations are " A".." D" (one per choice)."""
    template = _mmlu_template(row["subject"], str(prompts_dir) if prompts_dir else None)
    n_choices = len(row["choices"])
    letters = template.choices or tuple("ABCD")
    if n_choices != len(letters):
        raise ValueError(
            f"MMLU question has {n_choices} choices but the prompt format has {len(letters)} letters "
            f"({template.source}); MMLU questions need exactly {len(letters)} choices: {row['question'][:80]!r}"
        )
    prompt = template.prompt(row, n_shots=len(shots), shots=list(shots))
    return prompt, [template.target_delimiter + letter for letter in letters]


@functools.lru_cache(maxsize=128)
def _mmlu_template(subject: str, prompts_dir: str | None) -> exemplars.FewShotTemplate:
    return exemplars.mmlu_template(subject, prompts_dir)


def gsm8k_prompt(row: dict[str, Any], n_shots: int = 8, prompts_dir: str | os.PathLike | None = None) -> str:
    """The chain-of-thought prompt for one GSM8K question (the first ``n_shots`` of the 8 exemplars)."""
    return _gsm8k_template(str(prompts_dir) if prompts_dir else None).prompt({"question": row["question"]}, n_shots)


@functools.lru_cache(maxsize=4)
def _gsm8k_template(prompts_dir: str | None) -> exemplars.FewShotTemplate:
    return exemplars.gsm8k_template(prompts_dir)


def bbh_prompt(
    row: dict[str, Any], task: str, n_shots: int = 3, prompts_dir: str | os.PathLike | None = None
) -> str:
    """The chain-of-thought prompt for one BBH example of ``task`` (the first ``n_shots`` of its 3 exemplars)."""
    return _bbh_template(task, str(prompts_dir) if prompts_dir else None).prompt({"input": row["input"]}, n_shots)


@functools.lru_cache(maxsize=64)
def _bbh_template(task: str, prompts_dir: str | None) -> exemplars.FewShotTemplate:
    return exemplars.bbh_template(task, prompts_dir)


def truthfulqa_prompt(row: dict[str, Any], prompts_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(prompt, delimiter)``: the QA primer then the question; score ``delimiter + answer`` after it."""
    template = _truthfulqa_template(str(prompts_dir) if prompts_dir else None)
    return template.prompt({"question": row["question"]}, n_shots=0), template.target_delimiter


@functools.lru_cache(maxsize=4)
def _truthfulqa_template(prompts_dir: str | None) -> exemplars.FewShotTemplate:
    return exemplars.truthfulqa_template(prompts_dir)


def load_tydiqa_templates(path: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """Per-language TydiQA wording: ours, updated with a user JSON file of the same shape when given."""
    with open(TYDIQA_TEMPLATES, encoding="utf-8") as f:
        templates = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            user = json.load(f)
        for language, entry in user.items():
            if language.startswith("_"):
                continue
            missing = [k for k in _TEMPLATE_KEYS if k not in entry]
            if missing:
                raise ValueError(
                    f"TydiQA template for {language!r} in {path} lacks {missing}; each language needs "
                    f"{list(_TEMPLATE_KEYS)}."
                )
            templates[language] = dict(entry)
    return templates


def _tydiqa_block(row: dict[str, Any], labels: dict[str, str], answer: str | None) -> str:
    block = f"{labels['passage']}: {row['context'].strip()}\n{labels['question']}: {row['question'].strip()}\n"
    block += f"{labels['answer']}:"
    return block + (f" {answer}" if answer is not None else "")


def tydiqa_prompt(
    row: dict[str, Any], shots: Sequence[dict[str, Any]] = (), templates: dict[str, dict[str, str]] | None = None
) -> str:
    """The gold-passage prompt for one TydiQA question, in the question's language when we have its wording."""
    templates = templates if templates is not None else load_tydiqa_templates()
    language = row["language"]
    labels = templates.get(language)
    if labels is None:
        logger.warning("No TydiQA template for language %r; using the English wording.", language)
        labels = templates["english"]
    parts = [labels["instruction"]]
    for shot in shots:
        parts.append(_tydiqa_block(shot, labels, shot["answers"]["text"][0]))
    parts.append(_tydiqa_block(row, labels, None))
    return "\n\n".join(parts)
