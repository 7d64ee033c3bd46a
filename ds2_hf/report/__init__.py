"""The visual report of a DS2 run: ``report.html`` plus PNG figures, readable offline in any browser.

    >>> from ds2_hf.report import write_report
    >>> curated, curation = ds2_hf.curate(ds)
    >>> subset = ds2_hf.select(curated, budget=1000)
    >>> write_report(curated, curation, subset, timings={"rate": 812.0, "embed": 95.1}, out_dir="out/report")
    PosixPath('out/report/report.html')

The page shows raw vs curated score histograms, the estimated transition matrix, the long-tail score
distribution, the selected subset's composition by source, the samples whose score changed (text,
raw, curated, confidence), failure counts and timings. It has no scripts and links only its own
figures, so it opens from disk and can be uploaded next to a dataset.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["ReportConfig", "write_report", "FIGURES"]

# figure file name -> caption; the order is the page's order
FIGURES: dict[str, str] = {
    "score_histograms.png": "Raw vs curated scores",
    "transition_matrix.png": "Estimated transition matrix T[i, j] = P(rated j | true i)",
    "longtail_distribution.png": "Long-tail score distribution (pool and selected)",
    "composition.png": "Selected subset composition",
    "timings.png": "Time per stage",
}


@dataclass
class ReportConfig:
    """What the report reads and how much it shows."""

    score_column: str = field(default="score", metadata={"help": "raw (rater) score column"})
    source_column: str = field(default="source", metadata={"help": "column naming each row's source dataset, for the composition figure"})
    error_column: str = field(default="rating_error", metadata={"help": "column of rating failure reasons (null = rated)"})
    max_changed_rows: int = field(default=50, metadata={"help": "most changed-score samples listed (highest confidence first)"})
    text_chars: int = field(default=400, metadata={"help": "characters of each listed sample's text"})
    title: str = field(default="DS2 data selection report", metadata={"help": "page title"})


def _column(ds: Any, name: str, dtype: Any = np.float64, fill: float = np.nan) -> np.ndarray:
    import pyarrow as pa

    col = ds.select_columns([name]).with_format("arrow")[:].column(0).combine_chunks()
    if pa.types.is_boolean(col.type):
        col = col.cast(pa.int8())
    return col.cast(pa.float64()).fill_null(fill).to_numpy(zero_copy_only=False).astype(dtype)


def _scores(ds: Any, name: str) -> np.ndarray:
    return _column(ds, name, np.int64, -1) if name in ds.column_names else np.full(len(ds), -1, dtype=np.int64)


def _groups(ds: Any, name: str) -> Counter:
    return Counter("(none)" if v is None else str(v) for v in ds.select_columns([name])[name])


def _failures(ds: Any, cfg: ReportConfig, n_null: int) -> dict[str, Any]:
    if cfg.error_column in ds.column_names and cfg.score_column in ds.column_names:
        from ds2_hf.rating.summary import rating_counts

        counts = rating_counts(ds, cfg.score_column, cfg.error_column)
        return {"rows": counts.rows, "failed": counts.failed, "reasons": dict(counts.failures)}
    return {"rows": len(ds), "failed": n_null, "reasons": {"null score": n_null} if n_null else {}}


def _table(rows: list[list[Any]], header: list[str] | None = None, cls: str = "") -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _recall(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items())
    return str(value)


def _esc(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(value, default=str))
    return html.escape(str(value))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem} td,th{border:1px solid #d0d7de;padding:.25rem .5rem;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right} .figs{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;border:1px solid #d0d7de;padding:.5rem;background:#fff} figcaption{font-size:.8rem;color:#57606a}
figure img{max-width:520px;height:auto;display:block} pre.sample{white-space:pre-wrap;margin:0;font-size:.8rem;max-width:640px}
.warn{color:#9a6700}
"""


def write_report(
    curated: Any,
    curation: Any,
    selected: Any = None,
    *,
    out_dir: str | os.PathLike,
    timings: Mapping[str, float] | None = None,
    run_info: Mapping[str, Any] | None = None,
    config: ReportConfig | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/figures/*.png``; return the HTML path.

    Args:
        curated: the dataset `ds2_hf.curate` returned (score, curated_score, curation_confidence,
            score_flagged, longtail_score columns).
        curation: its `ds2_hf.curation.report.CurationReport`.
        selected: the selected subset (rows of ``curated``), or ``None``.
        timings: seconds per pipeline stage, e.g. ``{"rate": 812.0, "embed": 95.1}``.
        run_info: extra facts shown as a table (rater, embedder, budget...). Never put secrets here.
    """
    from ds2_hf.report import figures as figs
    from ds2_hf.text import serialize

    cfg = config or ReportConfig()
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    missing = [c for c in ("curated_score", "longtail_score") if c not in curated.column_names]
    if missing:
        raise ValueError(f"{missing} not in columns {curated.column_names}; pass the dataset ds2_hf.curate returned.")
    k = int(curation.num_classes)
    raw = _scores(curated, cfg.score_column)
    cur = _scores(curated, "curated_score")
    conf = _column(curated, "curation_confidence") if "curation_confidence" in curated.column_names else np.full(len(curated), np.nan)
    longtail = _column(curated, "longtail_score")
    timings = {str(s): float(t) for s, t in (timings or {}).items()}

    made: dict[str, Path] = {}
    made["score_histograms.png"] = figs.score_histograms(raw, cur, fig_dir / "score_histograms.png", k)
    made["transition_matrix.png"] = figs.transition_heatmap(curation.transition_matrix, fig_dir / "transition_matrix.png")
    sel_longtail = _column(selected, "longtail_score") if selected is not None and "longtail_score" in selected.column_names else None
    made["longtail_distribution.png"] = figs.longtail_distribution(longtail, fig_dir / "longtail_distribution.png", sel_longtail)
    composition_note = ""
    if selected is not None:
        if cfg.source_column in curated.column_names and cfg.source_column in selected.column_names:
            pool_groups, sel_groups, label = _groups(curated, cfg.source_column), _groups(selected, cfg.source_column), cfg.source_column
        else:
            composition_note = f"No {cfg.source_column!r} column: composition shown by curated score instead."
            pool_groups = Counter(f"score {s}" for s in cur.tolist() if s >= 0)
            sel_groups = Counter(f"score {s}" for s in _scores(selected, "curated_score").tolist() if s >= 0)
            label = "curated score"
        made["composition.png"] = figs.composition(pool_groups, sel_groups, fig_dir / "composition.png", label=label)
    if timings:
        made["timings.png"] = figs.timings_chart(timings, fig_dir / "timings.png")

    valid = raw >= 0
    changed = np.flatnonzero(valid & (cur != raw))
    changed = changed[np.argsort(-np.nan_to_num(conf[changed], nan=-1.0), kind="stable")]
    shown = changed[: cfg.max_changed_rows]
    failures = _failures(curated, cfg, int((~valid).sum()))

    summary = [
        ["rows", len(curated)],
        ["rated (score present)", int(valid.sum())],
        ["failed ratings", failures["failed"]],
        ["flagged as likely wrong", curation.n_flagged],
        ["scores changed by curation", curation.n_changed],
        ["selected", len(selected) if selected is not None else "—"],
        ["k / tau / seed", f"{curation.params.get('k')} / {curation.params.get('tau')} / {curation.seed}"],
        ["k-NN", f"{curation.knn.get('method')} (recall {_recall(curation.knn.get('recall'))})"],
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request, so no 404 in the console
        f"<title>{html.escape(cfg.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(cfg.title)}</h1>",
        "<h2>Summary</h2>",
        _table([[html.escape(str(a)), _esc(b)] for a, b in summary], cls="summary"),
    ]
    if run_info:
        parts += ["<h2>Run</h2>", _table([[html.escape(str(a)), _esc(b)] for a, b in run_info.items()], cls="run")]
    parts.append('<h2>Figures</h2><div class="figs">')
    for name, caption in FIGURES.items():
        if name in made:
            parts.append(
                f'<figure id="fig-{name[:-4]}"><img src="figures/{name}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</div>")
    if composition_note:
        parts.append(f'<p class="warn">{html.escape(composition_note)}</p>')

    T = curation.transition_matrix
    parts.append("<h2>Transition matrix</h2><p>Rows: true score i; columns: rated score j. "
                 "Prior p and per-class noise rates are the estimates curation used.</p>")
    parts.append(_table(
        [[f"<b>{i}</b>"] + [f"{v:.3f}" for v in row] + [f"{curation.p[i]:.3f}", f"{curation.noise_rates[i]:.3f}"]
         for i, row in enumerate(T.tolist())],
        ["true \\ rated"] + [str(j) for j in range(T.shape[1])] + ["p", "noise rate"], cls="matrix",
    ))
    counts = np.asarray(curation.transition_counts)
    parts.append("<p>Rows by raw score (rows) and curated score (columns):</p>")
    parts.append(_table([[f"<b>{i}</b>"] + [str(int(v)) for v in row] for i, row in enumerate(counts.tolist())],
                        ["raw \\ curated"] + [str(j) for j in range(counts.shape[1])], cls="counts"))

    parts.append("<h2>Failures</h2>")
    reasons = failures["reasons"]
    parts.append(_table([[html.escape(r), str(n)] for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
                        + [["<b>total</b>", f"<b>{failures['failed']}</b> of {failures['rows']}"]],
                        ["reason", "rows"], cls="failures"))

    parts.append(f"<h2>Samples whose score changed ({len(changed)})</h2>")
    if len(shown):
        rows = []
        subset = curated.select(shown.tolist())
        for pos, row in zip(shown.tolist(), subset):
            try:
                text = serialize(row)
            except ValueError:
                text = str({c: row[c] for c in row if c not in ("embedding",)})
            if len(text) > cfg.text_chars:
                text = text[: cfg.text_chars] + " …"
            rows.append([str(pos), f'<pre class="sample">{html.escape(text)}</pre>', str(int(raw[pos])),
                         str(int(cur[pos])), f"{conf[pos]:.3f}"])
        parts.append(_table(rows, ["row", "text", "raw", "curated", "confidence"], cls="changed"))
        if len(changed) > len(shown):
            parts.append(f"<p>{len(changed) - len(shown)} more not listed (lowest confidence).</p>")
    else:
        parts.append("<p>No score was changed.</p>")

    parts.append("<h2>Timings</h2>")
    stage_rows = [[html.escape(s), f"{t:.2f}"] for s, t in timings.items()]
    stage_rows += [[f"curation: {html.escape(s)}", f"{float(t):.2f}"] for s, t in curation.timings.items()]
    parts.append(_table(stage_rows, ["stage", "seconds"], cls="timings") if stage_rows else "<p>No timings recorded.</p>")

    parts.append("<h2>Parameters</h2>")
    parts.append(_table([[html.escape(str(a)), _esc(b)] for a, b in curation.params.items()], cls="params"))
    if curation.warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f'<li class="warn">{html.escape(w)}</li>' for w in curation.warnings) + "</ul>")
    parts.append("</body></html>")

    path = out / "report.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
