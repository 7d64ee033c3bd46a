"""Sentence embeddings for DS2 as a picklable ``datasets.map`` transform, on one or many processes.

DS2 embeds every sample's serialized conversation (`ds2_hf.text.serialize`, the same text the rater
sees) with ``BAAI/bge-large-en-v1.5``, mean-pooled over the attention mask, L2-normalised, truncated
at 512 tokens. Everything is configurable through `EmbeddingConfig`.

    >>> import ds2_hf
    >>> emb = ds2_hf.embed(model=str(ds2_hf.assets.minilm_path()), max_length=256)
    >>> ds = ds.map(emb, batched=True, batch_size=256)
    >>> ds.features["embedding"]
    List(Value('float32'), length=384)

The transform holds only its configuration when pickled: the model is loaded lazily in each process
that calls it (so ``num_proc`` and other processes work), and ``datasets`` fingerprints it the same
way every time, so running the same map twice on a cached dataset reuses the first result.

On many processes (GPUs or nodes) the module is its own launcher; each process embeds its
contiguous shards to shard files, a finished shard is reused on restart, and the output keeps the
input's row order:

    accelerate launch -m ds2_hf.embedding --dataset data.jsonl --output embedded --model BAAI/bge-large-en-v1.5
    python -m ds2_hf.embedding --dataset data.jsonl --output embedded.parquet   # one process
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "BAAI/bge-large-en-v1.5"
POOLINGS = ("mean", "cls")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class EmbeddingConfig:
    """How samples are embedded. The defaults are the paper's (bge-large, mean pooling, 512 tokens).

    >>> EmbeddingConfig(model="sentence-transformers/all-MiniLM-L6-v2", max_length=256).pooling
    'mean'
    """

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "hub id or local folder of an encoder model"})
    revision: str | None = field(default=None, metadata={"help": "model revision (pin it: the cache key is the config)"})
    pooling: str = field(default="mean", metadata={"help": "'mean' over the attention mask, or 'cls' (first token)"})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise each embedding"})
    max_length: int = field(default=512, metadata={"help": "truncate each text to this many tokens"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass (not the datasets.map batch)"})
    dtype: str = field(default="auto", metadata={"help": "model dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, float16, bfloat16"})
    device: str | None = field(default=None, metadata={"help": "torch device; default: cuda, then mps, then cpu"})
    text_column: str | None = field(default=None, metadata={"help": "embed this text column as is instead of the serialized conversation"})
    output_column: str = field(default="embedding", metadata={"help": "name of the column to write"})
    sort_by_length: bool = field(default=True, metadata={"help": "group texts of similar length in a forward pass (less padding)"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads in the embedding process"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow custom model code from the hub"})

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is not supported; use one of {POOLINGS}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not supported; use one of {DTYPES}.")
        if self.max_length < 1 or self.batch_size < 1:
            raise ValueError(f"max_length ({self.max_length}) and batch_size ({self.batch_size}) must be >= 1.")
        self.model = str(self.model)


class Embedder:
    """A ``datasets.map(batched=True)`` transform adding an embedding column. Build it with `embed`.

    Only the `EmbeddingConfig` is pickled and hashed; the tokenizer and model are loaded on first
    call in whichever process runs the transform.

    On an unformatted dataset the column is an Arrow fixed-size list (``List(Value("float32"),
    length=d)``). To get that, the transform returns the whole batch as an Arrow table, and
    ``datasets`` then does not apply ``map(remove_columns=...)``: drop columns with
    ``ds.remove_columns`` afterwards. On a formatted dataset (``with_format``) it returns a numpy
    array (a variable-size list column unless ``features=embedder.features(ds.features)`` is given).
    """

    def __init__(self, config: EmbeddingConfig):
        self.config = config
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None

    # -- pickling: configuration only, so fingerprints are stable and workers load their own model --
    def __getstate__(self) -> dict[str, Any]:
        return {"config": asdict(self.config)}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__init__(EmbeddingConfig(**state["config"]))

    def __repr__(self) -> str:
        return f"Embedder({self.config!r})"

    # -- model --
    def _resolve_device_and_dtype(self) -> tuple[Any, Any]:
        import torch

        device = self.config.device
        if device is None:
            if torch.cuda.is_available():
                device = "cuda"
            elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        device = torch.device(device)
        if self.config.dtype == "auto":
            if device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                dtype = torch.float32
        else:
            dtype = getattr(torch, self.config.dtype)
        return device, dtype

    def load(self) -> "Embedder":
        """Load tokenizer and model now (otherwise the first call does it). Returns ``self``."""
        if self._model is not None:
            return self
        import torch
        from transformers import AutoModel, AutoTokenizer

        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        device, dtype = self._resolve_device_and_dtype()
        kwargs: dict[str, Any] = {"revision": self.config.revision, "trust_remote_code": self.config.trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(self.config.model, **kwargs)
        model = AutoModel.from_pretrained(self.config.model, dtype=dtype, **kwargs)
        model.to(device).eval()
        self._tokenizer, self._model, self._device = tokenizer, model, device
        logger.info("Loaded embedder %s on %s (%s)", self.config.model, device, dtype)
        return self

    @property
    def dimension(self) -> int:
        """Embedding size (the model's hidden size); reads only the model config if not loaded."""
        if self._model is not None:
            return int(self._model.config.hidden_size)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(
            self.config.model, revision=self.config.revision, trust_remote_code=self.config.trust_remote_code
        )
        return int(cfg.hidden_size)

    def features(self, input_features: Any = None) -> Any:
        """``datasets.Features`` for ``ds.map(..., features=...)``: the input's plus a fixed-size float32 list.

        Needed only on a formatted dataset (``with_format``), where the transform returns numpy and
        ``datasets`` would otherwise infer a variable-length ``List(Value("float32"))``.
        """
        from datasets import Features, List, Value

        out = Features(dict(input_features or {}))
        out[self.config.output_column] = List(Value("float32"), length=self.dimension)
        return out

    def _max_length(self) -> int:
        limit = getattr(self._model.config, "max_position_embeddings", None) or self.config.max_length
        # BERT-style models reserve no extra positions; RoBERTa-style ones offset by padding_idx + 1.
        roberta_like = self._model.config.model_type in ("roberta", "xlm-roberta", "camembert")
        offset = (getattr(self._model.config, "pad_token_id", None) or 1) + 1 if roberta_like else 0
        return max(1, min(self.config.max_length, limit - offset))

    # -- embedding --
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a list of strings: a ``(len(texts), d)`` float32 array (row order kept).

        >>> Embedder(EmbeddingConfig(model=str(minilm_path()))).encode(["hello"]).shape
        (1, 384)
        """
        import torch

        self.load()
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        tok = self._tokenizer
        encoded = tok(list(texts), truncation=True, max_length=self._max_length(), padding=False)
        lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64, count=n)
        # Longest first, so an out-of-memory error shows up on the first forward pass, not the last.
        order = np.argsort(-lengths, kind="stable") if self.config.sort_by_length else np.arange(n)
        out = np.empty((n, self.dimension), dtype=np.float32)
        keys = list(encoded.keys())
        bs = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                features = tok.pad({k: [encoded[k][i] for i in idx] for k in keys}, return_tensors="pt")
                features = {k: v.to(self._device) for k, v in features.items()}
                hidden = self._model(**features).last_hidden_state
                out[idx] = self._pool(hidden, features["attention_mask"]).cpu().numpy()
        return out

    def _pool(self, hidden: Any, mask: Any) -> Any:
        import torch

        hidden = hidden.float()
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    def texts(self, batch: Mapping[str, Sequence[Any]]) -> list[str]:
        """The strings embedded for a batch: the text column, or the DS2 serialization of each sample."""
        if self.config.text_column:
            if self.config.text_column not in batch:
                raise ValueError(
                    f"text_column={self.config.text_column!r} is not a column; columns are {sorted(batch)}. "
                    "Pass an existing column, or text_column=None to embed the serialized conversation."
                )
            return ["" if t is None else str(t) for t in batch[self.config.text_column]]
        from ds2_hf.text import detect_format, serialize_batch

        fmt = detect_format(batch.keys())
        # only the conversation columns: a LazyBatch converts each column it is asked for to Python
        wanted = ("messages", "instruction", "input", "output", "prompt", "completion")
        return serialize_batch({k: batch[k] for k in wanted if k in batch}, fmt)

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> Any:
        if any(isinstance(v, (str, int, float)) or v is None for v in batch.values()):
            raise ValueError("ds2_hf.embed(...) is a batched transform: call ds.map(embedder, batched=True).")
        vectors = self.encode(self.texts(batch))
        table = getattr(batch, "pa_table", None)  # a datasets LazyBatch (unformatted dataset)
        if table is None:
            return {self.config.output_column: vectors}
        # Returning the batch's Arrow table with the new column appended is how a map function keeps
        # the Arrow type: a fixed-size list of d float32 (numpy output would become a variable-size
        # list). A returned table replaces the batch, so it carries every input column.
        import pyarrow as pa

        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])
        name = self.config.output_column
        if name in table.column_names:
            return table.set_column(table.column_names.index(name), name, column)
        return table.append_column(name, column)


def embed(model: str | os.PathLike | None = None, *, config: EmbeddingConfig | None = None, **overrides: Any) -> Embedder:
    """A picklable ``datasets.map`` transform that adds an ``embedding`` column (see `EmbeddingConfig`).

    >>> import ds2_hf
    >>> ds = ds.map(ds2_hf.embed(model="BAAI/bge-large-en-v1.5"), batched=True, batch_size=256)
    """
    cfg = config or EmbeddingConfig()
    if model is not None:
        overrides["model"] = str(model)
    unknown = set(overrides) - {f.name for f in fields(EmbeddingConfig)}
    if unknown:
        raise ValueError(
            f"Unknown embedding option(s) {sorted(unknown)}; valid ones are {[f.name for f in fields(EmbeddingConfig)]}."
        )
    return Embedder(replace(cfg, **overrides))


def embed_dataset(ds: Any, config: EmbeddingConfig | None = None, *, map_batch_size: int = 256, **map_kwargs: Any) -> Any:
    """``ds.map`` with an `Embedder`, writing a fixed-size ``List(Value("float32"), length=d)`` column.

    >>> ds = embed_dataset(ds, EmbeddingConfig(model=str(minilm_path())))
    >>> ds.features["embedding"]
    List(Value('float32'), length=384)
    """
    embedder = Embedder(config or EmbeddingConfig())
    map_kwargs.setdefault("desc", f"Embedding with {Path(embedder.config.model).name}")
    return ds.map(
        embedder, batched=True, batch_size=map_batch_size, features=embedder.features(ds.features), **map_kwargs
    )


# ---------------------------------------------------------------------------------------------------
# Multi-process / multi-node embedding: `accelerate launch -m ds2_hf.embedding ...`
# ---------------------------------------------------------------------------------------------------


@dataclass
class ShardedEmbeddingArguments:
    """Where the data comes from and where the embedded dataset goes."""

    dataset: str = field(metadata={"help": "a data file (.jsonl/.json/.parquet/.csv), a save_to_disk folder, or a hub dataset id"})
    output: str = field(metadata={"help": "output: a .parquet/.jsonl file, or a folder (datasets.save_to_disk)"})
    split: str | None = field(default=None, metadata={"help": "split to embed (default: the only split, or train)"})
    num_shards: int | None = field(default=None, metadata={"help": "shard files to write (default: number of processes); more shards = less lost on a crash"})
    map_batch_size: int = field(default=256, metadata={"help": "rows per datasets.map batch"})
    keep_shards: bool = field(default=False, metadata={"help": "keep the per-shard files after merging"})


def _run_key(dataset_fingerprint: str, cfg: EmbeddingConfig, num_shards: int) -> str:
    from datasets.fingerprint import Hasher

    # Device/threads/batch size change speed, not the numbers (up to float noise), so restarts on
    # another machine reuse finished shards.
    numeric = {k: v for k, v in asdict(cfg).items() if k not in ("device", "num_threads", "batch_size", "sort_by_length")}
    return Hasher.hash({"data": dataset_fingerprint, "config": numeric, "num_shards": num_shards})[:16]


def _shard_dir(output: Path) -> Path:
    return output.with_name(output.name + ".shards")


def embed_sharded(
    args: ShardedEmbeddingArguments,
    config: EmbeddingConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Any = None,
) -> Path | None:
    """Embed ``args.dataset`` across ``world_size`` processes; process ``rank`` does shards rank, rank+W, ...

    Each shard is a contiguous slice whose ``datasets.map`` output file is the shard file, under
    ``<output>.shards/<key>/`` where ``key`` hashes the input's fingerprint, the numeric
    configuration and the shard count. ``map`` writes it to a temporary file and renames it when
    done, so a killed run leaves only finished shards, and a restart with the same inputs skips them.
    After ``barrier()`` the rank-0 process concatenates the shards in order (the input's row order),
    writes ``args.output`` and returns its path; other ranks return ``None``.

        >>> embed_sharded(ShardedEmbeddingArguments(dataset="d.jsonl", output="out.parquet"), EmbeddingConfig())
        PosixPath('out.parquet')
    """
    import datasets

    from ds2_hf import io

    output = Path(args.output)
    ds = io.load(args.dataset, split=args.split)
    if len(ds) == 0:
        raise ValueError(f"{args.dataset} (split {args.split!r}) has no rows to embed.")
    if args.num_shards is not None and args.num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {args.num_shards}")
    num_shards = min(args.num_shards or world_size, len(ds))
    key = _run_key(ds._fingerprint, config, num_shards)
    meta = {"key": key, "config": asdict(config), "num_rows": len(ds), "num_shards": num_shards}
    meta_path = output.with_name(output.name + ".ds2.json")
    if output.exists() and meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key:
        logger.info("%s is up to date (key %s); nothing to embed", output, key)
        return output if rank == 0 else None

    shard_dir = _shard_dir(output) / key
    shard_dir.mkdir(parents=True, exist_ok=True)
    paths = [shard_dir / f"shard-{i:05d}-of-{num_shards:05d}.arrow" for i in range(num_shards)]
    embedder = Embedder(config)
    features = None
    for index in range(rank, num_shards, world_size):
        if paths[index].is_file():
            logger.info("rank %d: shard %d already done (%s)", rank, index, paths[index].name)
            continue
        shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
        features = features or embedder.features(ds.features)
        t0 = time.perf_counter()
        shard.map(
            embedder, batched=True, batch_size=args.map_batch_size, features=features,
            cache_file_name=str(paths[index]), desc=f"rank {rank} shard {index + 1}/{num_shards}",
        )
        logger.info("rank %d: shard %d (%d rows) in %.1fs", rank, index, len(shard), time.perf_counter() - t0)
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"Shards {missing} are missing after all processes finished; run the same command again to finish them.")
    # memory-mapped, zero-copy: the merge costs one write of the output
    merged = datasets.concatenate_datasets([datasets.Dataset.from_file(str(p)) for p in paths])
    if len(merged) != len(ds):
        raise RuntimeError(f"Merged {len(merged)} rows but the input has {len(ds)}; delete {shard_dir} and run again.")
    io.save(merged, output)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if not args.keep_shards:
        import shutil

        shutil.rmtree(_shard_dir(output), ignore_errors=True)
    logger.info("Wrote %d embedded rows to %s", len(merged), output)
    return output


def parse_args(argv: Sequence[str] | None = None) -> tuple[ShardedEmbeddingArguments, EmbeddingConfig]:
    """Parse flags; ``--config file.yaml`` sets the same options (flags given too win over the file)."""
    from trl import TrlParser

    parser = TrlParser((ShardedEmbeddingArguments, EmbeddingConfig), prog="python -m ds2_hf.embedding")
    run_args, emb_cfg = parser.parse_args_and_config(args=argv)
    return run_args, emb_cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ds2_hf.embedding`` and ``accelerate launch -m ds2_hf.embedding``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_args, cfg = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch
        from accelerate import PartialState

        accelerator = getattr(torch, "accelerator", None)
        has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
        # Without cpu=True accelerate treats a torchrun launch on a CPU-only machine as one process.
        state = PartialState(cpu=cfg.device == "cpu" or not has_accelerator)
        if cfg.device is None and state.device.type != "cpu":
            cfg = replace(cfg, device=str(state.device))
        out = embed_sharded(
            run_args, cfg, rank=state.process_index, world_size=state.num_processes, barrier=state.wait_for_everyone
        )
    else:
        out = embed_sharded(run_args, cfg)
    if out is not None:
        print(f"embedded dataset: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
