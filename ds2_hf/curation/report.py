"""`CurationReport`: everything a curation run estimated and decided, JSON round-trippable.

    >>> report = CurationReport.from_json(report.to_json())
    >>> report.transition_matrix        # T[i, j] = P(rated j | true i), a K x K numpy array
    >>> print(report.summary())
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class CurationReport:
    """What `ds2_hf.curate` estimated and changed.

    Matrices are stored as nested lists so the report is plain JSON; the properties return numpy.
    ``transition_counts[i][j]`` counts rows whose raw score is ``i`` and curated score is ``j``.
    """

    num_classes: int
    n_rows: int
    n_scored: int
    n_null: int
    n_flagged: int
    n_changed: int
    T: list[list[float]]
    p: list[float]
    noise_rates: list[float]
    class_counts: list[int]
    transition_counts: list[list[int]]
    params: dict[str, Any]
    seed: int
    knn: dict[str, Any]
    detection: dict[str, Any] = field(default_factory=dict)
    hoc: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    version: str = "1"

    @property
    def transition_matrix(self) -> np.ndarray:
        return np.asarray(self.T, dtype=np.float64)

    @property
    def prior(self) -> np.ndarray:
        return np.asarray(self.p, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CurationReport":
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "CurationReport":
        """Load from a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """A short human-readable account: counts, noise rates and T."""
        k = self.num_classes
        lines = [
            f"rows {self.n_rows}: scored {self.n_scored}, failed/null {self.n_null}",
            f"flagged {self.n_flagged}, changed {self.n_changed} (tau={self.params.get('tau')})",
            f"k-NN: {self.knn.get('method')} (recall@{self.knn.get('k')}: {self.knn.get('recall')})",
            "noise rate per rated class: " + ", ".join(f"{c}:{r:.2f}" for c, r in enumerate(self.noise_rates)),
            "T (rows: true score, columns: rated score):",
            "      " + " ".join(f"{j:>6d}" for j in range(k)),
        ]
        for i, row in enumerate(self.T):
            lines.append(f"  {i:>3d} " + " ".join(f"{v:6.3f}" for v in row))
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)
