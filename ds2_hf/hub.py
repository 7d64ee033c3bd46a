"""Publish a DS2 run on the Hugging Face Hub: the scored pool and the selected subset as two configs
of one dataset repo, with a dataset card that records how the selection was made.

    >>> import ds2_hf
    >>> ds2_hf.push_to_hub("me/tulu-ds2", curated, subset, report=curation_report,
    ...                    run_info={"rater": "meta-llama/Llama-3.1-8B-Instruct", "embedder": "BAAI/bge-large-en-v1.5",
    ...                              "budget": 10_000, "source_datasets": ["allenai/tulu-v2-sft-mixture"]},
    ...                    report_dir="out/report")
    >>> load_dataset("me/tulu-ds2", "selected", split="train")   # or "scored"

Everything goes up in one commit (Parquet shards, README.md, the report and its figures), so a
repo never shows half a run. The card's YAML is built with `huggingface_hub.DatasetCardData`
(``annotations_creators: machine-generated``, size category, task category, source datasets,
``configs``) plus a ``ds2`` block: rater, prompt version, embedder, k, tau, seed, budget, T and
counts. The token is only ever sent in the ``Authorization`` header: it is never logged, and an
upload whose files contain it is refused.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SIZE_CATEGORIES = (  # the Hub's size_categories values, by upper bound
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"),
)
_SECRET_KEY = re.compile(r"token|api_?key|secret|password|authori[sz]ation|cookie", re.IGNORECASE)
PAPER = "https://arxiv.org/abs/2410.10877"


@dataclass
class PushConfig:
    """Where and how `push_to_hub` uploads. The token is not part of it (pass ``token=``)."""

    repo_id: str = field(metadata={"help": "dataset repo to create or update, e.g. me/tulu-ds2"})
    private: bool | None = field(default=None, metadata={"help": "create the repo private (default: the Hub's default)"})
    revision: str | None = field(default=None, metadata={"help": "branch to commit to (default: main)"})
    create_pr: bool = field(default=False, metadata={"help": "open a pull request instead of committing to the branch"})
    endpoint: str | None = field(default=None, metadata={"help": "Hub URL (default: HF_ENDPOINT or huggingface.co)"})
    scored_config: str = field(default="scored", metadata={"help": "config name of the full scored dataset"})
    selected_config: str = field(default="selected", metadata={"help": "config name of the selected subset"})
    split: str = field(default="train", metadata={"help": "split name inside each config"})
    max_shard_size: int = field(default=500 * 1024 * 1024, metadata={"help": "bytes of Arrow data per Parquet file"})
    drop_columns: list[str] | None = field(default=None, metadata={"help": "columns not to upload (e.g. rating_output)"})
    source_datasets: list[str] | None = field(default=None, metadata={"help": "hub ids the pool came from (card metadata)"})
    task_categories: list[str] = field(default_factory=lambda: ["text-generation"], metadata={"help": "Hub task categories"})
    license: str | None = field(default=None, metadata={"help": "licence of the data (card metadata)"})
    language: list[str] | None = field(default=None, metadata={"help": "language codes (card metadata)"})
    pretty_name: str | None = field(default=None, metadata={"help": "human-readable dataset name"})
    commit_message: str | None = field(default=None, metadata={"help": "commit title (default: a summary of the run)"})


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows.

    >>> size_category(2_500)
    '1K<n<10K'
    """
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>1T"


def scrub(value: Any) -> Any:
    """A copy of ``value`` without any mapping key that names a secret (token, api_key, password...)."""
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def _int_counts(values: Any, k: int) -> list[int]:
    counts = Counter(int(v) for v in values if v is not None)
    return [counts.get(i, 0) for i in range(k)]


def _first_value(ds: Any, column: str) -> Any:
    if ds is None or column not in ds.column_names or len(ds) == 0:
        return None
    values = {v for v in ds.unique(column) if v is not None}
    return sorted(values)[0] if len(values) == 1 else (sorted(map(str, values)) or None)


def ds2_block(scored: Any, selected: Any = None, report: Any = None, run_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card's ``ds2`` metadata: rater, prompt version, embedder, k, tau, seed, budget, T and counts.

    Rater and prompt version default to the ``rating_model`` / ``rating_template`` columns
    `ds2_hf.rate` writes; the curation facts come from the `CurationReport`. Keys of ``run_info``
    that name secrets are dropped.
    """
    info = scrub(dict(run_info or {}))
    k = int(report.num_classes) if report is not None else 6
    block: dict[str, Any] = {
        "paper": PAPER,
        "rater": info.pop("rater", None) or _first_value(scored, "rating_model"),
        "prompt_version": info.pop("prompt_version", None) or _first_value(scored, "rating_template"),
        "embedder": info.pop("embedder", None),
    }
    if report is not None:
        block.update({
            "k": report.params.get("k"),
            "tau": report.params.get("tau"),
            "seed": report.seed,
            "transition_matrix": [[round(float(v), 4) for v in row] for row in report.T],
            "prior": [round(float(v), 4) for v in report.p],
        })
    block["budget"] = info.pop("budget", None)
    block["strategy"] = info.pop("strategy", None)
    counts: dict[str, Any] = {"rows": len(scored)}
    if "score" in scored.column_names:
        raw = scored["score"]
        counts["rated"] = sum(v is not None for v in raw)
        counts["failed"] = counts["rows"] - counts["rated"]
        counts["raw_scores"] = _int_counts(raw, k)
    if report is not None:
        counts["flagged"] = report.n_flagged
        counts["changed"] = report.n_changed
    if "curated_score" in scored.column_names:
        counts["curated_scores"] = _int_counts(scored["curated_score"], k)
    if selected is not None:
        counts["selected"] = len(selected)
        if "curated_score" in selected.column_names:
            counts["selected_scores"] = _int_counts(selected["curated_score"], k)
    block["counts"] = counts
    info.pop("source_datasets", None)
    block.update(info)  # anything else the caller recorded (timings, strategy options...)
    return {key: value for key, value in block.items() if value is not None}


def build_card(
    scored: Any,
    selected: Any = None,
    *,
    config: PushConfig,
    report: Any = None,
    run_info: Mapping[str, Any] | None = None,
    figures: list[str] | None = None,
) -> Any:
    """The `huggingface_hub.DatasetCard` (YAML metadata + markdown) of a DS2 upload.

    ``figures`` are repo paths of PNGs to show in the card (e.g. ``report/figures/transition_matrix.png``).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    info = dict(run_info or {})
    sources = list(config.source_datasets or info.get("source_datasets") or [])
    block = ds2_block(scored, selected, report, info)
    pattern = "{name}/{split}-*.parquet"
    configs = [{"config_name": config.scored_config,
                "data_files": [{"split": config.split, "path": pattern.format(name=config.scored_config, split=config.split)}]}]
    if selected is not None:
        configs.insert(0, {"config_name": config.selected_config, "default": True,
                           "data_files": [{"split": config.split,
                                           "path": pattern.format(name=config.selected_config, split=config.split)}]})
    data = DatasetCardData(
        license=config.license,
        language=config.language,
        pretty_name=config.pretty_name or f"{config.repo_id.split('/')[-1]} (DS2 selection)",
        annotations_creators=["machine-generated"],
        language_creators=["found"],
        source_datasets=[f"extended|{s}" for s in sources] or ["extended"],
        size_categories=[size_category(len(scored))],
        task_categories=list(config.task_categories),
        tags=["ds2", "data-selection", "instruction-tuning", "llm-rating"],
        configs=configs,
        ds2=block,
    )
    counts = block.get("counts", {})
    lines = [
        f"# {data.pretty_name}",
        "",
        f"Instruction-tuning data scored and selected with DS2 ([Pang et al., ICLR 2025]({PAPER})): every sample "
        "was rated by an LLM, the ratings were curated with a k-NN estimate of the rater's score transition "
        "matrix, and a subset was picked by curated score and long-tail (rarity) score.",
        "",
        "| config | rows | what it holds |",
        "|---|---|---|",
    ]
    if selected is not None:
        lines.append(f"| `{config.selected_config}` (default) | {len(selected)} | the selected subset, best first |")
    lines.append(f"| `{config.scored_config}` | {len(scored)} | the whole pool with raw and curated scores |")
    lines += [
        "",
        "```python",
        "from datasets import load_dataset",
        *([f'subset = load_dataset("{config.repo_id}", "{config.selected_config}", split="{config.split}")']
          if selected is not None else []),
        f'pool = load_dataset("{config.repo_id}", "{config.scored_config}", split="{config.split}")',
        "```",
        "",
        "## How it was made",
        "",
        "| | |",
        "|---|---|",
    ]
    for key in ("rater", "prompt_version", "embedder", "k", "tau", "seed", "strategy", "budget"):
        if key in block:
            lines.append(f"| {key.replace('_', ' ')} | `{block[key]}` |")
    for key in ("rows", "rated", "failed", "flagged", "changed", "selected"):
        if key in counts:
            lines.append(f"| {key} | {counts[key]} |")
    if sources:
        lines.append(f"| source datasets | {', '.join(sources)} |")
    if "transition_matrix" in block:
        T = block["transition_matrix"]
        lines += ["", "Estimated transition matrix T[i, j] = P(rated j | true i):", "",
                  "| true \\ rated | " + " | ".join(str(j) for j in range(len(T[0]))) + " |",
                  "|---" * (len(T[0]) + 1) + "|"]
        lines += [f"| **{i}** | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in enumerate(T)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem.replace('_', ' ')}]({f})" for f in figures]
    lines += [
        "",
        "## Columns",
        "",
        "`score` is the rater's score on 0..5 (null when rating failed; see `rating_error`), `curated_score` the "
        "score after curation, `curation_confidence` how sure curation was, `score_flagged` whether the raw score "
        "was judged likely wrong, `longtail_score` the rarity of the sample among its neighbours, `embedding` "
        "the sentence embedding used for the k-NN.",
        "",
        "## Citation",
        "",
        "```bibtex",
        "@inproceedings{pang2025improving,",
        "  title={Improving Data Efficiency via Curating LLM-Driven Rating Systems},",
        "  author={Pang, Jinlong and Wei, Jiaheng and Shah, Ankit Parag and Zhu, Zhaowei and Wang, Yaxuan and "
        "Qian, Chen and Liu, Yang and Bao, Yujia and Wei, Wei},",
        "  booktitle={International Conference on Learning Representations},",
        "  year={2025}",
        "}",
        "```",
        "",
    ]
    return DatasetCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines))


def _write_shards(ds: Any, folder: Path, split: str, max_shard_size: int) -> list[Path]:
    nbytes = ds.data.nbytes * len(ds) / max(ds.data.num_rows, 1)
    num = max(1, math.ceil(nbytes / max_shard_size)) if len(ds) else 1
    num = min(num, max(len(ds), 1))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num):
        path = folder / f"{split}-{i:05d}-of-{num:05d}.parquet"
        ds.shard(num_shards=num, index=i, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths


def _known_token(token: str | bool | None) -> str | None:
    if isinstance(token, str):
        return token
    if token is False:
        return None
    from huggingface_hub import get_token

    return get_token()


def push_to_hub(
    repo_id: str | PushConfig,
    scored: Any,
    selected: Any = None,
    *,
    report: Any = None,
    run_info: Mapping[str, Any] | None = None,
    report_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    config: PushConfig | None = None,
    **overrides: Any,
) -> Any:
    """Upload the scored pool and the selected subset (two configs) with a DS2 dataset card, in one commit.

    Args:
        repo_id: the dataset repo (or a full `PushConfig`).
        scored: the curated pool (`ds2_hf.curate`'s output); uploaded as config ``scored``.
        selected: the subset (`ds2_hf.select`'s output); uploaded as config ``selected`` (the default).
        report: the run's `CurationReport` (k, tau, seed, T, counts for the card).
        run_info: rater, prompt_version, embedder, budget, strategy, source_datasets... Keys naming
            secrets are dropped.
        report_dir: a folder written by `ds2_hf.report.write_report`; its ``report.html`` and figures
            are uploaded under ``report/`` and the figures shown in the card.
        token: a Hub token (default: the logged-in one / ``HF_TOKEN``). Only sent as a header.
        **overrides: `PushConfig` fields (``private=True``, ``endpoint=...``).

    Returns:
        the `huggingface_hub.CommitInfo` of the commit.

    >>> push_to_hub("me/tulu-ds2", curated, subset, report=report, private=True)
    """
    from dataclasses import fields, replace

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    if isinstance(repo_id, PushConfig):
        config = repo_id
    elif config is None:
        config = PushConfig(repo_id=repo_id)
    else:
        config = replace(config, repo_id=repo_id)
    unknown = set(overrides) - {f.name for f in fields(PushConfig)}
    if unknown:
        raise ValueError(f"Unknown push option(s) {sorted(unknown)}; valid ones are {[f.name for f in fields(PushConfig)]}.")
    config = replace(config, **overrides)
    if config.repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'namespace/name', got {config.repo_id!r}.")
    if config.scored_config == config.selected_config:
        raise ValueError("scored_config and selected_config must differ.")

    drop = [c for c in (config.drop_columns or [])]
    if drop:
        scored = scored.remove_columns([c for c in drop if c in scored.column_names])
        if selected is not None:
            selected = selected.remove_columns([c for c in drop if c in selected.column_names])

    api = HfApi(endpoint=config.endpoint, token=token)
    secret = _known_token(token)
    with tempfile.TemporaryDirectory(prefix="ds2-push-") as tmp:
        root = Path(tmp)
        uploads: dict[str, Path] = {}
        parts = [(config.scored_config, scored)] + ([(config.selected_config, selected)] if selected is not None else [])
        for name, ds in parts:
            for path in _write_shards(ds, root / name, config.split, config.max_shard_size):
                uploads[f"{name}/{path.name}"] = path
        figures: list[str] = []
        if report_dir is not None:
            rdir = Path(report_dir)
            if not (rdir / "report.html").is_file():
                raise FileNotFoundError(f"{rdir} has no report.html; write it with ds2_hf.report.write_report first.")
            uploads["report/report.html"] = rdir / "report.html"
            for png in sorted((rdir / "figures").glob("*.png")):
                uploads[f"report/figures/{png.name}"] = png
                figures.append(f"report/figures/{png.name}")
        card = build_card(scored, selected, config=config, report=report, run_info=run_info, figures=figures)
        readme = root / "README.md"
        readme.write_text(str(card), encoding="utf-8")
        uploads["README.md"] = readme
        if secret:
            for repo_path, local in uploads.items():
                if local.suffix in (".md", ".html", ".json") and secret in local.read_text(encoding="utf-8", errors="ignore"):
                    raise ValueError(f"Refusing to upload {repo_path}: it contains the Hub token. Remove it from run_info/the report.")

        url = api.create_repo(config.repo_id, repo_type="dataset", private=config.private, exist_ok=True)
        logger.info("Pushing %d files to %s", len(uploads), url)
        operations: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in uploads.items()]
        # Shards of an earlier, bigger push would still match the configs' file patterns: delete them.
        ours = tuple(f"{name}/" for name, _ in parts) + ("report/",)
        try:
            existing = api.list_repo_files(config.repo_id, repo_type="dataset", revision=config.revision)
        except Exception as err:  # a fresh repo may have no tree yet on some servers
            logger.debug("Could not list %s (%s); nothing to delete", config.repo_id, type(err).__name__)
            existing = []
        operations += [CommitOperationDelete(path_in_repo=p) for p in existing if p.startswith(ours) and p not in uploads]
        message = config.commit_message or (
            f"DS2: {len(scored)} scored rows" + (f", {len(selected)} selected" if selected is not None else "")
        )
        info = api.create_commit(
            config.repo_id, operations, commit_message=message, repo_type="dataset",
            revision=config.revision, create_pr=config.create_pr,
        )
    logger.info("Pushed %s (%s)", config.repo_id, getattr(info, "commit_url", info))
    return info
