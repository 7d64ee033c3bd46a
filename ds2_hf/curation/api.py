"""`curate`: add DS2's curated score and long-tail score to a rated, embedded `datasets.Dataset`.

    >>> import ds2_hf
    >>> curated, report = ds2_hf.curate(ds, score_column="score", embedding_column="embedding")
    >>> curated.column_names[-4:]
    ['curated_score', 'curation_confidence', 'score_flagged', 'longtail_score']
    >>> print(report.summary())

Columns added (every original row and column is kept, in the dataset's current row order):

- ``curated_score`` (int64, null where the score is null): the score after replacing confidently
  wrong ratings;
- ``curation_confidence`` (float32, null where the score is null): suggestion probability x flag
  rate of the best alternative score;
- ``score_flagged`` (bool, null where the score is null): the detector judged the score wrong
  (flag rate > 0.5), whether or not it was confident enough to replace it;
- ``longtail_score`` (float32, every row): tanh(mean cosine distance to the k nearest others / 2).

Rows whose score is null (failed ratings) take no part in estimation or detection and are counted in
the report. Running `curate` on its own output replaces these four columns.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ds2_hf.curation.detection import curated_scores, detect, noise_rates
from ds2_hf.curation.knn import EXACT_MAX_ROWS, NeighborIndex
from ds2_hf.curation.longtail import longtail_from_distances
from ds2_hf.curation.report import CurationReport
from ds2_hf.curation.transition import estimate_transition
from ds2_hf.io import arrow_column

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("curated_score", "curation_confidence", "score_flagged", "longtail_score")


@dataclass
class CurationConfig:
    """Parameters of `curate`; defaults are the authors' settings (see DS2_SPEC.md §3).

    Args:
        score_column: rated scores 0..num_classes-1 (null = failed rating).
        embedding_column: list/array column of embeddings (ignored when `embeddings=` is passed).
        num_classes: number of score classes K.
        k: neighbours for the long-tail score (k other samples) and the detection vote (the sample
            itself plus k - 1 others).
        tau: confidence needed to replace a score judged wrong.
        seed: seeds every random choice; the same seed gives the same output.
        hoc_rounds / hoc_sample_size: subsamples used to count consensus patterns for T.
        hoc_steps / hoc_lr: Adam steps and learning rate of the T fit.
        epochs / sample_size: detection subsamples.
        min_draws: extra detection epochs are run until every scored row was drawn this often.
        knn_method: "auto" (exact up to `exact_max_rows` rows, IVF above), "exact" or "ivf".
        nlist / nprobe / target_recall / recall_queries: IVF settings; nprobe is tuned until the
            recall@k measured on `recall_queries` sample queries reaches `target_recall`.
        expected_dim: if set, embeddings of another width are an error.
    """

    score_column: str = field(default="score", metadata={"help": "column of rated scores 0..num_classes-1 (null = failed rating)"})
    embedding_column: str = field(default="embedding", metadata={"help": "column of embeddings (lists of floats, one per row)"})
    num_classes: int = field(default=6, metadata={"help": "number of score classes K"})
    k: int = field(default=10, metadata={"help": "neighbours for the long-tail score and the detection vote (itself + k-1 others)"})
    tau: float = field(default=0.5, metadata={"help": "confidence needed to replace a score judged wrong (authors: 0.5; 0.4 for a LLaMA rater)"})
    seed: int = field(default=0, metadata={"help": "seed of every random choice; the same seed gives the same output"})
    hoc_rounds: int = field(default=50, metadata={"help": "subsamples whose consensus patterns estimate T"})
    hoc_sample_size: int = field(default=50_000, metadata={"help": "rows per HOC subsample"})
    hoc_steps: int = field(default=1500, metadata={"help": "Adam steps of the T fit"})
    hoc_lr: float = field(default=0.1, metadata={"help": "Adam learning rate of the T fit"})
    epochs: int = field(default=51, metadata={"help": "detection subsamples"})
    sample_size: int = field(default=50_000, metadata={"help": "rows per detection subsample"})
    min_draws: int = field(default=10, metadata={"help": "run extra detection epochs until every scored row was drawn this often (below 6 draws no score can reach tau=0.5)"})
    knn_method: str = field(default="auto", metadata={"help": "auto (exact up to exact_max_rows rows, IVF above), exact or ivf"})
    exact_max_rows: int = field(default=EXACT_MAX_ROWS, metadata={"help": "largest pool searched exactly under knn_method=auto"})
    nlist: int | None = field(default=None, metadata={"help": "IVF cells (default about 2*sqrt(rows))"})
    nprobe: int | None = field(default=None, metadata={"help": "IVF cells probed per cell (default: raised until target_recall is measured)"})
    target_recall: float = field(default=0.97, metadata={"help": "IVF recall@k to reach, measured against exact search on sample queries"})
    recall_queries: int = field(default=1000, metadata={"help": "sample queries for the recall measurement"})
    expected_dim: int | None = field(default=None, metadata={"help": "if set, embeddings of another width are an error"})

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.k < 3:
            raise ValueError(f"k must be >= 3 (detection uses the 1st and 2nd neighbour distances), got {self.k}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        if self.knn_method not in ("auto", "exact", "ivf"):
            raise ValueError(f"knn_method must be 'auto', 'exact' or 'ivf', got {self.knn_method!r}")
        for name in ("hoc_rounds", "hoc_sample_size", "epochs", "sample_size", "hoc_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class CurationResult:
    """Per-row arrays from `curate_arrays` (row order of the input)."""

    curated_score: np.ndarray  # int64, -1 where the score is null
    curation_confidence: np.ndarray  # float32, NaN where the score is null
    score_flagged: np.ndarray  # bool
    longtail_score: np.ndarray  # float32
    valid: np.ndarray  # bool: the row had a score
    report: CurationReport


def validate_embeddings(embeddings: np.ndarray, n_rows: int, expected_dim: int | None = None, column: str = "embedding") -> np.ndarray:
    """Check shape and values and return unit-norm float32 rows; errors name the first bad row."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"Embeddings in {column!r} must be a 2-D array (rows x dim), got shape {emb.shape}")
    if emb.shape[0] != n_rows:
        raise ValueError(f"Got {emb.shape[0]} embeddings for {n_rows} rows; pass one embedding per row")
    if expected_dim is not None and emb.shape[1] != expected_dim:
        raise ValueError(f"Embeddings in {column!r} have dimension {emb.shape[1]}, expected {expected_dim}")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    # Checked in blocks: a full-size boolean/temporary matrix would cost a quarter of the data again.
    norms = np.empty(len(emb), dtype=np.float32)
    for start in range(0, len(emb), 65_536):
        block = emb[start : start + 65_536]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad = start + np.flatnonzero(~finite)
            raise ValueError(
                f"Embedding of row {bad[0]} in {column!r} contains NaN or inf; re-embed that row or drop it "
                "with ds.select(...) or ds.filter(...)"
            )
        norms[start : start + len(block)] = np.linalg.norm(block, axis=1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms == 0)
        raise ValueError(f"Embedding of row {bad[0]} in {column!r} is all zeros ({len(bad)} rows); re-embed them")
    if not np.allclose(norms, 1.0, atol=1e-3):
        emb = emb / norms[:, None]
    return emb


def validate_scores(scores: np.ndarray, num_classes: int, column: str = "score") -> np.ndarray:
    """Integer scores in 0..num_classes-1 with -1 for null; NaN (float input) also means null."""
    s = np.asarray(scores)
    if s.dtype.kind == "f":
        null = np.isnan(s)
        bad = ~null & (s != np.round(s))
        if bad.any():
            row = np.flatnonzero(bad)[0]
            raise ValueError(f"Score {s[row]} in {column!r} at row {row} is not an integer; scores are classes 0..{num_classes - 1}")
        s = np.where(null, -1, s).astype(np.int64)
    elif s.dtype.kind in "iu":
        s = s.astype(np.int64)
    else:
        raise ValueError(f"Column {column!r} must hold integer scores, got dtype {s.dtype}")
    out_of_range = (s < -1) | (s >= num_classes)
    if out_of_range.any():
        row = np.flatnonzero(out_of_range)[0]
        raise ValueError(
            f"Score {s[row]} in {column!r} at row {row} is outside 0..{num_classes - 1}; compress ratings with "
            f"ds2_hf's rater (clip(overall, 4, 9) - 4) or set num_classes"
        )
    return s


def curate_arrays(embeddings: np.ndarray, scores: np.ndarray, config: CurationConfig | None = None, **kwargs: Any) -> CurationResult:
    """Curate scores given as arrays: ``embeddings`` (n, d) and ``scores`` (n,) with -1/NaN = null.

    >>> result = curate_arrays(emb, scores, tau=0.5)
    >>> result.curated_score, result.longtail_score, result.report.n_changed
    """
    cfg = _config(config, kwargs)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    s = validate_scores(scores, cfg.num_classes, cfg.score_column)
    emb = validate_embeddings(embeddings, len(s), cfg.expected_dim, cfg.embedding_column)
    n, K = len(s), cfg.num_classes
    valid = np.flatnonzero(s >= 0)
    if n <= cfg.k:
        raise ValueError(f"Curation needs more than k={cfg.k} rows, got {n}; lower k or add data")
    if len(valid) <= cfg.k:
        raise ValueError(
            f"Only {len(valid)} of {n} rows have a score (the rest failed rating); curation needs more than "
            f"k={cfg.k}. Re-run the rating for the failed rows."
        )
    timings["validate"] = time.perf_counter() - t0

    t = time.perf_counter()
    index = NeighborIndex(
        emb,
        cfg.knn_method,
        exact_max_rows=cfg.exact_max_rows,
        nlist=cfg.nlist,
        nprobe=cfg.nprobe,
        target_recall=cfg.target_recall,
        recall_k=cfg.k,
        recall_queries=cfg.recall_queries,
        seed=cfg.seed,
    )
    timings["knn_index"] = time.perf_counter() - t
    logger.info("curation: knn_index done in %.1fs", timings["knn_index"])

    t = time.perf_counter()
    _, dist = index.search(cfg.k)
    longtail = longtail_from_distances(dist)
    del dist
    timings["longtail"] = time.perf_counter() - t
    logger.info("curation: longtail done in %.1fs", timings["longtail"])

    if index.method == "ivf" and min(cfg.sample_size, cfg.hoc_sample_size) < len(valid):
        t = time.perf_counter()
        size = min(cfg.sample_size, len(valid))
        probe = np.sort(np.random.default_rng(cfg.seed + 2).choice(valid, size=size, replace=False))
        index.tune_for_members(cfg.k - 1, probe, cfg.recall_queries)
        timings["knn_subsample_tuning"] = time.perf_counter() - t

    class_counts = np.bincount(s[valid], minlength=K)
    warn: list[str] = []
    rng_hoc, rng_det = (np.random.default_rng(ss) for ss in np.random.SeedSequence(cfg.seed).spawn(2))
    if (class_counts > 0).sum() < 2:
        msg = (
            f"Every scored row has the same score ({int(s[valid][0])}): there is nothing to curate. "
            "curated_score = score, no row flagged, T = identity."
        )
        warnings.warn(msg, stacklevel=2)
        warn.append(msg)
        T, p = np.eye(K), class_counts / class_counts.sum()
        hoc_info: dict[str, Any] = {"skipped": "all scores equal"}
        det_info: dict[str, Any] = {"skipped": "all scores equal"}
        curated = s.copy()
        confidence = np.where(s >= 0, 0.0, np.nan).astype(np.float32)
        flagged = np.zeros(n, dtype=bool)
        rho = noise_rates(T, p)
    else:
        t = time.perf_counter()
        fit, hoc_info = estimate_transition(
            index, s, valid, num_classes=K, rounds=cfg.hoc_rounds, sample_size=cfg.hoc_sample_size,
            steps=cfg.hoc_steps, lr=cfg.hoc_lr, rng=rng_hoc, seed=cfg.seed,
        )
        T, p = fit.T, fit.p
        timings["transition"] = time.perf_counter() - t
        logger.info("curation: transition done in %.1fs", timings["transition"])
        t = time.perf_counter()
        det = detect(
            index, s, valid, T, p, num_classes=K, k=cfg.k, epochs=cfg.epochs,
            sample_size=cfg.sample_size, min_draws=cfg.min_draws, rng=rng_det,
        )
        timings["detection"] = time.perf_counter() - t
        logger.info("curation: detection done in %.1fs", timings["detection"])
        curated = curated_scores(s, det, cfg.tau)
        confidence = det.confidence.astype(np.float32)
        flagged = det.corrupted
        rho = det.noise_rates
        det_info = det.info
        reach = max_confidence(det_info["draws_min"], K)
        det_info["max_confidence_at_min_draws"] = round(reach, 4)
        if reach < cfg.tau:
            msg = (
                f"Some rows were drawn only {det_info['draws_min']} times: their confidence cannot exceed "
                f"{reach:.3f} < tau={cfg.tau}, so their scores can never change. Raise min_draws or epochs."
            )
            warnings.warn(msg, stacklevel=2)
            warn.append(msg)

    if index.method == "ivf":
        t = time.perf_counter()
        members = np.sort(np.random.default_rng(cfg.seed + 1).choice(valid, size=min(cfg.sample_size, len(valid)), replace=False))
        index.info.recall[f"subsample@{cfg.k - 1}"] = round(
            index.measure_recall(cfg.k - 1, members, cfg.recall_queries, salt=104_729), 4
        )
        timings["recall_check"] = time.perf_counter() - t
    knn = index.info.to_dict()
    knn["k"] = cfg.k
    if index.method == "exact":
        knn["recall"] = {f"global@{cfg.k}": 1.0}

    transition_counts = np.zeros((K, K), dtype=np.int64)
    np.add.at(transition_counts, (s[valid], curated[valid]), 1)
    timings["total"] = time.perf_counter() - t0
    report = CurationReport(
        num_classes=K,
        n_rows=n,
        n_scored=len(valid),
        n_null=n - len(valid),
        n_flagged=int(flagged[valid].sum()),
        n_changed=int((curated[valid] != s[valid]).sum()),
        T=np.round(T, 6).tolist(),
        p=np.round(p, 6).tolist(),
        noise_rates=np.round(rho, 6).tolist(),
        class_counts=class_counts.tolist(),
        transition_counts=transition_counts.tolist(),
        params=asdict(cfg),
        seed=cfg.seed,
        knn=knn,
        detection=det_info,
        hoc=hoc_info,
        timings={name: round(v, 4) for name, v in timings.items()},
        warnings=warn,
    )
    is_valid = s >= 0
    return CurationResult(
        curated_score=np.where(is_valid, curated, -1),
        curation_confidence=np.where(is_valid, confidence, np.nan).astype(np.float32),
        score_flagged=flagged & is_valid,
        longtail_score=longtail,
        valid=is_valid,
        report=report,
    )


def max_confidence(draws: int, num_classes: int) -> float:
    """The highest confidence a row drawn ``draws`` times can reach (flagged and given the same
    suggestion every time): ((d+1)/(d+2)) * ((d+1)/(d+K)), from the smoothed flag rate and
    suggestion distribution."""
    return (draws + 1) / (draws + 2) * (draws + 1) / (draws + num_classes)


def _config(config: CurationConfig | None, overrides: dict[str, Any]) -> CurationConfig:
    if config is None:
        return CurationConfig(**overrides)
    if overrides:
        known = {f.name for f in fields(CurationConfig)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"Unknown curation option(s) {sorted(unknown)}; see CurationConfig")
        return CurationConfig(**{**asdict(config), **overrides})
    return config


def read_embeddings(ds: "Dataset", column: str) -> np.ndarray:
    """An (n, d) float32 matrix from a list/array column, read through Arrow (seconds for 300k x 1024)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in ds.column_names:
        raise ValueError(
            f"Embedding column {column!r} not found; columns are {ds.column_names}. Embed with "
            "ds.map(ds2_hf.embed(...), batched=True), name the column with embedding_column=, or pass embeddings="
        )
    arr = arrow_column(ds, column)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)):
        raise ValueError(f"Column {column!r} must hold lists of floats (one embedding per row), got type {arr.type}")
    if arr.null_count:
        row = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]
        raise ValueError(f"Row {row} has no embedding in {column!r} ({arr.null_count} rows); embed or drop them")
    if pa.types.is_fixed_size_list(arr.type):
        dim = arr.type.list_size
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        dim = int(lengths[0]) if len(lengths) else 0
        if (lengths != dim).any():
            row = np.flatnonzero(lengths != dim)[0]
            raise ValueError(f"Embedding of row {row} in {column!r} has dimension {lengths[row]}, expected {dim} like row 0")
    values = arr.flatten()
    if not pa.types.is_floating(values.type) and not pa.types.is_integer(values.type):
        raise ValueError(f"Column {column!r} must hold numbers, got {values.type}")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(arr), dim)


def read_scores(ds: "Dataset", column: str) -> np.ndarray:
    """Scores as int64 with -1 for null (a failed rating)."""
    import pyarrow as pa

    if column not in ds.column_names:
        raise ValueError(
            f"Score column {column!r} not found; columns are {ds.column_names}. Rate with "
            "ds.map(ds2_hf.rate(...), batched=True) or name the column with score_column="
        )
    arr = arrow_column(ds, column)
    if pa.types.is_floating(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_integer(arr.type):
        return arr.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_null(arr.type):
        return np.full(len(arr), -1, dtype=np.int64)
    raise ValueError(f"Score column {column!r} must hold integers 0..K-1 (null for failed ratings), got type {arr.type}")


def curate(
    ds: "Dataset",
    config: CurationConfig | None = None,
    *,
    embeddings: np.ndarray | None = None,
    **kwargs: Any,
) -> tuple["Dataset", CurationReport]:
    """Add ``curated_score``, ``curation_confidence``, ``score_flagged`` and ``longtail_score``.

    Args:
        ds: a `datasets.Dataset` with a score column and an embedding column (or pass ``embeddings``);
            an indices mapping (after ``select``/``shuffle``) is fine.
        config: a `CurationConfig`; keyword arguments override its fields (``k=``, ``tau=``, ...).
        embeddings: an (n, d) array aligned with the dataset's rows, instead of a column.

    Returns:
        ``(curated_dataset, report)``.

    >>> curated, report = curate(ds, score_column="score", k=10, tau=0.5, seed=0)
    """
    import pyarrow as pa
    from datasets import Value

    cfg = _config(config, kwargs)
    if len(ds) == 0:
        raise ValueError("The dataset is empty; nothing to curate")
    scores = read_scores(ds, cfg.score_column)
    if embeddings is None:
        emb = read_embeddings(ds, cfg.embedding_column)
    else:
        emb = np.asarray(embeddings)
    result = curate_arrays(emb, scores, cfg)
    del emb
    valid = result.valid
    existing = [c for c in OUTPUT_COLUMNS if c in ds.column_names]
    if cfg.score_column in existing:
        raise ValueError(f"score_column {cfg.score_column!r} is one of the output columns; rename it first")
    if existing:
        logger.info("Replacing existing columns %s", existing)
        ds = ds.remove_columns(existing)
    columns = {
        "curated_score": (pa.array(result.curated_score, mask=~valid, type=pa.int64()), Value("int64")),
        "curation_confidence": (pa.array(result.curation_confidence, mask=~valid, type=pa.float32()), Value("float32")),
        "score_flagged": (pa.array(result.score_flagged, mask=~valid, type=pa.bool_()), Value("bool")),
        "longtail_score": (pa.array(result.longtail_score, type=pa.float32()), Value("float32")),
    }
    for name, (column, feature) in columns.items():
        ds = ds.add_column(name, column, feature=feature)
    return ds, result.report
