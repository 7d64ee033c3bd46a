"""`ds2 curate` and `ds2 select` through the installed console script, on every storage format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from datasets import Dataset, load_from_disk

from ds2_hf import io
from ds2_hf.curation.synthetic import make_clusterable


def ds2(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ds2_hf.cli", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    data = make_clusterable(600, dim=16, seed=1)
    ds = Dataset.from_dict(
        {
            "prompt": [f"q{i}" for i in range(600)],
            "completion": ["a" * (i % 17 + 1) for i in range(600)],
            "source": ["flan" if i % 3 else "dolly" for i in range(600)],
            "score": data.rated_scores.tolist(),
            "embedding": data.embeddings.tolist(),
        }
    )
    ds.to_parquet(str(folder / "scored.parquet"))
    ds.to_json(str(folder / "scored.jsonl"), lines=True)
    ds.save_to_disk(str(folder / "scored_dir"))
    return folder


def test_help_is_readable():
    out = subprocess.run([sys.executable, "-m", "ds2_hf.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for command in ("curate", "select"):
        assert command in out.stdout
    out = subprocess.run([sys.executable, "-m", "ds2_hf.cli", "curate", "--help"], capture_output=True, text=True, timeout=120)
    text = " ".join(out.stdout.split())  # argparse wraps lines
    assert "--tau" in text and "confidence needed to replace a score judged wrong" in text and "--config" in text
    assert "ds2 curate scored.parquet --output curated.parquet" in text  # usage examples come first
    out = subprocess.run([sys.executable, "-m", "ds2_hf.cli", "select", "--help"], capture_output=True, text=True, timeout=120)
    text = " ".join(out.stdout.split())
    assert "ds2 | raw | random | alpagasus | deita | longtail | length | full (default: ds2)" in text


@pytest.mark.parametrize("source, target", [("scored.parquet", "cur.parquet"), ("scored.jsonl", "cur.jsonl"), ("scored_dir", "cur_dir")])
def test_curate_then_select_on_each_format(scored, source, target):
    res = ds2("curate", source, "--output", target, "--seed", "3", cwd=scored)
    assert res.returncode == 0, res.stderr
    assert "changed" in res.stdout
    report = json.loads((scored / f"{target}.report.json").read_text())
    assert report["seed"] == 3 and report["n_rows"] == 600
    curated = io.load(scored / target)
    assert len(curated) == 600 and "curated_score" in curated.column_names
    res = ds2("select", target, "-o", f"sub_{target}", "--budget", "25", "--strategy", "ds2", cwd=scored)
    assert res.returncode == 0, res.stderr
    subset = io.load(scored / f"sub_{target}")
    assert len(subset) == 25
    assert subset["curated_score"] == sorted(subset["curated_score"], reverse=True)


def test_yaml_config_with_flag_override(scored):
    (scored / "select.yaml").write_text("input: cur.parquet\nstrategy: random\nbudget: 30\nseed: 4\nby: source\n")
    res = ds2("curate", "scored.parquet", "--output", "cur.parquet", cwd=scored)
    assert res.returncode == 0, res.stderr
    res = ds2("select", "--config", "select.yaml", "--output", "yaml_sub", "--budget", "12", cwd=scored)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    assert summary["selected"] == 12 and summary["strategy"] == "random"
    assert sum(summary["per_group"].values()) == 12
    assert len(load_from_disk(str(scored / "yaml_sub"))) == 12


def test_errors_are_clear_and_exit_2(scored):
    res = ds2("curate", "scored.parquet", "--output", "x.parquet", "--score_column", "rating", cwd=scored)
    assert res.returncode == 2
    assert "Score column 'rating' not found" in res.stderr and "Traceback" not in res.stderr
    res = ds2("select", "missing.parquet", "--output", "x.parquet", cwd=scored)
    assert res.returncode == 2 and "No such file" in res.stderr
    (scored / "bad.yaml").write_text("budjet: 3\n")
    res = ds2("select", "--config", "bad.yaml", "cur.parquet", "--output", "x.parquet", cwd=scored)
    assert res.returncode == 2 and "unknown option(s) ['budjet']" in res.stderr
