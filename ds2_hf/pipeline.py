"""The DS2 pipeline in one call: rate -> embed -> curate -> select -> report [-> push].

    >>> from ds2_hf.pipeline import PipelineConfig, run_pipeline
    >>> cfg = PipelineConfig.from_yaml("examples/ds2.yaml")
    >>> result = run_pipeline(cfg)
    >>> result.selected, result.report_html

    ds2 run --config ds2.yaml
    ds2 run --config ds2.yaml --output_dir out2 --set selection.budget=5000 --set curation.tau=0.4

Every stage writes its result into one output folder (`RunLayout`) and records a key: a hash of
its input's key and its own parameters. A stage whose output exists under the same key is skipped,
so re-running after a change redoes only the stages downstream of it, and a killed run resumes:
rating answers come back from the rater's request cache, embedding keeps its finished shards.
``run.json`` holds the keys, timings and the facts the dataset card and the report show.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGES = ("rate", "embed", "curate", "select", "report", "push")


@dataclass(frozen=True)
class RunLayout:
    """Where each stage of a run writes inside the output folder.

    >>> RunLayout(Path("out")).curated
    PosixPath('out/curated')
    """

    root: Path

    @property
    def rated(self) -> Path:
        return self.root / "rated"

    @property
    def embedded(self) -> Path:
        return self.root / "embedded"

    @property
    def curated(self) -> Path:
        return self.root / "curated"

    @property
    def curation_report(self) -> Path:
        return self.root / "curation_report.json"

    @property
    def selected(self) -> Path:
        return self.root / "selected"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"


@dataclass
class LlamaServerConfig:
    """Local llama.cpp server(s) for the rater, started for the rating stage and stopped after it."""

    gguf: str | None = None  # a GGUF file; unset = no local server (use rating.base_url)
    servers: int = 1  # processes; the rater spreads requests over them (one per free core)
    n_threads: int = 1
    n_ctx: int = 2048
    alias: str = "local-rater"


def _embedding_default() -> Any:
    from ds2_hf.embedding import EmbeddingConfig

    return EmbeddingConfig()


def _curation_default() -> Any:
    from ds2_hf.curation.api import CurationConfig

    return CurationConfig()


def _selection_default() -> Any:
    from ds2_hf.selection import SelectionConfig

    return SelectionConfig()


def _report_default() -> Any:
    from ds2_hf.report import ReportConfig

    return ReportConfig()


@dataclass
class PipelineConfig:
    """One run: the data, each stage's `*Config`, the output folder and an optional hub repo.

    YAML keys are the field names; the stage sections take their config's fields::

        dataset: allenai/tulu-v2-sft-mixture
        output_dir: out
        rating: {model: meta-llama/Llama-3.1-8B-Instruct, base_url: [http://tgi:8080]}
        embedding: {model: BAAI/bge-large-en-v1.5}
        curation: {k: 10, tau: 0.5}
        selection: {budget: 10000, strategy: ds2}
        push: {repo_id: me/tulu-ds2, private: true}
    """

    dataset: str = ""  # a file, a save_to_disk folder or a hub id
    split: str | None = None
    limit: int | None = None  # use only the first N rows
    output_dir: str = "ds2-out"
    source_datasets: list[str] | None = None  # for the dataset card (default: [dataset] if it is a hub id)
    card_info: dict[str, Any] | None = None  # extra facts for the card and the report (override rater/embedder labels)
    rating: Any = None  # a RatingConfig; may be left out when llama_server.gguf is set
    llama_server: LlamaServerConfig = field(default_factory=LlamaServerConfig)
    embedding: Any = field(default_factory=_embedding_default)
    embed_shards: int = 8  # shard files of the embedding stage (the unit of resume)
    curation: Any = field(default_factory=_curation_default)
    selection: Any = field(default_factory=_selection_default)
    report: Any = field(default_factory=_report_default)
    push: Any = None  # a PushConfig (needs repo_id) to upload at the end

    # -- building from YAML / dicts / dotted overrides --
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PipelineConfig":
        from ds2_hf.curation.api import CurationConfig
        from ds2_hf.embedding import EmbeddingConfig
        from ds2_hf.hub import PushConfig
        from ds2_hf.rating.config import RatingConfig
        from ds2_hf.report import ReportConfig
        from ds2_hf.selection import SelectionConfig

        sections = {"rating": RatingConfig, "llama_server": LlamaServerConfig, "embedding": EmbeddingConfig,
                    "curation": CurationConfig, "selection": SelectionConfig, "report": ReportConfig, "push": PushConfig}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown pipeline option(s) {unknown}; valid top-level keys are {sorted(known)}.")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections and value is not None:
                if not isinstance(value, dict):
                    raise ValueError(f"`{key}` must be a mapping of {sections[key].__name__} fields, got {value!r}.")
                names = {f.name for f in fields(sections[key])}
                bad = sorted(set(value) - names)
                if bad:
                    raise ValueError(f"Unknown {key} option(s) {bad}; valid ones are {sorted(names)}.")
                if key == "rating" and (data.get("llama_server") or {}).get("gguf"):
                    # the local servers get the rater's model name; base_url is filled in when they start
                    value = {**value, "model": (data["llama_server"].get("alias") or LlamaServerConfig.alias)}
                kwargs[key] = sections[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> "PipelineConfig":
        """Load a YAML file, then apply ``section.key=value`` overrides (values parsed as YAML)."""
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of pipeline options.")
        return cls.from_dict(apply_overrides(data, overrides or []))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "rating" and value is not None:
                out[f.name] = value.to_dict(redact=True)
            elif is_dataclass(value):
                out[f.name] = asdict(value)
            else:
                out[f.name] = value
        return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["selection.budget=500", "curation.tau=0.4"]`` applied to a nested dict (values parsed as YAML)."""
    import yaml

    data = json.loads(json.dumps(data))  # a deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Override {item!r} must look like section.key=value (e.g. selection.budget=500).")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r}: {part!r} is not a section.")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


@dataclass
class PipelineResult:
    """Where a finished run put things, and what each stage did."""

    output_dir: Path
    selected: Path
    report_html: Path
    stages: dict[str, dict[str, Any]]
    pushed: str | None = None


# Options that change speed or logging but not results: left out of the stage keys.
_NOT_IN_KEY = {"concurrency", "request_timeout", "max_retries", "backoff_base", "backoff_max", "max_retry_after",
               "progress", "cache", "cache_path", "base_url", "api_key", "provider", "batch_size", "device",
               "num_threads", "sort_by_length", "device_map", "error_budget", "error_budget_min_samples"}


def _key(*parts: Any) -> str:
    from datasets.fingerprint import Hasher

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _NOT_IN_KEY}
        return value

    return Hasher.hash([clean(p) for p in parts])[:16]


def _atomic_save(ds: Any, target: Path) -> None:
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


class _RunState:
    """run.json: stage keys and timings, rewritten atomically after every stage."""

    def __init__(self, layout: RunLayout):
        self.layout = layout
        self.data: dict[str, Any] = {}
        if layout.run_info.is_file():
            try:
                self.data = json.loads(layout.run_info.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.data = {}
        self.data.setdefault("stages", {})

    def done(self, stage: str, key: str, *outputs: Path) -> bool:
        entry = self.data["stages"].get(stage) or {}
        return entry.get("key") == key and all(p.exists() for p in outputs)

    def record(self, stage: str, key: str, seconds: float, **extra: Any) -> None:
        self.data["stages"][stage] = {"key": key, "seconds": round(seconds, 3), **extra}
        self.save()

    def save(self) -> None:
        path = self.layout.run_info
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _single(ds: Any, column: str) -> Any:
    if column not in ds.column_names:
        return None
    values = [v for v in ds.unique(column) if v is not None]
    return values[0] if len(values) == 1 else None


def effective_rating(cfg: PipelineConfig) -> Any:
    """The run's `RatingConfig` (for local llama.cpp servers: the model name they serve, no URL yet)."""
    from ds2_hf.rating.config import RatingConfig

    if cfg.llama_server.gguf:
        from dataclasses import replace

        return replace(cfg.rating, model=cfg.llama_server.alias) if cfg.rating else RatingConfig(model=cfg.llama_server.alias)
    if cfg.rating is None:
        raise ValueError("Configure the rater: a `rating` section (model, and base_url for your server), or "
                         "llama_server.gguf to start a local llama.cpp server.")
    return cfg.rating


def _start_servers(cfg: PipelineConfig, stack: ExitStack) -> Any:
    """Start the configured llama.cpp servers; return the RatingConfig pointing at them."""
    from dataclasses import replace

    from ds2_hf.rating.llama_server import LlamaCppServer

    ls = cfg.llama_server
    urls = []
    for i in range(max(1, ls.servers)):
        server = LlamaCppServer(ls.gguf, alias=ls.alias, n_threads=ls.n_threads, n_ctx=ls.n_ctx,
                                log_path=Path(cfg.output_dir) / f"llama-server-{i}.log")
        stack.enter_context(server)
        urls.append(server.base_url)
    logger.info("Started %d llama.cpp server(s) for %s", len(urls), Path(ls.gguf).name)
    return replace(effective_rating(cfg), base_url=urls)


def run_pipeline(cfg: PipelineConfig, *, token: str | bool | None = None) -> PipelineResult:
    """Run (or resume) every stage; see the module docstring. Returns where the subset and report are."""
    from ds2_hf import io

    if not cfg.dataset:
        raise ValueError("Set `dataset` (a data file, a save_to_disk folder or a hub dataset id).")
    rating_cfg = effective_rating(cfg)
    layout = RunLayout(Path(cfg.output_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    state = _RunState(layout)
    state.data["config"] = cfg.to_dict()
    timings: dict[str, float] = {}
    t_total = time.perf_counter()

    n_stages = 6 if cfg.push is not None else 5

    def banner(i: int, name: str, what: str) -> None:
        print(f"[{i}/{n_stages}] {name}: {what}", flush=True)

    # -- data --
    ds = io.load(cfg.dataset, split=cfg.split)
    if cfg.limit is not None:
        ds = ds.select(range(min(cfg.limit, len(ds))))
    data_key = _key(ds._fingerprint, cfg.limit)

    # -- rate --
    rate_key = _key(data_key, rating_cfg.to_dict(redact=True), {"gguf": cfg.llama_server.gguf})
    if state.done("rate", rate_key, layout.rated):
        banner(1, "rate", f"up to date ({layout.rated})")
    else:
        banner(1, "rate", f"{len(ds)} samples")
        from ds2_hf.rating import rate
        from ds2_hf.rating.summary import rating_counts

        t0 = time.perf_counter()
        with ExitStack() as stack:
            rater = rate(config=_start_servers(cfg, stack) if cfg.llama_server.gguf else rating_cfg)
            # load_from_cache_file=False: the request cache is the resume mechanism (answers are reused,
            # failures retried), and a datasets cache hit would hide a rerun's retries.
            rated = ds.map(rater, batched=True, batch_size=256, desc="rating", load_from_cache_file=False)
            _atomic_save(rated, layout.rated)
        counts = rating_counts(rated)
        timings["rate"] = time.perf_counter() - t0
        state.record("rate", rate_key, timings["rate"], counts=counts.to_dict())
        print(f"      {counts.summary()}")

    # -- embed --
    embed_key = _key(rate_key, asdict(cfg.embedding))
    if state.done("embed", embed_key, layout.embedded):
        banner(2, "embed", f"up to date ({layout.embedded})")
    else:
        banner(2, "embed", cfg.embedding.model)
        from ds2_hf.embedding import ShardedEmbeddingArguments, embed_sharded

        t0 = time.perf_counter()
        embed_sharded(ShardedEmbeddingArguments(dataset=str(layout.rated), output=str(layout.embedded),
                                                num_shards=cfg.embed_shards), cfg.embedding)
        timings["embed"] = time.perf_counter() - t0
        state.record("embed", embed_key, timings["embed"])

    # -- curate --
    curate_key = _key(embed_key, asdict(cfg.curation))
    if state.done("curate", curate_key, layout.curated, layout.curation_report):
        banner(3, "curate", f"up to date ({layout.curated})")
    else:
        banner(3, "curate", f"k={cfg.curation.k} tau={cfg.curation.tau} seed={cfg.curation.seed}")
        from ds2_hf.curation.api import curate

        t0 = time.perf_counter()
        curated, creport = curate(io.load(layout.embedded), cfg.curation)
        _atomic_save(curated, layout.curated)
        creport.to_json(layout.curation_report)
        timings["curate"] = time.perf_counter() - t0
        state.record("curate", curate_key, timings["curate"])
        print("      " + creport.summary().replace("\n", "\n      "))

    # -- select --
    select_key = _key(curate_key, asdict(cfg.selection))
    if state.done("select", select_key, layout.selected, layout.selection):
        banner(4, "select", f"up to date ({layout.selected})")
    else:
        banner(4, "select", f"{cfg.selection.strategy}, budget {cfg.selection.budget}")
        from ds2_hf.selection import select_indices

        t0 = time.perf_counter()
        curated = io.load(layout.curated)
        selection = select_indices(curated, cfg.selection)
        _atomic_save(curated.select(selection.indices), layout.selected)
        summary = selection.to_dict()
        summary.pop("indices", None)
        layout.selection.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        timings["select"] = time.perf_counter() - t0
        state.record("select", select_key, timings["select"], selected=len(selection.indices))

    # -- facts for the report and the card --
    from ds2_hf.curation.report import CurationReport

    curated = io.load(layout.curated)
    selected = io.load(layout.selected)
    creport = CurationReport.from_json(layout.curation_report)
    is_hub_id = not Path(cfg.dataset).exists() and cfg.dataset.count("/") == 1
    state.data["card"] = {
        "rater": Path(cfg.llama_server.gguf).name if cfg.llama_server.gguf else rating_cfg.model,
        # the template id the rater actually recorded (e.g. "ds2@1"), else the configured name
        "prompt_version": _single(curated, "rating_template") or rating_cfg.template,
        "embedder": cfg.embedding.model,
        "budget": cfg.selection.budget,
        "strategy": cfg.selection.strategy,
        "source_datasets": cfg.source_datasets or ([cfg.dataset] if is_hub_id else []),
    }
    state.data["card"].update(cfg.card_info or {})
    all_timings = {s: float(e["seconds"]) for s, e in state.data["stages"].items() if s in STAGES[:4]}
    state.data["timings"] = all_timings
    state.save()

    # -- report (always re-rendered: cheap, and it shows this run's timings) --
    banner(5, "report", str(layout.report_dir))
    t0 = time.perf_counter()
    from ds2_hf.report import write_report

    html = write_report(curated, creport, selected, out_dir=layout.report_dir, timings=all_timings,
                        run_info={k: v for k, v in state.data["card"].items() if v}, config=cfg.report)
    timings["report"] = time.perf_counter() - t0

    # -- push --
    pushed = None
    if cfg.push is not None:
        banner(6, "push", cfg.push.repo_id)
        from ds2_hf.hub import push_to_hub

        info = push_to_hub(cfg.push, curated, selected, report=creport, run_info=state.data["card"],
                           report_dir=layout.report_dir, token=token)
        pushed = getattr(info, "commit_url", str(info))
    state.data["last_run_seconds"] = round(time.perf_counter() - t_total, 3)
    state.save()
    print(f"\nselected subset: {layout.selected} ({len(selected)} of {len(curated)} rows)")
    print(f"report:          {html}")
    if pushed:
        print(f"pushed:          {pushed}")
    return PipelineResult(layout.root, layout.selected, html, dict(state.data["stages"]), pushed)
