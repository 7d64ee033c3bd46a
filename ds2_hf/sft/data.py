"""Training data for SFT: load it from anywhere, turn every layout into chat messages, measure it.

    >>> from ds2_hf.sft.data import load_sft_dataset
    >>> ds = load_sft_dataset("./ds2_subset")                  # a save_to_disk folder
    >>> ds = load_sft_dataset("subset.parquet")                # or .jsonl / .json / .csv
    >>> ds = load_sft_dataset("me/ds2-subset", split="train")  # or a hub id

Conversations come from a ``messages`` column, Alpaca ``instruction``/``input``/``output`` or
``prompt``/``completion`` columns, all through `ds2_hf.text.to_messages` (the one serializer).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ds2_hf.text import detect_format, iter_rows, to_messages

logger = logging.getLogger(__name__)


def load_sft_dataset(source: Any, split: str = "train", config: str | None = None) -> Any:
    """A `datasets.Dataset` from a Dataset/DatasetDict, a save_to_disk folder, a data file or a hub id.

    Paths and hub ids go through `ds2_hf.io.load`, the loader every stage shares.
    """
    from datasets import Dataset, DatasetDict

    from ds2_hf.io import load

    if isinstance(source, Dataset):
        return source
    if isinstance(source, DatasetDict):
        if split not in source:
            raise ValueError(f"No split {split!r} in this dataset; it has {sorted(source)}. Set dataset_split.")
        return source[split]
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Expected a Dataset, a path or a hub id, got {type(source).__name__}.")
    return load(source, split=split, **({"name": config} if config else {}))


@dataclass
class ChatExamples:
    """Batched `datasets.map` transform: any sample layout -> ``messages`` + token counts.

    Holds only configuration; the tokenizer is loaded lazily in each worker process, so the object
    pickles small and `datasets` fingerprints it deterministically.

    Adds ``messages``, ``num_tokens`` (length under ``chat_template``) and ``num_assistant_turns``.
    """

    tokenizer_name_or_path: str
    chat_template: str
    fmt: str
    gguf_file: str | None = None
    _tokenizer: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokenizer"] = None
        return state

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name_or_path, **kwargs)
        return self._tokenizer

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        conversations = [to_messages(row, self.fmt) for row in iter_rows(batch)]
        lengths = []
        for messages in conversations:
            ids = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            lengths.append(len(ids))
        return {
            "messages": conversations,
            "num_tokens": lengths,
            "num_assistant_turns": [sum(m["role"] == "assistant" for m in c) for c in conversations],
        }


@dataclass
class DataStats:
    """What preparation did to the data (recorded in the run's results and model card)."""

    num_input: int
    num_without_assistant: int
    num_overlong: int
    max_length: int
    num_tokens: int  # per epoch, after truncation to max_length
    source_format: str

    @property
    def num_used(self) -> int:
        return self.num_input - self.num_without_assistant


def prepare_chat_dataset(
    dataset: Any,
    *,
    tokenizer_name_or_path: str,
    chat_template: str,
    max_length: int,
    gguf_file: str | None = None,
    num_proc: int | None = None,
    tokenizer: Any = None,
) -> tuple[Any, DataStats]:
    """Normalise `dataset` to a single ``messages`` column and check it can train at ``max_length``.

    Raises a ValueError for an empty dataset, one with no conversation columns, and one where every
    example is longer than ``max_length``. Examples without an assistant turn carry no loss and are
    dropped with a warning (the input dataset is not modified). An already loaded ``tokenizer`` saves
    loading it again in this process; worker processes load it from ``tokenizer_name_or_path``.
    """
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty: select a non-empty subset (check your budget and filters).")
    fmt = detect_format(dataset.column_names)
    transform = ChatExamples(tokenizer_name_or_path, chat_template, fmt, gguf_file, _tokenizer=tokenizer)
    prepared = dataset.map(
        transform,
        batched=True,
        batch_size=256,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="Formatting conversations",
    )
    no_assistant = [i for i, n in enumerate(prepared["num_assistant_turns"]) if n == 0]
    if len(no_assistant) == len(prepared):
        raise ValueError(
            f"None of the {len(prepared)} examples has an assistant reply to learn from (format {fmt!r}). "
            "Check that the response column (messages with role 'assistant', 'output' or 'completion') is filled."
        )
    if no_assistant:
        logger.warning(
            "Dropping %d of %d examples with no assistant turn (first rows: %s).",
            len(no_assistant),
            len(prepared),
            no_assistant[:10],
        )
        prepared = prepared.filter(lambda n: n > 0, input_columns="num_assistant_turns")
    lengths = prepared["num_tokens"]
    overlong = sum(n > max_length for n in lengths)
    if overlong == len(lengths):
        raise ValueError(
            f"Every one of the {len(lengths)} examples is longer than max_length={max_length} tokens (shortest: "
            f"{min(lengths)}). Raise max_length to at least {min(lengths)}, or select shorter examples."
        )
    if overlong:
        logger.warning(
            "%d of %d examples are longer than max_length=%d and will be truncated.", overlong, len(lengths), max_length
        )
    stats = DataStats(
        num_input=len(dataset),
        num_without_assistant=len(no_assistant),
        num_overlong=overlong,
        max_length=max_length,
        num_tokens=sum(min(n, max_length) for n in lengths),
        source_format=fmt,
    )
    return prepared.select_columns(["messages"]), stats
