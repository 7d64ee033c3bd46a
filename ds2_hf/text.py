"""One serialization of an instruction-tuning sample, shared by the rater, the embedder and selection.

DS2 shows the rater (and the embedder) the whole conversation, every message rendered as
``### {role}: {content}\\n``. Three input layouts are accepted and normalised to chat messages:

- TULU / chat: a ``messages`` column of ``[{"role": ..., "content": ...}, ...]``;
- Alpaca: ``instruction`` (+ optional ``input``) and ``output``;
- prompt/completion: ``prompt`` and ``completion`` as strings, or as message lists (TRL's
  conversational prompt-completion format).

    >>> from ds2_hf.text import serialize
    >>> serialize({"instruction": "Add 2 and 3.", "input": "", "output": "5"})
    '### user: Add 2 and 3.\\n### assistant: 5\\n'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MESSAGES = "messages"
ALPACA = "alpaca"
PROMPT_COMPLETION = "prompt_completion"

_FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    MESSAGES: ("messages",),
    ALPACA: ("instruction", "output"),
    PROMPT_COMPLETION: ("prompt", "completion"),
}


def detect_format(column_names: Iterable[str]) -> str:
    """Return which sample layout a set of columns holds: ``"messages"``, ``"alpaca"`` or ``"prompt_completion"``.

    >>> detect_format(["id", "messages"])
    'messages'
    """
    names = set(column_names)
    for fmt, required in _FORMAT_COLUMNS.items():
        if all(col in names for col in required):
            return fmt
    raise ValueError(
        f"Cannot find a conversation in columns {sorted(names)}. Provide one of: a 'messages' column "
        "(list of {'role', 'content'}), Alpaca 'instruction' + 'output' (+ optional 'input'), or "
        "'prompt' + 'completion'. Rename your columns with `ds.rename_column(old, new)`."
    )


def _as_messages(value: Any, default_role: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, Mapping):
        return [_check_message(value)]
    if isinstance(value, Sequence):
        return [_check_message(m) for m in value]
    raise ValueError(f"Expected a string or a list of messages, got {type(value).__name__}: {value!r:.80}")


def _check_message(message: Any) -> dict[str, str]:
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
        raise ValueError(f"A message must be a mapping with 'role' and 'content', got {message!r:.120}")
    content = message["content"]
    return {"role": str(message["role"]), "content": "" if content is None else str(content)}


def to_messages(example: Mapping[str, Any], fmt: str | None = None) -> list[dict[str, str]]:
    """Normalise one sample to a list of ``{"role", "content"}`` messages.

    >>> to_messages({"prompt": "Hi", "completion": "Hello!"})
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]
    """
    fmt = fmt or detect_format(example.keys())
    if fmt == MESSAGES:
        return _as_messages(example["messages"], "user")
    if fmt == ALPACA:
        instruction = example.get("instruction") or ""
        extra = example.get("input") or ""
        user = f"{instruction}\n\n{extra}" if extra else instruction
        return [{"role": "user", "content": user}, {"role": "assistant", "content": example.get("output") or ""}]
    if fmt == PROMPT_COMPLETION:
        return _as_messages(example["prompt"], "user") + _as_messages(example["completion"], "assistant")
    raise ValueError(f"Unknown sample format {fmt!r}; expected one of {sorted(_FORMAT_COLUMNS)}")


def render(messages: Iterable[Mapping[str, str]]) -> str:
    """Render messages the DS2 way: ``### {role}: {content}\\n`` per message, concatenated."""
    return "".join(f"### {m['role']}: {m['content']}\n" for m in messages)


def serialize(example: Mapping[str, Any], fmt: str | None = None) -> str:
    """The text the rater and the embedder see for one sample (see module docstring)."""
    return render(to_messages(example, fmt))


def response_text(example: Mapping[str, Any], fmt: str | None = None) -> str:
    """The assistant side of a sample (every assistant turn, joined by newlines)."""
    return "\n".join(m["content"] for m in to_messages(example, fmt) if m["role"] == "assistant")


def iter_rows(batch: Mapping[str, Sequence[Any]]) -> Iterable[dict[str, Any]]:
    """The rows of a ``datasets`` batch (a dict of equal-length columns), as dicts."""
    names = list(batch)
    size = len(batch[names[0]]) if names else 0
    for i in range(size):
        yield {name: batch[name][i] for name in names}


def serialize_batch(batch: Mapping[str, Sequence[Any]], fmt: str | None = None) -> list[str]:
    """`serialize` over a ``datasets`` batch (a dict of equal-length columns)."""
    fmt = fmt or detect_format(batch.keys())
    return [serialize(row, fmt) for row in iter_rows(batch)]


def response_text_batch(batch: Mapping[str, Sequence[Any]], fmt: str | None = None) -> list[str]:
    """`response_text` over a ``datasets`` batch."""
    fmt = fmt or detect_format(batch.keys())
    return [response_text(row, fmt) for row in iter_rows(batch)]
