"""`ds2 run` / `ds2 demo`: configuration, and a real end-to-end run (SmolLM2 behind llama.cpp, MiniLM,
real curation, the report, a push to the FAKE HUB) with stage skipping and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_config_from_yaml_with_overrides(tmp_path):
    from ds2_hf.pipeline import PipelineConfig

    cfg = PipelineConfig.from_yaml(ROOT / "examples" / "ds2.yaml", ["curation.tau=0.3", "selection.budget=7",
                                                                    "push.repo_id=me/x", "limit=5"])
    assert cfg.curation.tau == 0.3 and cfg.selection.budget == 7 and cfg.limit == 5
    assert cfg.rating.model == "meta-llama/Llama-3.1-8B-Instruct" and cfg.embedding.model == "BAAI/bge-large-en-v1.5"
    assert cfg.push.repo_id == "me/x"
    # a local llama.cpp server names the rater model itself
    local = PipelineConfig.from_dict({"dataset": "d.jsonl", "llama_server": {"gguf": "m.gguf", "alias": "smol"},
                                      "rating": {"max_tokens": 64}})
    assert local.rating.model == "smol" and local.rating.max_tokens == 64
    assert json.loads(json.dumps(local.to_dict()))["llama_server"]["gguf"] == "m.gguf"


def test_config_errors_say_what_to_fix(tmp_path, capsys):
    from ds2_hf.cli import main
    from ds2_hf.pipeline import PipelineConfig, apply_overrides, run_pipeline

    with pytest.raises(ValueError, match="Unknown curation option"):
        PipelineConfig.from_dict({"curation": {"tua": 0.4}})
    with pytest.raises(ValueError, match="Unknown pipeline option"):
        PipelineConfig.from_dict({"datset": "x"})
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({}, ["curation.tau"])
    with pytest.raises(ValueError, match="Configure the rater"):
        run_pipeline(PipelineConfig(dataset="x.jsonl", output_dir=str(tmp_path)))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": str(tmp_path / "missing.jsonl"), "rating": {"model": "m", "base_url": ["http://127.0.0.1:9"]}}))
    assert main(["run", "--config", str(cfg), "--output_dir", str(tmp_path / "out")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2


def test_demo_data_is_real_natural_instructions():
    from ds2_hf.data import natural_instructions

    a = natural_instructions(20, seed=3)
    assert len(a) == 20 and a.column_names == ["id", "source", "instruction", "input", "output"]
    assert all(s.startswith("subtask") for s in a["source"]) and len(set(a["source"])) > 5
    assert all(a["instruction"]) and all(a["output"]) and max(len(x) for x in a["input"]) <= 600
    assert natural_instructions(20, seed=3)["id"] == a["id"] and natural_instructions(20, seed=4)["id"] != a["id"]
    with pytest.raises(ValueError, match="n must be"):
        natural_instructions(0)


@pytest.mark.slow
def test_demo_end_to_end_skips_resumes_and_pushes(tmp_path, capsys, monkeypatch):
    import datasets
    from fake_hub import FakeHub

    from ds2_hf.cli import main
    from ds2_hf.pipeline import RunLayout

    out = tmp_path / "demo"
    layout = RunLayout(out)
    base = ["demo", "--output_dir", str(out), "--n", "12", "--budget", "4", "--servers", "1",
            "--set", f"rating.cache_path={tmp_path / 'requests.sqlite'}", "--set", "embed_shards=3"]

    def stage_lines(text: str) -> dict[str, str]:
        return {line.split("]", 1)[1].split(":", 1)[0].strip(): line for line in text.splitlines()
                if line.startswith("[") and "/" in line.split("]")[0]}

    assert main(base) == 0
    first = capsys.readouterr().out
    assert f"selected subset: {layout.selected} (4 of 12 rows)" in first
    assert f"report:          {layout.report_dir / 'report.html'}" in first
    run = json.loads(layout.run_info.read_text())
    assert set(run["stages"]) == {"rate", "embed", "curate", "select"}
    assert run["stages"]["rate"]["counts"]["rows"] == 12
    curated = datasets.load_from_disk(str(layout.curated))
    selected = datasets.load_from_disk(str(layout.selected))
    assert len(curated) == 12 and curated.features["embedding"].length == 384
    assert {"score", "rating_error", "curated_score", "longtail_score", "source"} <= set(curated.column_names)
    key = [(s if s is not None else -1, lt) for s, lt in zip(selected["curated_score"], selected["longtail_score"])]
    assert key == sorted(key, reverse=True)  # DS2 order: curated score, then long-tail score
    for name in ("score_histograms", "transition_matrix", "longtail_distribution", "composition", "timings"):
        assert (layout.report_dir / "figures" / f"{name}.png").is_file()
    assert run["card"]["rater"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert run["card"]["prompt_version"].startswith("ds2@")

    # Unchanged: every stage is skipped and its key kept.
    assert main(base) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert all("up to date" in lines[s] for s in ("rate", "embed", "curate", "select"))
    assert json.loads(layout.run_info.read_text())["stages"] == run["stages"]

    # A curation parameter changed: rating and embedding are reused, curation and selection redone.
    assert main(base + ["--set", "curation.tau=0.2"]) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert "up to date" in lines["rate"] and "up to date" in lines["embed"]
    assert "tau=0.2" in lines["curate"] and "up to date" not in lines["select"]
    after = json.loads(layout.run_info.read_text())["stages"]
    assert after["rate"] == run["stages"]["rate"] and after["curate"]["key"] != run["stages"]["curate"]["key"]

    # A run killed during curation (its output missing) resumes there.
    import shutil

    shutil.rmtree(layout.curated)
    assert main(base + ["--set", "curation.tau=0.2"]) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert "up to date" in lines["embed"] and "up to date" not in lines["curate"]

    # The same run, pushed to the FAKE HUB at the end.
    monkeypatch.setenv("HF_TOKEN", "hf_FAKEpipelineToken")
    with FakeHub() as hub:
        assert main(base + ["--set", "curation.tau=0.2", "--set", "push.repo_id=me/demo",
                            "--set", f"push.endpoint={hub.url}"]) == 0
        files = hub.files("me/demo")
    assert "pushed:" in capsys.readouterr().out
    assert {"README.md", "selected/train-00000-of-00001.parquet", "report/figures/transition_matrix.png"} <= set(files)
    card = yaml.safe_load(files["README.md"].decode().split("---\n", 2)[1])
    assert card["ds2"]["budget"] == 4 and card["ds2"]["tau"] == 0.2
    assert card["source_datasets"] == ["extended|bigbench/natural_instructions"]
    assert not any(b"hf_FAKEpipelineToken" in c for c in files.values())
