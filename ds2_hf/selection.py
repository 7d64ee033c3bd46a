"""`select`: pick a budgeted subset with DS2's ordering or one of the paper's baselines.

    >>> import ds2_hf
    >>> subset = ds2_hf.select(curated, budget=10_000, strategy="ds2")
    >>> subset = ds2_hf.select(curated, budget_tokens=5_000_000, tokenizer="meta-llama/Llama-3.1-8B")
    >>> subset = ds2_hf.select(curated, budget=10_000, by="source")        # proportional per-source quotas

Strategies (every one is deterministic given ``seed``):

========== =====================================================================================
ds2        curated_score desc, then longtail_score desc (needs `ds2_hf.curate` output)
raw        the same on the raw score (DS2 without curation)
random     a seeded random permutation
alpagasus  rows with raw score >= ``threshold`` in seeded random order, then the rest (random fill)
deita      raw score order; skip a row whose cosine similarity to an already selected row exceeds
           ``max_cosine_similarity`` (needs embeddings)
longtail   longtail_score desc ("KNN" baseline)
length     longest responses first (``length_column``, else response tokens with ``tokenizer``,
           else response characters)
full       every row, in dataset order; the budget is ignored
========== =====================================================================================

Ties are broken by the row's position in the input dataset (earlier first), so equal keys keep
dataset order. Rows with a null score (failed ratings) are never selected, except by ``full``.
The subset comes back in selection order (best first). A token budget takes rows in that order
while the running total fits and stops at the first row that would overflow.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ds2_hf import text as text_mod

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

logger = logging.getLogger(__name__)

STRATEGIES = ("ds2", "raw", "random", "alpagasus", "deita", "longtail", "length", "full")


@dataclass
class SelectionConfig:
    """Parameters of `select`; see the module docstring for the strategies.

    Args:
        budget: number of rows (ignored when ``budget_tokens`` is set, and by ``full``).
        strategy: one of ``STRATEGIES``.
        budget_tokens: a token budget instead of a row budget (needs ``tokenizer`` or ``length_column``).
        tokenizer: tokenizer name or path, for token budgets and the ``length`` strategy.
        length_column: a column of per-row token counts (used for token budgets and ``length``).
        by: a column (e.g. "source") to split the budget across; ``quotas`` gives each value's share
            (fractions of the budget, or absolute counts); without ``quotas`` shares follow the pool.
        seed: seeds ``random`` and ``alpagasus``.
        threshold: AlpaGasus score threshold (on the 0..5 scale).
        max_cosine_similarity: DEITA diversity threshold.
    """

    budget: int | None = field(default=10_000, metadata={"help": "rows to select (ignored with budget_tokens, and by strategy full)"})
    strategy: str = field(default="ds2", metadata={"help": "ds2 | raw | random | alpagasus | deita | longtail | length | full"})
    budget_tokens: int | None = field(default=None, metadata={"help": "a token budget instead of a row budget (needs tokenizer or length_column)"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer name or path, for token budgets and the length strategy"})
    length_column: str | None = field(default=None, metadata={"help": "column of per-row token counts (token budgets, length strategy)"})
    by: str | None = field(default=None, metadata={"help": "column whose values split the budget (e.g. source); shares follow the pool unless quotas"})
    quotas: dict[str, float] | str | None = field(default=None, metadata={"help": "per-value shares of the budget (fractions) or absolute counts, e.g. {\"flan\": 0.5, \"dolly\": 0.5}"})
    seed: int = field(default=0, metadata={"help": "seed of random and alpagasus"})
    score_column: str = field(default="score", metadata={"help": "raw score column (null rows are never selected)"})
    curated_column: str = field(default="curated_score", metadata={"help": "curated score column written by ds2_hf.curate"})
    longtail_column: str = field(default="longtail_score", metadata={"help": "long-tail score column written by ds2_hf.curate"})
    embedding_column: str = field(default="embedding", metadata={"help": "embedding column (deita)"})
    threshold: int = field(default=4, metadata={"help": "alpagasus: minimum raw score (0..5)"})
    max_cosine_similarity: float = field(default=0.9, metadata={"help": "deita: skip a row more similar than this to an already selected row"})

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.strategy != "full" and self.budget is None and self.budget_tokens is None:
            raise ValueError("Give a budget (rows) or budget_tokens")
        if self.budget is not None and self.budget < 0 or self.budget_tokens is not None and self.budget_tokens < 0:
            raise ValueError("Budgets must be >= 0")
        if isinstance(self.quotas, str):
            import json

            try:
                self.quotas = json.loads(self.quotas)
            except json.JSONDecodeError as err:
                raise ValueError(f"quotas must be a JSON object such as '{{\"flan\": 0.5}}', got {self.quotas!r}") from err
        if self.quotas is not None and self.by is None:
            raise ValueError("quotas need by= (the column whose values the quotas name)")


@dataclass
class Selection:
    """Which rows were selected (positions in the input dataset, selection order) and why."""

    indices: np.ndarray
    strategy: str
    pool_size: int
    excluded_null: int
    tokens: int | None = None
    per_group: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["indices"] = None
        out["selected"] = len(self.indices)
        return out


def _numpy_column(ds: "Dataset", name: str, what: str) -> np.ndarray:
    if name not in ds.column_names:
        raise ValueError(f"Strategy needs the {what} column {name!r}; columns are {ds.column_names}")
    import pyarrow as pa

    from ds2_hf.io import arrow_column

    col = arrow_column(ds, name)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        return col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    return np.asarray(col.to_pylist(), dtype=object)


def _descending(primary: np.ndarray, rows: np.ndarray, secondary: np.ndarray | None = None) -> np.ndarray:
    keys = [rows]
    if secondary is not None:
        keys.append(-secondary[rows])
    keys.append(-primary[rows])
    return rows[np.lexsort(tuple(keys))]


def _tokenizer(tok: Any) -> Any:
    if tok is None or not isinstance(tok, str):
        return tok
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok)


def _text_lengths(ds: "Dataset", tokenizer: Any, response_only: bool) -> np.ndarray:
    fmt = text_mod.detect_format(ds.column_names)
    cols = [c for c in ds.column_names if c in ("messages", "instruction", "input", "output", "prompt", "completion")]
    out = np.zeros(len(ds), dtype=np.int64)
    start = 0
    batch_fn = text_mod.response_text_batch if response_only else text_mod.serialize_batch
    for batch in ds.select_columns(cols).iter(batch_size=1000):
        texts = batch_fn(batch, fmt)
        if tokenizer is None:
            lengths = [len(t) for t in texts]
        else:
            lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        out[start : start + len(texts)] = lengths
        start += len(texts)
    return out


def _deita_order(order: np.ndarray, emb: np.ndarray, threshold: float, chunk: int = 1024) -> Iterator[np.ndarray]:
    """Yield accepted rows of ``order`` in chunks: a row is skipped when its cosine similarity to any
    already accepted row exceeds ``threshold``."""
    accepted = np.empty((0, emb.shape[1]), dtype=np.float32)
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        vecs = emb[rows]
        keep = np.ones(len(rows), dtype=bool)
        if len(accepted):
            keep &= (vecs @ accepted.T).max(axis=1) <= threshold
        inner = vecs @ vecs.T
        taken: list[int] = []
        for i in np.flatnonzero(keep):
            if taken and inner[i, taken].max() > threshold:
                continue
            taken.append(int(i))
        if taken:
            accepted = np.concatenate([accepted, vecs[taken]])
            yield rows[taken]


def _take(chunks: Iterator[np.ndarray] | np.ndarray, budget: int | None, budget_tokens: int | None, lengths: np.ndarray | None) -> np.ndarray:
    """Consume a ranking (an array or chunks of one) up to the row or token budget."""
    if isinstance(chunks, np.ndarray):
        chunks = iter([chunks])
    picked: list[np.ndarray] = []
    count, tokens = 0, 0
    for rows in chunks:
        if budget_tokens is not None:
            cum = tokens + np.cumsum(lengths[rows])
            fit = int(np.searchsorted(cum, budget_tokens, side="right"))
            picked.append(rows[:fit])
            if fit < len(rows):
                break
            tokens = int(cum[-1]) if len(cum) else tokens
        else:
            room = budget - count
            picked.append(rows[:room])
            count += min(room, len(rows))
            if count >= budget:
                break
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def _allocate(total: int, shares: dict[Any, float]) -> dict[Any, int]:
    """Split an integer total by shares with the largest-remainder method (ties: key order)."""
    weight = sum(shares.values())
    if weight <= 0:
        return {g: 0 for g in shares}
    exact = {g: total * s / weight for g, s in shares.items()}
    out = {g: math.floor(v) for g, v in exact.items()}
    rest = total - sum(out.values())
    for g in sorted(exact, key=lambda g: (out[g] - exact[g], str(g)))[:rest]:
        out[g] += 1
    return out


def select_indices(
    ds: "Dataset",
    config: SelectionConfig | None = None,
    *,
    tokenizer: Any = None,
    embeddings: np.ndarray | None = None,
    **kwargs: Any,
) -> Selection:
    """Compute which rows `select` returns (positions in ``ds``, best first) and a summary."""
    cfg = _config(config, kwargs)
    n = len(ds)
    rows = np.arange(n)
    warn: list[str] = []
    if cfg.strategy == "full":
        return Selection(rows, "full", n, 0, config=asdict(cfg))

    excluded = 0
    if cfg.score_column in ds.column_names:
        score = _numpy_column(ds, cfg.score_column, "score")
        ok = ~np.isnan(score)
        excluded = int((~ok).sum())
        rows = rows[ok]
    elif cfg.strategy in ("raw", "alpagasus", "deita", "ds2"):
        raise ValueError(f"Strategy {cfg.strategy!r} needs the score column {cfg.score_column!r}; columns are {ds.column_names}")

    tok = _tokenizer(tokenizer if tokenizer is not None else cfg.tokenizer)
    lengths = None
    if cfg.budget_tokens is not None:
        if cfg.length_column:
            lengths = np.nan_to_num(_numpy_column(ds, cfg.length_column, "length")).astype(np.int64)
        elif tok is not None:
            lengths = _text_lengths(ds, tok, response_only=False)
        else:
            raise ValueError("budget_tokens needs a tokenizer (name or object) or a length_column of token counts")

    rng = np.random.default_rng(cfg.seed)
    strategy = cfg.strategy
    # Every column a strategy needs is read once, before any ranking.
    if strategy == "ds2":
        curated = _numpy_column(ds, cfg.curated_column, "curated score (run ds2_hf.curate first)")
        longtail = _numpy_column(ds, cfg.longtail_column, "long-tail score (run ds2_hf.curate first)")
        rows = rows[~np.isnan(curated[rows])]
    elif strategy == "longtail":
        longtail = _numpy_column(ds, cfg.longtail_column, "long-tail score (run ds2_hf.curate first)")
    elif strategy == "raw":
        longtail = _numpy_column(ds, cfg.longtail_column, "long-tail") if cfg.longtail_column in ds.column_names else None
    elif strategy == "length":
        if cfg.length_column:
            length_key = np.nan_to_num(_numpy_column(ds, cfg.length_column, "length")).astype(np.float64)
        else:
            length_key = _text_lengths(ds, tok, response_only=True).astype(np.float64)
    elif strategy == "deita":
        from ds2_hf.curation.api import read_embeddings, validate_embeddings

        raw_emb = read_embeddings(ds, cfg.embedding_column) if embeddings is None else embeddings
        emb = validate_embeddings(raw_emb, n, column=cfg.embedding_column)

    def order(pool: np.ndarray) -> np.ndarray:
        """The strategy's ranking of ``pool`` before any diversity filter."""
        if strategy == "ds2":
            return _descending(curated, pool, longtail)
        if strategy in ("raw", "deita"):
            return _descending(score, pool, longtail if strategy == "raw" else None)
        if strategy == "random":
            return rng.permutation(pool)
        if strategy == "alpagasus":
            high = score[pool] >= cfg.threshold
            return np.concatenate([rng.permutation(pool[high]), rng.permutation(pool[~high])])
        if strategy == "longtail":
            return _descending(longtail, pool)
        if strategy == "length":
            return _descending(length_key, pool)
        raise AssertionError(strategy)

    def rank(pool: np.ndarray) -> Iterator[np.ndarray] | np.ndarray:
        ranked = order(pool)
        return _deita_order(ranked, emb, cfg.max_cosine_similarity) if strategy == "deita" else ranked

    per_group: dict[str, int] = {}
    if cfg.by is None:
        picked = _take(rank(rows), cfg.budget, cfg.budget_tokens, lengths)
    else:
        groups = _numpy_column(ds, cfg.by, "group")
        keys = [str(g) for g in groups[rows]]
        uniq = sorted(set(keys))
        members = {g: rows[np.asarray(keys) == g] for g in uniq}
        total = cfg.budget_tokens if cfg.budget_tokens is not None else cfg.budget
        if cfg.quotas is None:
            shares = {g: float(len(members[g])) for g in uniq}
            alloc = _allocate(total, shares)
        else:
            unknown = set(map(str, cfg.quotas)) - set(uniq)
            if unknown:
                raise ValueError(f"quotas name values {sorted(unknown)} that column {cfg.by!r} does not hold; it holds {uniq}")
            quotas = {str(g): q for g, q in cfg.quotas.items()}
            if all(0 <= q <= 1 for q in quotas.values()) and any(isinstance(q, float) for q in quotas.values()):
                alloc = {g: int(round(total * quotas.get(g, 0.0))) for g in uniq}
            else:
                alloc = {g: int(quotas.get(g, 0)) for g in uniq}
        parts = []
        for g in uniq:
            tb = alloc[g] if cfg.budget_tokens is not None else None
            rb = alloc[g] if cfg.budget_tokens is None else None
            got = _take(rank(members[g]), rb, tb, lengths)
            parts.append(got)
            per_group[g] = len(got)
            short = alloc[g] - (len(got) if tb is None else int(lengths[got].sum()))
            if short > 0 and (tb is None or len(got) == len(members[g])):
                warn.append(f"group {g!r} filled {alloc[g] - short} of its quota {alloc[g]}")
        picked = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        # One selection order across groups: the strategy's ranking of the whole pool (for deita its
        # score order: re-running the diversity filter over the whole pool would cost far more).
        base = order(rows)
        position = np.full(n, len(base), dtype=np.int64)
        position[base] = np.arange(len(base))
        picked = picked[np.argsort(position[picked], kind="stable")]
    target = sum(alloc.values()) if cfg.by is not None else cfg.budget
    if cfg.budget_tokens is None and len(picked) < (target or 0):
        warn.append(f"selected {len(picked)} rows, fewer than the budget {target}")
    for w in warn:
        warnings.warn(w, stacklevel=3)
    return Selection(
        indices=picked.astype(np.int64),
        strategy=strategy,
        pool_size=len(rows),
        excluded_null=excluded,
        tokens=int(lengths[picked].sum()) if lengths is not None else None,
        per_group=per_group,
        warnings=warn,
        config=asdict(cfg),
    )


def _config(config: SelectionConfig | None, overrides: dict[str, Any]) -> SelectionConfig:
    known = {f.name for f in fields(SelectionConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"Unknown selection option(s) {sorted(unknown)}; see SelectionConfig")
    if config is None:
        return SelectionConfig(**overrides)
    return SelectionConfig(**{**asdict(config), **overrides}) if overrides else config


def select(
    ds: "Dataset",
    budget: int | None = 10_000,
    strategy: str = "ds2",
    *,
    config: SelectionConfig | None = None,
    tokenizer: Any = None,
    embeddings: np.ndarray | None = None,
    **kwargs: Any,
) -> "Dataset":
    """Return the selected rows of ``ds`` as a `Dataset`, best first (see the module docstring).

    >>> subset = select(curated, budget=10_000, strategy="ds2")
    >>> subset = select(curated, budget=1_000, strategy="deita", max_cosine_similarity=0.9)
    """
    if config is None:
        kwargs = {"budget": budget, "strategy": strategy, **kwargs}
    selection = select_indices(ds, config, tokenizer=tokenizer, embeddings=embeddings, **kwargs)
    logger.info(
        "Selected %d of %d rows with %s (%d rows without a score excluded)",
        len(selection.indices), len(ds), selection.strategy, selection.excluded_null,
    )
    return ds.select(selection.indices)
