"""Reading a rating out of the model's generated text.

Only the generated text is parsed (never the prompt, which contains an example JSON object). The
answer is the *last* brace-balanced JSON object in it; its keys must match the template's fields
(case, spaces and underscores ignored) and every value must be an integer within the scale.

    >>> from ds2_hf.prompts import get_template
    >>> parse_rating('Sure! {"Rarity": 3, "Complexity": 4, "Informativeness": 5, "Overall rating": 7}', get_template("ds2"))
    {'rarity': 3, 'complexity': 4, 'informativeness': 5, 'overall': 7}
    >>> parse_rating("I'd say 7/10", get_template("ds2"))
    Traceback (most recent call last):
    ...
    ds2_hf.rating.parsing.RatingParseError: no_json: the reply contains no JSON object
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from ds2_hf.prompts import PromptTemplate

__all__ = ["RatingParseError", "find_json_objects", "parse_rating"]


class RatingParseError(ValueError):
    """An answer that cannot be read as a rating. ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _balanced_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every brace-balanced ``{...}`` span, nested ones included.

    Quotes are tracked only inside braces, so apostrophes and quotes in surrounding prose do not
    derail the scan; an unmatched ``{`` (e.g. a truncated answer) does not hide a later object.
    """
    spans: list[tuple[int, int]] = []
    stack: list[int] = []
    in_string = False
    escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"' and stack:
            in_string = True
        elif ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            spans.append((stack.pop(), i + 1))
    return spans


def _load_object(candidate: str) -> dict[str, Any] | None:
    try:
        value = json.loads(candidate)
    except ValueError:
        # Small models often answer with Python-style dicts ({'Rarity': 5}); literal_eval is safe.
        try:
            value = ast.literal_eval(candidate)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def find_json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text``, outermost-first within the order they end (last = last in text)."""
    spans = sorted(_balanced_spans(text), key=lambda s: (s[1], s[0]))
    objects = []
    for start, end in spans:
        obj = _load_object(text[start:end])
        if obj is not None:
            objects.append(obj)
    return objects


def _norm(key: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", str(key).lower())
    # "Overall rating" / "overall_score" / "overall" all name the same thing.
    for suffix in ("rating", "score"):
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
    return key


_INT_TEXT = re.compile(r"^\s*([+-]?\d+)(?:\.0+)?\s*(?:/\s*\d+)?\s*$")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _INT_TEXT.match(value)
        if match:
            return int(match.group(1))
    return None


def _read_fields(obj: dict[str, Any], template: PromptTemplate) -> dict[str, int]:
    lookup = {_norm(k): v for k, v in obj.items()}
    missing = [key for key in template.fields if _norm(key) not in lookup]
    if missing:
        raise RatingParseError("missing_keys", f"the JSON object lacks {missing} (got keys {list(obj)[:8]})")
    lo, hi = template.scale
    values: dict[str, int] = {}
    for key, column in template.fields.items():
        raw = lookup[_norm(key)]
        number = _as_int(raw)
        if number is None:
            raise RatingParseError("not_integer", f"{key!r} is {raw!r:.40}, not an integer")
        if not lo <= number <= hi:
            raise RatingParseError("out_of_range", f"{key!r} is {number}, outside {lo}..{hi}")
        values[column] = number
    return values


def parse_rating(text: str | None, template: PromptTemplate) -> dict[str, int]:
    """Return ``{column suffix: int}`` for the template's fields, or raise `RatingParseError`.

    The last JSON object in the text that carries the fields wins; an object wrapping them one level
    deep (``{"ratings": {...}}``) is accepted too.
    """
    if text is None or not text.strip():
        raise RatingParseError("empty_output", "the model returned no text")
    if not _balanced_spans(text):
        raise RatingParseError("no_json", "the reply contains no JSON object")
    objects = find_json_objects(text)
    if not objects:
        raise RatingParseError("invalid_json", f"no brace-balanced span parses as JSON: {text[-120:]!r}")
    # The last object decides; an error on it is the one reported.
    candidates = [objects[-1]] + [v for v in objects[-1].values() if isinstance(v, dict)]
    first_error: RatingParseError | None = None
    for candidate in candidates:
        try:
            return _read_fields(candidate, template)
        except RatingParseError as err:
            first_error = first_error or err
    assert first_error is not None
    raise first_error
