"""push_to_hub and the DS2 dataset card, against a FAKE HUB (tests/fake_hub.py) on loopback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from fake_hub import FakeHub
from test_report import run_parts, written  # noqa: F401  (shared fixtures: a real curated run + its report)

TOKEN = "hf_FAKEtokenForTheFakeHub0123456789"


def _materialize(files: dict[str, bytes], root: Path) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n", 2)[1])


def test_card_metadata_and_ds2_block(run_parts):  # noqa: F811
    from huggingface_hub import DatasetCard

    from ds2_hf.hub import PushConfig, build_card, size_category

    curated, report, subset = run_parts
    info = {"rater": "SmolLM2-135M-Instruct", "prompt_version": "ds2@1", "embedder": "all-MiniLM-L6-v2",
            "budget": 120, "strategy": "ds2", "source_datasets": ["allenai/tulu-v2-sft-mixture"],
            "api_key": TOKEN, "rater_config": {"model": "smol", "api_key": TOKEN, "base_url": "http://127.0.0.1:1"}}
    card = build_card(curated, subset, config=PushConfig(repo_id="me/ds2-test", license="apache-2.0"), report=report,
                      run_info=info, figures=["report/figures/transition_matrix.png"])
    text = str(card)
    assert TOKEN not in text  # keys naming secrets are dropped, however deep
    meta = DatasetCard(text).data.to_dict()  # round-trips through huggingface_hub's parser
    assert meta == _front_matter(text)
    assert meta["annotations_creators"] == ["machine-generated"]
    assert meta["size_categories"] == [size_category(len(curated))] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["source_datasets"] == ["extended|allenai/tulu-v2-sft-mixture"]
    assert meta["license"] == "apache-2.0"
    assert [c["config_name"] for c in meta["configs"]] == ["selected", "scored"]
    assert meta["configs"][0]["default"] is True
    ds2 = meta["ds2"]
    assert ds2["rater"] == "SmolLM2-135M-Instruct" and ds2["prompt_version"] == "ds2@1"
    assert ds2["embedder"] == "all-MiniLM-L6-v2" and ds2["budget"] == 120 and ds2["strategy"] == "ds2"
    assert ds2["k"] == report.params["k"] and ds2["tau"] == report.params["tau"] and ds2["seed"] == report.seed
    T = np.array(ds2["transition_matrix"])
    assert T.shape == (6, 6) and np.allclose(T.sum(axis=1), 1.0, atol=1e-3)
    assert np.allclose(T, report.transition_matrix, atol=1e-4)
    counts = ds2["counts"]
    assert counts["rows"] == len(curated) and counts["selected"] == len(subset)
    assert counts["failed"] == sum(s is None for s in curated["score"]) == len(curated) - counts["rated"]
    assert counts["changed"] == report.n_changed and sum(counts["raw_scores"]) == counts["rated"]
    assert ds2["rater_config"] == {"model": "smol", "base_url": "http://127.0.0.1:1"}
    assert "![transition matrix](report/figures/transition_matrix.png)" in text
    assert '"me/ds2-test", "selected"' in text  # the loading snippet
    assert [size_category(n) for n in (999, 1000, 123_456, 2_000_000_000_000)] == ["n<1K", "1K<n<10K", "100K<n<1M", "n>1T"]


def test_rater_and_prompt_version_default_to_the_rating_columns(run_parts):  # noqa: F811
    from ds2_hf.hub import ds2_block

    curated, report, _ = run_parts
    tagged = curated.add_column("rating_model", ["smollm2-135m"] * len(curated))
    tagged = tagged.add_column("rating_template", ["ds2@1"] * len(tagged))
    block = ds2_block(tagged, None, report, {})
    assert block["rater"] == "smollm2-135m" and block["prompt_version"] == "ds2@1"
    assert "selected" not in block["counts"]


def test_push_to_fake_hub_then_load_with_datasets(written, tmp_path, caplog):  # noqa: F811
    import datasets

    import ds2_hf

    report_path, (curated, report, subset) = written
    caplog.set_level(logging.DEBUG)
    with FakeHub() as hub:
        info = ds2_hf.push_to_hub("me/ds2-test", curated, subset, report=report, token=TOKEN, endpoint=hub.url,
                                  run_info={"rater": "smol", "embedder": "minilm", "budget": len(subset)},
                                  report_dir=report_path.parent, private=True)
        files = hub.files("me/ds2-test")
        requests = list(hub.requests)
        commits = hub.commits("me/ds2-test")
        visibility = hub.repos["dataset:me/ds2-test"]["visibility"]

    assert info.oid == commits[0]["oid"] and len(commits) == 1  # one commit holds the whole run
    assert visibility == "private"
    routes = [(r["method"], r["path"]) for r in requests]
    assert routes[0] == ("POST", "/api/repos/create")
    assert ("POST", "/api/datasets/me/ds2-test/preupload/main") in routes
    assert ("POST", "/api/validate-yaml") in routes  # the client had the card's metadata checked before committing
    assert routes[-1] == ("POST", "/api/datasets/me/ds2-test/commit/main")
    # the token is sent as a bearer header on every call, and nowhere else
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in requests)
    assert not any(TOKEN.encode() in r["body"] for r in requests)
    assert not any(TOKEN.encode() in content for content in files.values())
    assert TOKEN not in caplog.text

    assert set(files) >= {"README.md", "scored/train-00000-of-00001.parquet", "selected/train-00000-of-00001.parquet",
                          "report/report.html", "report/figures/transition_matrix.png"}
    readme = files["README.md"].decode()
    assert "![score histograms](report/figures/score_histograms.png)" in readme
    # The uploaded repo is a valid dataset for `datasets`: its README configs load both parts.
    repo = _materialize(files, tmp_path / "repo")
    got_sel = datasets.load_dataset(str(repo), "selected", split="train", cache_dir=str(tmp_path / "cache"))
    got_all = datasets.load_dataset(str(repo), "scored", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(got_sel) == len(subset) and len(got_all) == len(curated)
    assert got_sel["curated_score"] == subset["curated_score"]
    assert got_all.features["embedding"] == curated.features["embedding"]
    assert datasets.load_dataset(str(repo), split="train", cache_dir=str(tmp_path / "cache")).num_rows == len(subset)


def test_repush_replaces_stale_shards(run_parts, tmp_path):  # noqa: F811
    import ds2_hf

    curated, report, subset = run_parts
    with FakeHub() as hub:
        ds2_hf.push_to_hub("me/shards", curated, subset, report=report, token=TOKEN, endpoint=hub.url,
                           max_shard_size=30_000, drop_columns=["messages"])
        first = sorted(p for p in hub.files("me/shards") if p.startswith("scored/"))
        ds2_hf.push_to_hub("me/shards", curated, subset, report=report, token=TOKEN, endpoint=hub.url)
        second = sorted(p for p in hub.files("me/shards") if p.startswith("scored/"))
        commits = hub.commits("me/shards")
    assert len(first) > 1 and first[0].endswith(f"-of-{len(first):05d}.parquet")
    assert second == ["scored/train-00000-of-00001.parquet"]  # the old shards were deleted in the same commit
    assert len(commits) == 2


def test_refuses_to_upload_a_token_and_bad_options(run_parts, tmp_path):  # noqa: F811
    import ds2_hf

    curated, report, subset = run_parts
    with FakeHub() as hub:
        with pytest.raises(ValueError, match="contains the Hub token"):
            ds2_hf.push_to_hub("me/leak", curated, subset, report=report, token=TOKEN, endpoint=hub.url,
                               run_info={"note": f"pushed with {TOKEN}"})
        assert not any(r["path"].endswith("/commit/main") for r in hub.requests)
    with pytest.raises(ValueError, match="namespace/name"):
        ds2_hf.push_to_hub("no-namespace", curated)
    with pytest.raises(ValueError, match="Unknown push option"):
        ds2_hf.push_to_hub("me/x", curated, privat=True)
    with pytest.raises(FileNotFoundError, match="report.html"):
        ds2_hf.push_to_hub("me/x", curated, report_dir=tmp_path)


def test_ds2_push_command(written, tmp_path, monkeypatch, capsys):  # noqa: F811
    from ds2_hf.cli import main

    report_path, (curated, report, subset) = written
    curated.to_parquet(str(tmp_path / "curated.parquet"))
    subset.to_parquet(str(tmp_path / "subset.parquet"))
    report.to_json(tmp_path / "curation.json")
    (tmp_path / "run.json").write_text(json.dumps({"card": {"rater": "smol", "budget": len(subset)}}))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub() as hub:
        rc = main(["push", str(tmp_path / "curated.parquet"), "--selected", str(tmp_path / "subset.parquet"),
                   "--curation_report", str(tmp_path / "curation.json"), "--report_dir", str(report_path.parent),
                   "--run_info", str(tmp_path / "run.json"), "--repo_id", "me/cli", "--endpoint", hub.url,
                   "--source_datasets", "org/pool"])
        files = hub.files("me/cli")
        auth = {r["headers"].get("authorization") for r in hub.requests}
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert auth == {f"Bearer {TOKEN}"}  # HF_TOKEN is picked up; there is no --token flag
    meta = _front_matter(files["README.md"].decode())
    assert meta["ds2"]["rater"] == "smol" and meta["ds2"]["budget"] == len(subset)
    assert meta["source_datasets"] == ["extended|org/pool"]
    assert TOKEN not in out.out + out.err
    assert main(["push", "--repo_id", "me/cli"]) == 2
