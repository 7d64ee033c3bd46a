"""`PromptTemplate`: a versioned, hashable rating prompt and the JSON answer it asks for.

    >>> from ds2_hf.prompts import get_template
    >>> t = get_template("ds2")
    >>> t.id                                   # name@version#content-hash; part of every cache key
    'ds2@1#...'
    >>> t.messages({"instruction": "Add 2 and 3.", "output": "5"})[0]["role"]
    'user'

A template is plain data (strings, dicts, tuples), so it pickles deterministically and gives
`datasets` a stable fingerprint. Placeholders in ``user``/``system`` are replaced literally (not with
``str.format``), so JSON braces in the text need no escaping:

- ``{sample}``: the whole conversation, serialized by `ds2_hf.text.serialize` (``### role: content``);
- ``{instruction}``: every non-assistant message, serialized the same way;
- ``{response}``: the assistant side (`ds2_hf.text.response_text`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PLACEHOLDERS = ("{sample}", "{instruction}", "{response}")


@dataclass(frozen=True)
class PromptTemplate:
    """A rating prompt plus the contract for its answer.

    Args:
        name, version: identify the template; both go into `id` (and so into cache keys).
        user: the user message, with placeholders (see module docstring).
        system: an optional system message (left out by default: some chat templates reject it).
        fields: JSON key the model must return -> column suffix (``"Rarity": "rarity"`` gives the
            column ``score_rarity``). Every key must be an integer within `scale`.
        overall_key: the key whose value becomes the score.
        scale: inclusive range every field must lie in.
        compress: ``(lo, hi)``: ``score = clip(overall, lo, hi) - lo`` (DS2: ``(4, 9)`` -> 0..5).
        reask: the follow-up message sent after an unusable answer; ``{error}`` is replaced by why.
        description: free text for humans.

    Example (a user-supplied template):

        >>> t = PromptTemplate(name="mine", version="2", user="Rate this:\\n{sample}\\nJSON: {\\"Overall rating\\": 1-10}",
        ...                    fields={"Overall rating": "overall"})
        >>> t.compress_score(8)
        4
    """

    name: str
    version: str
    user: str
    fields: Mapping[str, str] = field(default_factory=lambda: {"Overall rating": "overall"})
    overall_key: str = "Overall rating"
    scale: tuple[int, int] = (1, 10)
    compress: tuple[int, int] = (4, 9)
    system: str | None = None
    reask: str = (
        "That answer could not be used ({error}). Reply again with only the JSON object the first "
        "message asked for, with integer values."
    )
    description: str = ""

    def __post_init__(self) -> None:
        # Normalise containers so equal templates pickle (and hash) identically.
        object.__setattr__(self, "fields", dict(self.fields))
        object.__setattr__(self, "scale", tuple(int(v) for v in self.scale))
        object.__setattr__(self, "compress", tuple(int(v) for v in self.compress))
        object.__setattr__(self, "version", str(self.version))
        problems = []
        if not any(p in self.user or (self.system and p in self.system) for p in PLACEHOLDERS):
            problems.append(f"the user message has none of the placeholders {', '.join(PLACEHOLDERS)}")
        if not self.fields:
            problems.append("`fields` is empty: list the JSON keys the model must return")
        if self.overall_key not in self.fields:
            problems.append(f"overall_key {self.overall_key!r} is not one of fields {list(self.fields)}")
        if len(set(self.fields.values())) != len(self.fields):
            problems.append(f"column suffixes in `fields` repeat: {list(self.fields.values())}")
        lo, hi = self.scale if len(self.scale) == 2 else (0, -1)
        if len(self.scale) != 2 or lo > hi:
            problems.append(f"scale must be (low, high) with low <= high, got {self.scale}")
        if len(self.compress) != 2 or self.compress[0] > self.compress[1]:
            problems.append(f"compress must be (low, high) with low <= high, got {self.compress}")
        if problems:
            raise ValueError(f"Invalid prompt template {self.name!r}: " + "; ".join(problems) + ".")

    # identity -------------------------------------------------------------------------------
    def __hash__(self) -> int:  # the dataclass hash would choke on the `fields` dict
        return hash(self.content_hash)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = dict(self.fields)
        data["scale"] = list(self.scale)
        data["compress"] = list(self.compress)
        return data

    @property
    def content_hash(self) -> str:
        """sha256 over everything that changes what is asked or how the answer is read."""
        data = self.to_dict()
        data.pop("description")
        return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    @property
    def id(self) -> str:
        """``name@version#hash12``: recorded in the ``rating_template`` column and in cache keys."""
        return f"{self.name}@{self.version}#{self.content_hash[:12]}"

    @property
    def num_classes(self) -> int:
        return self.compress[1] - self.compress[0] + 1

    # rendering ------------------------------------------------------------------------------
    def render(self, text: str, sample: str, instruction: str = "", response: str = "") -> str:
        return text.replace("{instruction}", instruction).replace("{response}", response).replace("{sample}", sample)

    def messages(self, example: Mapping[str, Any], fmt: str | None = None, max_chars: int | None = None) -> list[dict[str, str]]:
        """The chat messages that ask for a rating of one sample (any layout `ds2_hf.text` accepts)."""
        from ds2_hf.text import to_messages

        conversation = to_messages(example, fmt)
        return self.messages_for(conversation, max_chars=max_chars)

    def messages_for(self, conversation: list[dict[str, str]], max_chars: int | None = None) -> list[dict[str, str]]:
        """Like `messages`, from an already normalised conversation."""
        from ds2_hf.text import render

        sample = _clip(render(conversation), max_chars)
        instruction = _clip(render(m for m in conversation if m["role"] != "assistant"), max_chars)
        response = _clip("\n".join(m["content"] for m in conversation if m["role"] == "assistant"), max_chars)
        out = []
        if self.system:
            out.append({"role": "system", "content": self.render(self.system, sample, instruction, response)})
        out.append({"role": "user", "content": self.render(self.user, sample, instruction, response)})
        return out

    def reask_message(self, error: str) -> dict[str, str]:
        return {"role": "user", "content": self.reask.replace("{error}", error)}

    # answer contract ------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        """JSON schema of the answer, for constrained decoding (``response_format``)."""
        lo, hi = self.scale
        # `enum` as well as min/max: llama.cpp's grammar builder ignores minimum/maximum (measured: 2.5%
        # of SmolLM2 answers out of range with min/max alone) but enforces an enum.
        value = {"type": "integer", "minimum": lo, "maximum": hi, "enum": list(range(lo, hi + 1))}
        return {
            "type": "object",
            "properties": {key: dict(value) for key in self.fields},
            "required": list(self.fields),
            "additionalProperties": False,
        }

    def compress_score(self, overall: int) -> int:
        """``clip(overall, lo, hi) - lo`` with ``(lo, hi) = compress``."""
        lo, hi = self.compress
        return min(max(int(overall), lo), hi) - lo

    # loading --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptTemplate":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown prompt template keys {unknown}; allowed: {sorted(known)}")
        missing = [k for k in ("name", "version", "user") if k not in data]
        if missing:
            raise ValueError(f"Prompt template is missing {missing}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | Path) -> "PromptTemplate":
        """Load a template from a YAML or JSON file (same keys as the built-in ``ds2-v1.yaml``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Prompt template file not found: {path}")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if not isinstance(data, Mapping):
            raise ValueError(f"{path} must hold a mapping of template keys, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_file(self, path: str | Path) -> Path:
        """Write the template as YAML (or JSON for a ``.json`` path), e.g. to start a custom one."""
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
        return path


def _clip(text: str, max_chars: int | None) -> str:
    # Keep the head and the tail: the request and the end of the answer both matter to a rater.
    if max_chars is None or len(text) <= max_chars:
        return text
    marker = "\n[... truncated ...]\n"
    half = max(0, (max_chars - len(marker)) // 2)
    return text[:half] + marker + text[len(text) - half :]
