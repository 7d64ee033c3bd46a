"""The report's PNG figures, drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state).

Each function takes plain numbers, writes one PNG and returns its path, so the figures can be
redrawn from a finished run's files and reused in a dataset card.

    >>> from ds2_hf.report.figures import transition_heatmap
    >>> transition_heatmap(report.transition_matrix, "figures/transition_matrix.png")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

DPI = 110
RAW_COLOR = "#9aa5b1"
CURATED_COLOR = "#1f6feb"
SELECTED_COLOR = "#d9480f"


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", facecolor="white")
    return path


def score_histograms(raw: np.ndarray, curated: np.ndarray, path: str | os.PathLike, num_classes: int = 6) -> Path:
    """Side-by-side bars: how many rows have each raw score and each curated score (nulls left out)."""
    classes = np.arange(num_classes)
    raw_counts = np.bincount(raw[raw >= 0].astype(np.int64), minlength=num_classes)[:num_classes]
    cur_counts = np.bincount(curated[curated >= 0].astype(np.int64), minlength=num_classes)[:num_classes]
    fig = _figure()
    ax = fig.add_subplot()
    width = 0.4
    ax.bar(classes - width / 2, raw_counts, width, label="raw (rater)", color=RAW_COLOR)
    ax.bar(classes + width / 2, cur_counts, width, label="curated", color=CURATED_COLOR)
    for x, (r, c) in enumerate(zip(raw_counts, cur_counts)):
        ax.annotate(str(int(r)), (x - width / 2, r), ha="center", va="bottom", fontsize=7)
        ax.annotate(str(int(c)), (x + width / 2, c), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(classes)
    ax.set_xlabel("score")
    ax.set_ylabel("rows")
    ax.set_title("Raw vs curated scores")
    ax.legend()
    return _save(fig, path)


def transition_heatmap(T: np.ndarray, path: str | os.PathLike, title: str = "Estimated transition matrix T") -> Path:
    """Heatmap of ``T[i, j] = P(rated j | true i)`` with the value in every cell."""
    T = np.asarray(T, dtype=np.float64)
    k = T.shape[0]
    fig = _figure(5.2, 4.4)
    ax = fig.add_subplot()
    im = ax.imshow(T, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(T.shape[1]):
            ax.text(j, i, f"{T[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if T[i, j] > 0.6 else "black")
    ax.set_xticks(range(T.shape[1]))
    ax.set_yticks(range(k))
    ax.set_xlabel("rated score j")
    ax.set_ylabel("true score i")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def longtail_distribution(longtail: np.ndarray, path: str | os.PathLike, selected: np.ndarray | None = None) -> Path:
    """Histogram of long-tail scores in the pool, and of the selected rows when given."""
    longtail = np.asarray(longtail, dtype=np.float64)
    longtail = longtail[np.isfinite(longtail)]
    fig = _figure()
    ax = fig.add_subplot()
    lo, hi = (float(longtail.min()), float(longtail.max())) if len(longtail) else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 31)
    ax.hist(longtail, bins=bins, color=RAW_COLOR, label=f"pool ({len(longtail)})")
    if selected is not None and len(selected):
        sel = np.asarray(selected, dtype=np.float64)
        ax.hist(sel[np.isfinite(sel)], bins=bins, color=SELECTED_COLOR, alpha=0.8, label=f"selected ({len(sel)})")
    ax.set_xlabel("long-tail score (higher = rarer)")
    ax.set_ylabel("rows")
    ax.set_title("Long-tail score distribution")
    ax.legend()
    return _save(fig, path)


def composition(pool: Mapping[str, int], selected: Mapping[str, int], path: str | os.PathLike,
                label: str = "source", max_groups: int = 20) -> Path:
    """Horizontal bars: each group's share of the pool and of the selected subset.

    Groups are ordered by their count in the subset, then in the pool; past ``max_groups`` the rest
    are summed into "(other)".
    """
    groups = sorted(set(pool) | set(selected), key=lambda g: (-selected.get(g, 0), -pool.get(g, 0), str(g)))
    pool = {g: pool.get(g, 0) for g in groups}
    if len(groups) > max_groups:
        keep, rest = groups[: max_groups - 1], groups[max_groups - 1:]
        pool = {**{g: pool[g] for g in keep}, "(other)": sum(pool[g] for g in rest)}
        selected = {**{g: selected.get(g, 0) for g in keep}, "(other)": sum(selected.get(g, 0) for g in rest)}
        groups = keep + ["(other)"]
    pool_total = max(sum(pool.values()), 1)
    sel_total = max(sum(selected.values()), 1)
    y = np.arange(len(groups))
    fig = _figure(6.4, max(2.6, 0.32 * len(groups) + 1.4))
    ax = fig.add_subplot()
    height = 0.4
    ax.barh(y - height / 2, [pool[g] / pool_total for g in groups], height, color=RAW_COLOR, label="pool")
    ax.barh(y + height / 2, [selected.get(g, 0) / sel_total for g in groups], height, color=SELECTED_COLOR, label="selected")
    ax.set_yticks(y)
    ax.set_yticklabels([str(g)[:40] for g in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of rows")
    ax.set_title(f"Selected subset composition by {label}")
    ax.legend(loc="lower right")
    return _save(fig, path)


def timings_chart(timings: Mapping[str, float], path: str | os.PathLike) -> Path:
    """Horizontal bars of seconds per stage."""
    names: Sequence[str] = list(timings)
    fig = _figure(6.4, max(2.2, 0.35 * len(names) + 1.2))
    ax = fig.add_subplot()
    values = [float(timings[n]) for n in names]
    ax.barh(range(len(names)), values, color=CURATED_COLOR)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.1f}s", (v, i), va="center", ha="left", fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("Time per stage")
    return _save(fig, path)
