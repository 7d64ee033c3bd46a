"""`ds2_hf.rate` against a REAL llama.cpp server (SmolLM2-135M-Instruct GGUF) on 127.0.0.1.

Faults come from `tests/fault_proxy.py`, a FAULT INJECTOR proxy in front of the real server.
SmolLM2-135M is a weak rater: these tests check the machinery (every sample rated or failed with a
reason, nothing requested twice, resume after kill -9), not the quality of its scores.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from ds2_hf.rating import RatingAbortedError, RatingParseError, parse_rating, rate
from ds2_hf.rating.llama_server import LlamaCppServer, free_port
from fault_proxy import GARBAGE_TEXT, FaultInjectingProxy

pytestmark = pytest.mark.slow

ALIAS = "smollm2-135m"
TASKS = [
    ("Add 17 and 25.", "17 + 25 = 42."),
    ("Write a haiku about autumn rain.", "Cold rain on red leaves\nthe gutter hums a low song\nnight comes early now"),
    ("What is the capital of Australia?", "Canberra."),
    ("Translate 'good morning' into French.", "Bonjour."),
    ("Explain in one sentence why the sky is blue.", "Air molecules scatter short blue wavelengths of sunlight more than red ones."),
    ("List three prime numbers greater than 10.", "11, 13 and 17."),
    ("Give a synonym for 'happy'.", "Joyful."),
    ("Sort these words alphabetically: pear, apple, fig.", "apple, fig, pear"),
    ("Name the largest planet in the solar system.", "Jupiter."),
    ("Convert 3 kilometres to metres.", "3 km = 3000 m."),
]


def pool(ids) -> list[dict]:
    """Alpaca rows whose instruction carries `sample-<id>` so the proxy can tell samples apart."""
    return [{"instruction": f"(sample-{i}) {TASKS[i % len(TASKS)][0]}", "input": "", "output": TASKS[i % len(TASKS)][1]} for i in ids]


def sample_id(row: dict) -> int:
    return int(row["instruction"].split("sample-")[1].split(")")[0])


def fast(**overrides):
    """Options that keep tests quick: short answers, constrained JSON, tiny backoff."""
    options = dict(
        model=ALIAS,
        max_tokens=48,
        response_format="json_schema",
        progress=False,
        backoff_base=0.05,
        backoff_max=0.2,
        request_timeout=30,
        max_retries=4,
        max_reasks=1,
    )
    options.update(overrides)
    return options


def assert_rated_or_failed_with_reason(rows: list[dict], template_fields=("overall", "rarity", "complexity", "informativeness")):
    from ds2_hf.prompts import get_template

    ds2 = get_template("ds2")
    for row in rows:
        if row["rating_error"] is None:
            assert row["score"] is not None and 0 <= row["score"] <= 5
            # No silent score: the kept text parses to exactly the stored values.
            values = parse_rating(row["rating_output"], ds2)
            assert row["score"] == ds2.compress_score(values["overall"])
            for f in template_fields:
                assert row[f"score_{f}"] == values[f]
        else:
            assert row["score"] is None and all(row[f"score_{f}"] is None for f in template_fields)
            assert ":" in row["rating_error"] and row["rating_error"].split(":")[0]


@pytest.fixture(scope="module")
def llama(smollm2_gguf, tmp_path_factory):
    server = LlamaCppServer(
        smollm2_gguf, alias=ALIAS, n_ctx=2048, n_threads=1, log_path=tmp_path_factory.mktemp("llama") / "server.log"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> str:
    """One request cache for tests that may reuse each other's answers (saves generations)."""
    return str(tmp_path_factory.mktemp("rating-cache") / "requests.sqlite")


def on_disk(rows, tmp_path, name="pool"):
    from datasets import Dataset, load_from_disk

    Dataset.from_list(rows).save_to_disk(str(tmp_path / name))
    return load_from_disk(str(tmp_path / name))


def test_rates_with_constrained_decoding_and_the_datasets_cache_serves_a_second_map(llama, shared_cache, tmp_path):
    from datasets.fingerprint import Hasher

    ds = on_disk(pool(range(4)), tmp_path)
    rater = rate(base_url=llama.base_url, cache_path=shared_cache, **fast())
    fingerprint = Hasher.hash(rater)
    rated = ds.map(rater, batched=True, batch_size=4)
    rows = rated.to_list()
    assert [r["rating_error"] for r in rows] == [None] * 4, [r["rating_output"] for r in rows]
    assert_rated_or_failed_with_reason(rows)
    assert {r["rating_model"] for r in rows} == {ALIAS}
    assert {r["rating_template"] for r in rows} == {rater.template.id}
    assert rated.features["score"].dtype == "int64" and rated.features["rating_error"].dtype == "string"
    stats = rater.stats
    assert stats.samples == 4 and stats.rated == 4 and stats.requests_sent + stats.cache_hits == 4
    assert stats.prompt_tokens > 0 or stats.cache_hits == 4
    # Using the transform does not change its fingerprint ...
    assert Hasher.hash(rater) == fingerprint
    # ... so an identical map, with a fresh transform object, comes from the datasets cache.
    again = rate(base_url=llama.base_url, cache_path=shared_cache, **fast())
    second = ds.map(again, batched=True, batch_size=4)
    assert again.stats.samples == 0
    assert second.to_list() == rows
    rater.close()


def test_response_format_modes_against_llama_cpp(llama, shared_cache, tmp_path):
    ds = on_disk(pool([10, 11]), tmp_path)
    for mode in ("json_object", "text", "auto"):
        rater = rate(base_url=llama.base_url, cache_path=shared_cache, **fast(response_format=mode, max_reasks=0))
        rows = ds.map(rater, batched=True).to_list()
        assert_rated_or_failed_with_reason(rows)
        errors = [r["rating_error"] for r in rows]
        if mode == "json_object":
            # Any-JSON grammar: the reply is always JSON, the keys may still be wrong.
            assert not any(e and e.startswith(("no_json", "invalid_json", "empty_output")) for e in errors), errors
        if mode == "auto":
            # llama.cpp accepts the schema, so auto keeps constrained decoding and every answer parses.
            assert errors == [None, None] and not rater.stats.response_format_fallback


def test_faults_end_rated_or_failed_and_a_restart_resends_nothing_answered(llama, tmp_path):
    """Drops, 500/503/429 with Retry-After, garbled bodies and garbage text, then a restart."""
    always_garbage, always_500 = 5, 6
    cycle = ["drop", "500", "429", "garbage_body", "503"]

    def plan(index, request):
        if request.sample == always_garbage:
            return "garbage"
        if request.sample == always_500:
            return "500"
        return cycle[index] if index < len(cycle) else None

    ds = on_disk(pool(range(7)), tmp_path)
    cache_path = str(tmp_path / "faults.sqlite")
    options = fast(concurrency=3, max_retries=4, max_reasks=1, cache_path=cache_path)
    with FaultInjectingProxy(llama.base_url.rsplit("/v1", 1)[0], plan, retry_after=1.0) as proxy:
        rater = rate(base_url=proxy.url, **options)
        # batch_size=2: the first batch (samples 0, 1) ends all-success, later ones hold failures;
        # the typed columns must survive that.
        rated = ds.map(rater, batched=True, batch_size=2)
        rows = rated.to_list()
        assert_rated_or_failed_with_reason(rows)
        by_id = {sample_id(r): r for r in rows}
        assert all(by_id[i]["rating_error"] is None for i in range(5)), {i: by_id[i]["rating_error"] for i in range(5)}
        assert by_id[always_garbage]["rating_error"].startswith("no_json")
        assert by_id[always_garbage]["rating_output"] == GARBAGE_TEXT
        assert by_id[always_500]["rating_error"].startswith("request_failed") and "500" in by_id[always_500]["rating_error"]
        stats = rater.stats
        assert {"connection", "http_500", "http_429", "http_503", "bad_response"} <= set(stats.transport_errors)
        assert stats.failures == Counter({"no_json": 1, "request_failed": 1})
        # The garbage sample was asked once more (a re-ask), then given up on.
        assert [r.turns for r in proxy.requests if r.sample == always_garbage] == [1, 3]
        # Retry-After was honoured: the retry after a 429/503 waited at least its second.
        for limited in (r for r in proxy.requests if r.fault in ("429", "503")):
            nxt = min((r for r in proxy.requests if r.sample == limited.sample and r.index > limited.index), key=lambda r: r.index)
            assert nxt.time - limited.time >= 0.95
        first_requests = Counter(r.sample for r in proxy.requests)
        assert first_requests[always_500] == 1 + options["max_retries"]

        # Restart: a new transform (as a new process would build), same cache, no faults but the
        # permanent ones. Nothing that was answered is requested again.
        proxy.reset()
        restarted = rate(base_url=proxy.url, **options)
        rerated = ds.map(restarted, batched=True, batch_size=2, load_from_cache_file=False).to_list()
        assert {r.sample for r in proxy.requests} == {always_500}
        assert [r["score"] for r in rerated] == [r["score"] for r in rows]
        assert [r["rating_output"] for r in rerated] == [r["rating_output"] for r in rows]
        assert restarted.stats.cache_hits == 5 + 2  # five first answers, the garbage answer and its re-ask
    rater.close()
    restarted.close()


def test_a_stalled_request_times_out_and_is_retried(llama, tmp_path):
    from datasets import Dataset

    # The stall outlasts the per-request timeout; the retry gets an instant (garbage) answer, so no
    # real generation races the short timeout.
    plan = lambda i, r: "stall" if i == 0 else "garbage"  # noqa: E731
    with FaultInjectingProxy(llama.base_url.rsplit("/v1", 1)[0], plan, stall_seconds=2.0) as proxy:
        rater = rate(base_url=proxy.url, cache_path=str(tmp_path / "c.sqlite"), **fast(request_timeout=0.5, max_reasks=0))
        (row,) = Dataset.from_list(pool([30])).map(rater, batched=True).to_list()
    assert rater.stats.transport_errors == Counter({"timeout": 1}) and rater.stats.retries == 1
    assert row["rating_error"].startswith("no_json") and row["rating_output"] == GARBAGE_TEXT
    assert [r.fault for r in proxy.requests] == ["stall", "garbage"]


def test_endpoints_share_the_load_and_a_dead_one_is_routed_around(llama, tmp_path):
    from datasets import Dataset

    upstream = llama.base_url.rsplit("/v1", 1)[0]
    garbage = lambda i, r: "garbage"  # noqa: E731  (instant answers: this test is about routing, not the model)
    options = fast(concurrency=4, max_reasks=0, max_retries=3)
    ds = Dataset.from_list(pool(range(40, 48)))
    with FaultInjectingProxy(upstream, garbage) as a, FaultInjectingProxy(upstream, garbage) as b:
        rater = rate(base_url=[a.url, b.url], cache_path=str(tmp_path / "ab.sqlite"), **options)
        rows = ds.map(rater, batched=True).to_list()
        assert len(a.requests) + len(b.requests) == 8 and a.requests and b.requests
        assert all(r["rating_error"].startswith("no_json") for r in rows)

        dead = f"http://127.0.0.1:{free_port()}/v1"
        rater = rate(base_url=[dead, a.url], cache_path=str(tmp_path / "dead.sqlite"), **options)
        rows = ds.map(rater, batched=True).to_list()
    # Every sample was answered by the live endpoint; the dead one only cost retries.
    assert rater.stats.transport_errors["connection"] >= 1
    assert rater.stats.failures == Counter({"no_json": 8})
    assert all(r["rating_output"] == GARBAGE_TEXT for r in rows)


def test_auto_falls_back_to_text_when_the_server_rejects_response_format(llama, shared_cache, tmp_path):
    ds = on_disk(pool([12, 13]), tmp_path)
    with FaultInjectingProxy(llama.base_url.rsplit("/v1", 1)[0], lambda i, r: "reject_response_format") as proxy:
        rater = rate(base_url=proxy.url, cache_path=shared_cache, **fast(response_format="auto", max_reasks=0))
        rows = ds.map(rater, batched=True).to_list()
    assert rater.stats.response_format_fallback
    assert_rated_or_failed_with_reason(rows)
    assert not any((r["rating_error"] or "").startswith("bad_request") for r in rows)
    answered = [r for r in proxy.requests if r.fault is None]
    assert answered and not any(r.has_response_format for r in answered)


def test_error_budget_stops_a_run_that_gets_no_answers(tmp_path):
    from datasets import Dataset

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    rater = rate(
        base_url=dead,
        cache_path=str(tmp_path / "c.sqlite"),
        **fast(max_retries=1, error_budget=0.5, error_budget_min_samples=3, concurrency=2),
    )
    with pytest.raises(RatingAbortedError, match="got no answer from .*run the same command again") as info:
        Dataset.from_list(pool(range(8))).map(rater, batched=True)
    assert "ConnectError" in str(info.value)
    assert rater.stats.failures["request_failed"] >= 2


def test_a_rejected_sample_fails_alone_but_wholesale_rejection_stops_the_run(llama, tmp_path):
    from datasets import Dataset

    upstream = llama.base_url.rsplit("/v1", 1)[0]
    ds = Dataset.from_list(pool(range(50, 56)))
    plan = lambda i, r: "400" if r.sample == 50 else "garbage"  # noqa: E731
    with FaultInjectingProxy(upstream, plan) as proxy:
        rater = rate(base_url=proxy.url, cache_path=str(tmp_path / "a.sqlite"), **fast(response_format="text", max_reasks=0))
        rows = {sample_id(r): r for r in ds.map(rater, batched=True).to_list()}
        # A 400 is not retried: the sample fails with the server's reason, the others go on.
        assert rows[50]["rating_error"].startswith("bad_request: HTTP 400") and "context window" in rows[50]["rating_error"]
        assert [r.sample for r in proxy.requests].count(50) == 1
        assert all(rows[i]["rating_error"].startswith("no_json") for i in range(51, 56))

        proxy.reset(lambda i, r: "400")
        rater = rate(
            base_url=proxy.url,
            cache_path=str(tmp_path / "b.sqlite"),
            **fast(response_format="text", error_budget=0.5, error_budget_min_samples=3, concurrency=1),
        )
        with pytest.raises(RatingAbortedError, match="samples got no answer.*fit its context"):
            ds.map(rater, batched=True)


def test_a_wrong_url_stops_at_once_with_what_to_check(llama, tmp_path):
    from datasets import Dataset

    wrong = llama.base_url.replace("/v1", "/nothing/here")
    rater = rate(base_url=wrong, cache_path=str(tmp_path / "c.sqlite"), **fast())
    with pytest.raises(RatingAbortedError, match="404.*Check base_url"):
        Dataset.from_list(pool(range(3))).map(rater, batched=True)
    assert rater.stats.retries == 0


def test_unbatched_map_num_proc_and_formatted_batches_give_the_same_ratings(llama, shared_cache, tmp_path):
    from datasets import Features

    base = on_disk(pool(range(4)), tmp_path)  # answers are in the shared cache from the first test
    with FaultInjectingProxy(llama.base_url.rsplit("/v1", 1)[0]) as proxy:
        reference = base.map(rate(base_url=proxy.url, cache_path=shared_cache, **fast()), batched=True).to_list()
        unbatched = base.map(rate(base_url=proxy.url, cache_path=shared_cache, **fast()), load_from_cache_file=False)
        multi = base.map(
            rate(base_url=proxy.url, cache_path=shared_cache, **fast()), batched=True, batch_size=1, num_proc=2,
            load_from_cache_file=False,
        )
        rater = rate(base_url=proxy.url, cache_path=shared_cache, **fast())
        # A formatted dataset hands the transform plain columns; `features=` fixes the new columns' types.
        features = Features({**base.features, **rater.features()})
        formatted = base.with_format("numpy").map(rater, batched=True, features=features, load_from_cache_file=False)
    assert unbatched.to_list() == reference
    assert multi.to_list() == reference
    assert [int(s) for s in formatted.with_format(None)["score"]] == [r["score"] for r in reference]
    # Every answer came from the cache: not one request reached the server.
    assert proxy.requests == []


def test_ds2_rate_cli_with_a_yaml_config_and_flags(llama, tmp_path, capsys):
    import yaml
    from datasets import load_dataset

    from ds2_hf.cli import main

    src = tmp_path / "pool.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in pool(range(60, 63))))
    with FaultInjectingProxy(llama.base_url.rsplit("/v1", 1)[0], lambda i, r: "garbage" if r.sample == 62 else "500") as proxy:
        config = tmp_path / "rate.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "input": str(src),
                    "model": ALIAS,
                    "base_url": [proxy.url],
                    "cache_path": str(tmp_path / "c.sqlite"),
                    "max_retries": 1,
                    "backoff_base": 0.01,
                    "max_reasks": 0,
                    "progress": False,
                }
            )
        )
        out = tmp_path / "rated.parquet"
        stats = tmp_path / "stats.json"
        code = main(["rate", "--config", str(config), "--output", str(out), "--stats", str(stats), "--max_tokens", "16"])
    assert code == 0
    rows = {sample_id(r): r for r in load_dataset("parquet", data_files=str(out), split="train").to_list()}
    assert rows[60]["rating_error"].startswith("request_failed") and rows[62]["rating_error"].startswith("no_json")
    written = json.loads(stats.read_text())
    assert written["output"]["failures"] == {"request_failed": 2, "no_json": 1}
    assert written["config"]["max_tokens"] == 16 and written["config"]["max_retries"] == 1  # flag and YAML
    printed = capsys.readouterr().out
    assert "failed 3" in printed and f"wrote {out}" in printed


_CLI = textwrap.dedent(
    """
    import sys
    from transformers import HfArgumentParser
    from ds2_hf.commands import rate as command

    parser = HfArgumentParser([])
    command.register(parser)
    sys.exit(command.run(parser.parse_args(sys.argv[1:])))
    """
)


def test_kill_9_half_way_then_rerun_completes_with_the_same_scores(llama, tmp_path):
    from datasets import load_dataset

    n = 6
    src = tmp_path / "pool.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in pool(range(20, 20 + n))))
    script = tmp_path / "rate_cli.py"
    script.write_text(_CLI)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])

    def command(cache: Path, out: Path, stats: Path) -> list[str]:
        return [
            sys.executable, str(script), str(src), "--output", str(out), "--model", ALIAS,
            "--base_url", llama.base_url, "--cache_path", str(cache), "--max_tokens", "48",
            "--response_format", "json_schema", "--map_batch_size", "2", "--concurrency", "1",
            "--no_progress", "--stats", str(stats),
        ]  # fmt: skip

    cache = tmp_path / "resume.sqlite"
    out = tmp_path / "rated.parquet"
    victim = subprocess.Popen(command(cache, out, tmp_path / "killed.json"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answered = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if cache.exists():
            try:
                answered = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:  # table not created yet
                answered = 0
        if answered >= 2:
            break
        time.sleep(0.05)
    assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    assert not out.exists()
    answered = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 2 <= answered < n

    resumed = subprocess.run(command(cache, out, tmp_path / "resumed.json"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stats = json.loads((tmp_path / "resumed.json").read_text())
    assert stats["process"]["cache_hits"] == answered
    assert stats["process"]["requests_sent"] == n - answered
    assert stats["output"]["rows"] == n

    fresh_out = tmp_path / "uninterrupted.parquet"
    clean = subprocess.run(
        command(tmp_path / "fresh.sqlite", fresh_out, tmp_path / "fresh.json"), env=env, capture_output=True, text=True, timeout=300
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    got = load_dataset("parquet", data_files=str(out), split="train").to_list()
    want = load_dataset("parquet", data_files=str(fresh_out), split="train").to_list()
    assert [r["instruction"] for r in got] == [r["instruction"] for r in want]
    assert [r["score"] for r in got] == [r["score"] for r in want]
    assert [r["rating_output"] for r in got] == [r["rating_output"] for r in want]
    assert_rated_or_failed_with_reason(got)
