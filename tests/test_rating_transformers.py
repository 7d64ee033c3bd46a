"""The local `transformers` backend on the real SmolLM2-135M-Instruct (dequantised from the GGUF)."""

from __future__ import annotations

import pytest

from ds2_hf.prompts import get_template
from ds2_hf.rating import parse_rating, rate

pytestmark = pytest.mark.slow

ROWS = [
    {"messages": [{"role": "user", "content": "What is 6 times 7?"}, {"role": "assistant", "content": "42."}]},
    {"messages": [{"role": "user", "content": "Name a colour of the rainbow."}, {"role": "assistant", "content": "Green."}]},
    {"messages": [{"role": "user", "content": "Spell 'cat' backwards."}, {"role": "assistant", "content": "tac"}]},
]


def test_transformers_backend_rates_in_batches_and_caches(smollm2_dir, tmp_path):
    from datasets import Dataset

    options = dict(
        backend="transformers",
        model=str(smollm2_dir),
        max_tokens=24,
        batch_size=2,
        max_reasks=0,
        progress=False,
        cache_path=str(tmp_path / "c.sqlite"),
    )
    rater = rate(**options)
    rows = Dataset.from_list(ROWS).map(rater, batched=True).to_list()
    stats = rater.stats
    assert stats.samples == 3 and stats.rated + stats.failed == 3
    assert stats.requests_sent == 3 and stats.cache_hits == 0
    # Three concurrent samples, batch size 2: two `generate` calls.
    assert sorted(rater._runtime.engine.backend.batch_sizes) == [1, 2]
    assert stats.completion_tokens > 0 and stats.prompt_tokens > stats.completion_tokens
    ds2 = get_template("ds2")
    for row in rows:
        output = row["rating_output"]
        assert output is not None
        # Only generated text comes back: never the prompt (which shows the keys as an example).
        assert "## Sample to assess" not in output and "<|im_start|>" not in output
        assert len(output) < 300  # 24 tokens at most
        if row["rating_error"] is None:
            values = parse_rating(output, ds2)
            assert row["score"] == ds2.compress_score(values["overall"]) and row["score_overall"] == values["overall"]
        else:
            assert row["score"] is None and row["rating_error"].split(":")[0] in {
                "no_json", "invalid_json", "missing_keys", "not_integer", "out_of_range", "empty_output",
            }  # fmt: skip
    assert {r["rating_model"] for r in rows} == {str(smollm2_dir)}
    rater.close()

    # The same job again: everything comes from the request cache, no model call.
    again = rate(**options)
    rerows = Dataset.from_list(ROWS).map(again, batched=True).to_list()
    assert again.stats.requests_sent == 0 and again.stats.cache_hits == stats.requests_sent
    assert rerows == rows
    assert again._runtime.engine.backend._model is None  # the model was never even loaded
    again.close()
