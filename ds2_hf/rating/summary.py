"""What a rated dataset holds: rated vs failed rows, failures by reason, the score histogram.

Unlike `Rater.stats` (one process's work), this reads the output columns, so it is right however
the dataset was made (``num_proc``, a `datasets` cache hit, several runs).

    >>> counts = rating_counts(rated)
    >>> print(counts.summary())
    rows 1000: rated 988, failed 12 (missing_keys 9, request_failed 3); score histogram {0: 80, 1: 230, ...}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RatingCounts", "rating_counts"]


@dataclass
class RatingCounts:
    rows: int
    rated: int
    failed: int
    failures: dict[str, int] = field(default_factory=dict)
    score_histogram: dict[int, int] = field(default_factory=dict)

    @property
    def failure_rate(self) -> float:
        return self.failed / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rated": self.rated,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 4),
            "failures": dict(self.failures),
            "score_histogram": {str(k): v for k, v in self.score_histogram.items()},
        }

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items(), key=lambda kv: -kv[1])) or "none"
        return (
            f"rows {self.rows}: rated {self.rated}, failed {self.failed} ({reasons}); "
            f"score histogram {dict(sorted(self.score_histogram.items()))}"
        )


def rating_counts(ds: Any, score_column: str = "score", error_column: str = "rating_error") -> RatingCounts:
    """Count a rated `datasets.Dataset` (or any mapping of columns) by outcome."""
    missing = [c for c in (score_column, error_column) if c not in ds.column_names]
    if missing:
        raise ValueError(f"{missing} not in columns {ds.column_names}; rate the dataset first (ds.map(ds2_hf.rate(...)))")
    errors = list(ds[error_column])
    scores = list(ds[score_column])
    failures = Counter(str(e).split(":", 1)[0] for e in errors if e is not None)
    histogram = Counter(int(s) for s, e in zip(scores, errors) if s is not None and e is None)
    failed = sum(failures.values())
    return RatingCounts(
        rows=len(errors), rated=len(errors) - failed, failed=failed, failures=dict(failures), score_histogram=dict(histogram)
    )
