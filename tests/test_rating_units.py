"""Rating pieces that need no model: templates, parsing, config, cache, error classification, fingerprints."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap

import pytest

from ds2_hf.prompts import PromptTemplate, get_template, list_templates
from ds2_hf.rating import RatingConfig, RatingParseError, parse_rating, rate
from ds2_hf.rating.backends import (
    FatalError,
    RetryableError,
    SampleError,
    classify_error,
    parse_retry_after,
    response_format_payload,
)
from ds2_hf.rating.cache import Completion, RequestCache, request_key

DS2 = get_template("ds2")


# --- templates -------------------------------------------------------------------------------
def test_builtin_templates_are_versioned_and_hash_their_content():
    assert list_templates() == ["alpagasus", "ds2"]
    assert DS2.id.startswith("ds2@1#") and len(DS2.id) == len("ds2@1#") + 12
    assert get_template("ds2@1") == DS2
    edited = PromptTemplate(**{**DS2.to_dict(), "user": DS2.user + "\nBe strict."})
    assert edited.id != DS2.id and edited.version == DS2.version
    # The description is for humans and does not change the identity.
    assert PromptTemplate(**{**DS2.to_dict(), "description": "x"}).id == DS2.id
    assert hash(DS2) == hash(get_template("ds2"))


def test_ds2_template_asks_for_the_four_keys_and_shows_the_serialized_sample():
    example = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]}
    (message,) = DS2.messages(example)
    assert message["role"] == "user"
    for key in ("Rarity", "Complexity", "Informativeness", "Overall rating"):
        assert key in message["content"]
    assert message["content"].endswith("### user: Hi there\n### assistant: Hello!\n")
    schema = DS2.json_schema()
    assert schema["required"] == ["Rarity", "Complexity", "Informativeness", "Overall rating"]
    assert schema["properties"]["Rarity"] == {"type": "integer", "minimum": 1, "maximum": 10, "enum": list(range(1, 11))}


def test_alpagasus_template_splits_request_and_response():
    t = get_template("alpagasus")
    (message,) = t.messages({"instruction": "Name a prime.", "input": "below 5", "output": "3"})
    assert "### user: Name a prime.\n\nbelow 5\n" in message["content"]
    assert message["content"].rstrip().endswith("3")
    assert t.compress_score(7) == 5 and t.compress_score(0) == 0 and t.num_classes == 6


@pytest.mark.parametrize("overall,score", [(1, 0), (4, 0), (5, 1), (8, 4), (9, 5), (10, 5)])
def test_ds2_compression(overall, score):
    assert DS2.compress_score(overall) == score


def test_user_template_round_trips_through_yaml_and_json(tmp_path):
    mine = PromptTemplate(
        name="mine", version="3", user="Rate:\n{sample}\nReply {\"Overall rating\": 1-10}", fields={"Overall rating": "overall"}
    )
    for suffix in (".yaml", ".json"):
        path = mine.to_file(tmp_path / f"mine{suffix}")
        loaded = get_template(str(path))
        assert loaded == mine and loaded.id == mine.id


def test_bad_templates_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="placeholders"):
        PromptTemplate(name="x", version="1", user="no placeholder here")
    with pytest.raises(ValueError, match="overall_key"):
        PromptTemplate(name="x", version="1", user="{sample}", fields={"Score": "s"})
    with pytest.raises(ValueError, match="Unknown prompt template 'nope'.*Built-in templates"):
        get_template("nope")
    with pytest.raises(ValueError, match="versions"):
        get_template("ds2@9")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nuser: '{sample}'\ncolour: blue\n")
    with pytest.raises(ValueError, match="Unknown prompt template keys \\['colour'\\]"):
        get_template(str(bad))
    with pytest.raises(FileNotFoundError):
        get_template(str(tmp_path / "missing.yaml"))


def test_long_samples_are_cut_head_and_tail():
    text = "A" * 500 + "B" * 500
    (message,) = DS2.messages({"prompt": text, "completion": "Z" * 10}, max_chars=200)
    body = message["content"].split("## Sample to assess\n", 1)[1]
    assert "[... truncated ...]" in body and body.startswith("### user: AAA") and body.rstrip().endswith("Z")
    assert len(body) < 260


# --- parsing ---------------------------------------------------------------------------------
GOOD = '{"Rarity": 3, "Complexity": 4, "Informativeness": 5, "Overall rating": 7}'


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "Here is my rating:\n```json\n" + GOOD + "\n```",
        "It's the user's \"best\" effort {not json} then " + GOOD,
        '{"rarity": "3", "complexity": 4.0, "informativeness": 5, "overall_rating": "7/10"}',
        "{'Rarity': 3, 'Complexity': 4, 'Informativeness': 5, 'Overall rating': 7}",
        '{"ratings": ' + GOOD + "}",
        '{"Rarity": 1, "Complexity": 1, "Informativeness": 1, "Overall rating": 1} then ' + GOOD,
        "{ unbalanced " + GOOD,
    ],
)
def test_parse_reads_the_last_json_object(text):
    assert parse_rating(text, DS2) == {"rarity": 3, "complexity": 4, "informativeness": 5, "overall": 7}


@pytest.mark.parametrize(
    "text,code",
    [
        ("", "empty_output"),
        (None, "empty_output"),
        ("I would rate it 7 out of 10.", "no_json"),
        ("{Rarity: seven, ...", "no_json"),
        ("{Rarity = 7}", "invalid_json"),
        ('{"Rarity": 3, "Complexity": 4, "Informativeness": 5}', "missing_keys"),
        ('{"Rarity": 3, "Complexity": 4, "Informativeness": 5, "Overall rating": "high"}', "not_integer"),
        ('{"Rarity": 3, "Complexity": 4, "Informativeness": 5, "Overall rating": 7.5}', "not_integer"),
        ('{"Rarity": 3, "Complexity": 4, "Informativeness": 5, "Overall rating": true}', "not_integer"),
        ('{"Rarity": 3, "Complexity": 4, "Informativeness": 5, "Overall rating": 11}', "out_of_range"),
        ('{"Rarity": 0, "Complexity": 4, "Informativeness": 5, "Overall rating": 7}', "out_of_range"),
        # The last object decides, even when an earlier one was valid.
        (GOOD + ' and {"Overall rating": 9}', "missing_keys"),
    ],
)
def test_parse_failures_have_a_reason_and_never_a_default(text, code):
    with pytest.raises(RatingParseError) as info:
        parse_rating(text, DS2)
    assert info.value.code == code
    assert str(info.value).startswith(code + ": ")


def test_the_prompts_example_object_is_never_parsed_from_the_prompt():
    # The template shows the keys with placeholders, which are not valid JSON values.
    with pytest.raises(RatingParseError):
        parse_rating(DS2.user, DS2)


# --- config ----------------------------------------------------------------------------------
def test_config_validation_lists_every_problem():
    with pytest.raises(ValueError) as info:
        RatingConfig(model="m", backend="vllm", response_format="grammar", concurrency=0, error_budget=2)
    message = str(info.value)
    for part in ("backend must be one of", "response_format must be one of", "concurrency must be >= 1", "error_budget"):
        assert part in message
    with pytest.raises(ValueError, match="give `model`"):
        RatingConfig()
    assert RatingConfig(base_url="http://x:1/").base_url == ["http://x:1"]
    assert RatingConfig(model="m", api_key="secret").to_dict()["api_key"] == "***"


def test_rate_rejects_unknown_options_and_keeps_config_fields():
    with pytest.raises(TypeError, match="unknown options \\['concurency'\\]"):
        rate(model="m", base_url="http://x", concurency=3)
    base = RatingConfig(model="m", base_url=["http://a"], template="alpagasus", max_tokens=50)
    rater = rate(config=base, concurrency=3)
    assert rater.config.template == "alpagasus" and rater.template.name == "alpagasus"
    assert rater.config.max_tokens == 50 and rater.config.concurrency == 3


# --- backends: error classification -----------------------------------------------------------
def _http_error(status: int, headers: dict | None = None, text: str = "boom"):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, text=text, request=request)
    return HfHubHTTPError(f"{status} error", response=response)


def test_errors_are_classified_retryable_per_sample_or_fatal():
    err = classify_error(_http_error(429, {"Retry-After": "7"}), "http://x")
    assert isinstance(err, RetryableError) and err.kind == "http_429" and err.retry_after == 7.0
    assert isinstance(classify_error(_http_error(503), "http://x"), RetryableError)
    assert isinstance(classify_error(_http_error(500), "http://x"), RetryableError)
    bad = classify_error(_http_error(400, text="context length exceeded"), "http://x")
    assert isinstance(bad, SampleError) and "context length exceeded" in bad.detail and bad.status == 400
    assert "base_url" in str(classify_error(_http_error(404), "http://x"))
    assert isinstance(classify_error(_http_error(401), "http://x"), FatalError)
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    assert classify_error(httpx2.ConnectError("refused"), "http://x").kind == "connection"
    assert classify_error(TimeoutError(), "http://x").kind == "timeout"
    assert classify_error(json.JSONDecodeError("x", "doc", 0), "http://x").kind == "bad_response"
    offline = classify_error(OfflineModeIsEnabled("offline"), "http://127.0.0.1:1")
    assert isinstance(offline, FatalError) and "HF_HUB_OFFLINE" in str(offline)


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


def test_response_format_payloads():
    via_url = response_format_payload("json_schema", DS2, via_base_url=True)
    assert via_url["type"] == "json_object" and via_url["schema"] == via_url["value"] == DS2.json_schema()
    provider = response_format_payload("json_schema", DS2, via_base_url=False)
    assert provider["type"] == "json_schema" and provider["json_schema"]["schema"] == DS2.json_schema()
    assert response_format_payload("json_object", DS2, True) == {"type": "json_object"}
    assert response_format_payload("text", DS2, True) is None


# --- cache -----------------------------------------------------------------------------------
def test_request_key_is_canonical():
    a = request_key({"model": "m", "messages": [{"role": "user", "content": "x"}], "decoding": {"t": 0, "m": 5}})
    b = request_key({"decoding": {"m": 5, "t": 0}, "messages": [{"content": "x", "role": "user"}], "model": "m"})
    assert a == b and len(a) == 64
    assert a != request_key({"model": "m", "messages": [{"role": "user", "content": "y"}], "decoding": {"t": 0, "m": 5}})


def _write_many(path: str, start: int, n: int) -> None:
    cache = RequestCache(path)
    for i in range(start, start + n):
        cache.put(f"k{i}", Completion(text=f"answer {i}", finish_reason="stop", prompt_tokens=i, completion_tokens=1))


def test_cache_persists_uses_wal_and_takes_concurrent_writers(tmp_path):
    path = str(tmp_path / "c.sqlite")
    cache = RequestCache(path)
    assert cache.get("k0") is None
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, i * 50, 50)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reopened = RequestCache(path)
    assert len(reopened) == 150
    assert reopened.get("k123") == Completion("answer 123", "stop", 123, 1)
    # First answer wins: a duplicate put does not overwrite what was paid for.
    reopened.put("k123", Completion("other"))
    assert reopened.get("k123").text == "answer 123"
    import sqlite3

    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_in_an_unwritable_place_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        RequestCache(blocker / "sub" / "c.sqlite").get("k")


# --- pickling and datasets fingerprints -----------------------------------------------------
_HASH_SNIPPET = textwrap.dedent(
    """
    import ds2_hf
    from datasets.fingerprint import Hasher
    print(Hasher.hash(ds2_hf.rate(model="smollm2", base_url="http://127.0.0.1:9/v1", concurrency=4)))
    """
)


def test_fingerprint_is_deterministic_across_processes():
    import pickle

    from datasets.fingerprint import Hasher

    rater = rate(model="smollm2", base_url="http://127.0.0.1:9/v1", concurrency=4)
    here = Hasher.hash(rater)
    there = subprocess.run([sys.executable, "-c", _HASH_SNIPPET], capture_output=True, text=True, check=True).stdout.strip()
    assert here == there
    assert Hasher.hash(rate(model="smollm2", base_url="http://127.0.0.1:9/v1", concurrency=4)) == here
    assert Hasher.hash(rate(model="other", base_url="http://127.0.0.1:9/v1", concurrency=4)) != here
    assert Hasher.hash(rate(model="smollm2", base_url="http://127.0.0.1:9/v1", concurrency=4, template="alpagasus")) != here
    # Pickles carry configuration only; a copy works on its own.
    clone = pickle.loads(pickle.dumps(rater))
    assert clone.config == rater.config and clone.template == rater.template and clone._runtime is None


def test_errors_in_the_input_say_how_to_fix_them():
    from datasets import Dataset

    rater = rate(model="m", base_url="http://127.0.0.1:9/v1", progress=False)
    ds = Dataset.from_dict({"text": ["no conversation columns"]})
    with pytest.raises(ValueError, match="Cannot find a conversation.*rename_column"):
        ds.map(rater, batched=True)
