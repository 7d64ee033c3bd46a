"""Selection strategies, budgets and quotas on small hand-built datasets (real tokenizer, no mocks)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from ds2_hf.selection import SelectionConfig, select, select_indices


def _ds(n=40, seed=0, with_curation=True):
    rng = np.random.default_rng(seed)
    score = rng.integers(0, 6, n).astype(object)
    score[3] = None
    if n > 17:
        score[17] = None
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    data = {
        "id": list(range(n)),
        "score": list(score),
        "source": ["flan" if i % 4 else "dolly" for i in range(n)],
        "prompt": [f"question {i}" for i in range(n)],
        "completion": ["word " * int(rng.integers(1, 30)) for _ in range(n)],
        "embedding": emb.tolist(),
        "n_tokens": [int(v) for v in rng.integers(5, 50, n)],
    }
    if with_curation:
        curated = [None if s is None else int(min(5, s + (i % 3 == 0))) for i, s in enumerate(score)]
        data["curated_score"] = curated
        data["longtail_score"] = [float(v) for v in np.round(rng.random(n), 1)]  # rounded: many ties
    return Dataset.from_dict(data)


def test_ds2_orders_by_curated_then_longtail_then_row():
    ds = _ds()
    sel = select_indices(ds, budget=15, strategy="ds2")
    rows = ds.select(sel.indices)
    keys = [(-c, -lt) for c, lt in zip(rows["curated_score"], rows["longtail_score"])]
    assert keys == sorted(keys)
    # ties on both keys keep dataset order
    for a, b, ka, kb in zip(sel.indices, sel.indices[1:], keys, keys[1:]):
        if ka == kb:
            assert a < b
    # it is the top of the full ranking: nothing outside beats the last selected row
    rest = [(-c, -lt) for i, (c, lt) in enumerate(zip(ds["curated_score"], ds["longtail_score"])) if c is not None and i not in set(sel.indices)]
    assert min(rest) >= keys[-1]


def test_null_scores_are_never_selected_except_by_full():
    ds = _ds()
    for strategy in ("ds2", "raw", "random", "alpagasus", "deita", "longtail", "length"):
        sel = select_indices(ds, budget=38, strategy=strategy)
        assert 3 not in sel.indices and 17 not in sel.indices, strategy
        assert sel.excluded_null == 2
    assert len(select_indices(ds, budget=5, strategy="full").indices) == 40


def test_raw_ignores_curation_and_random_is_seeded():
    ds = _ds()
    raw = ds.select(select_indices(ds, budget=10, strategy="raw").indices)
    assert raw["score"] == sorted(raw["score"], reverse=True)
    r1 = select_indices(ds, budget=10, strategy="random", seed=1).indices
    r2 = select_indices(ds, budget=10, strategy="random", seed=1).indices
    r3 = select_indices(ds, budget=10, strategy="random", seed=2).indices
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(r1, r3)


def test_alpagasus_takes_high_scores_then_fills_randomly():
    ds = _ds()
    scores = ds["score"]
    high = {i for i, s in enumerate(scores) if s is not None and s >= 4}
    sel = select_indices(ds, budget=len(high) + 3, strategy="alpagasus", threshold=4, seed=0).indices
    assert set(sel[: len(high)]) == high
    assert all(scores[i] < 4 for i in sel[len(high) :])


def test_deita_respects_similarity_threshold_and_score_order():
    ds = _ds(n=60)
    emb = np.asarray(ds["embedding"], dtype=np.float32)
    with pytest.warns(UserWarning, match="fewer than the budget"):  # 0.3 leaves fewer than 20 rows
        sel = select_indices(ds, budget=20, strategy="deita", max_cosine_similarity=0.3).indices
    sims = emb[sel] @ emb[sel].T
    np.fill_diagonal(sims, -1)
    assert sims.max() <= 0.3 + 1e-6
    chosen_scores = [ds["score"][i] for i in sel]
    assert chosen_scores == sorted(chosen_scores, reverse=True)
    # the skip is real: the unfiltered score order would have taken a too-similar pair
    loose = select_indices(ds, budget=20, strategy="deita", max_cosine_similarity=1.0).indices
    assert not np.array_equal(np.sort(loose), np.sort(sel))


def test_longtail_and_length_strategies():
    ds = _ds()
    lt = ds.select(select_indices(ds, budget=8, strategy="longtail").indices)["longtail_score"]
    assert lt == sorted(lt, reverse=True)
    by_col = select_indices(ds, budget=8, strategy="length", length_column="n_tokens").indices
    n_tok = [ds["n_tokens"][i] for i in by_col]
    assert n_tok == sorted(n_tok, reverse=True)
    by_chars = select_indices(ds, budget=8, strategy="length").indices
    lens = [len(ds["completion"][i]) for i in by_chars]
    assert lens == sorted(lens, reverse=True)
    assert min(lens) >= max(len(c) for i, c in enumerate(ds["completion"]) if i not in set(by_chars) and ds["score"][i] is not None)


def test_token_budget_with_length_column_and_real_tokenizer(minilm_path):
    ds = _ds()
    sel = select_indices(ds, budget=None, budget_tokens=200, strategy="ds2", length_column="n_tokens")
    total = sum(ds["n_tokens"][i] for i in sel.indices)
    assert total <= 200 and sel.tokens == total
    # stops at the first row that would overflow
    order = select_indices(ds, budget=38, strategy="ds2").indices
    assert ds["n_tokens"][order[len(sel.indices)]] + total > 200
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    sel = select_indices(ds, budget=None, budget_tokens=150, strategy="ds2", tokenizer=tok)
    from ds2_hf.text import serialize

    counted = sum(len(tok(serialize(ds[int(i)]), add_special_tokens=False)["input_ids"]) for i in sel.indices)
    assert counted == sel.tokens <= 150 and len(sel.indices) > 0


def test_per_source_quotas_proportional_and_explicit():
    ds = _ds()
    sel = select_indices(ds, budget=20, strategy="ds2", by="source")
    pool = [s for s, sc in zip(ds["source"], ds["score"]) if sc is not None]
    assert sel.per_group == {"dolly": round(20 * pool.count("dolly") / len(pool)), "flan": 20 - round(20 * pool.count("dolly") / len(pool))}
    assert len(sel.indices) == 20
    sel = select_indices(ds, budget=10, strategy="ds2", by="source", quotas={"dolly": 0.5, "flan": 0.5})
    assert sel.per_group == {"dolly": 5, "flan": 5}
    sel = select_indices(ds, budget=10, strategy="ds2", by="source", quotas={"dolly": 2, "flan": 3})
    assert sel.per_group == {"dolly": 2, "flan": 3}
    # within a group, the strategy's order; across groups, one global order
    src = ds["source"]
    chosen = [i for i in sel.indices if src[i] == "flan"]
    ranked = [i for i in select_indices(ds, budget=38, strategy="ds2").indices if src[i] == "flan"][:3]
    assert chosen == ranked
    with pytest.raises(ValueError, match="does not hold"):
        select_indices(ds, budget=10, by="source", quotas={"alpaca": 1.0})


def test_short_pool_warns_and_select_returns_dataset():
    ds = _ds(n=12)
    with pytest.warns(UserWarning, match="fewer than the budget"):
        sub = select(ds, budget=100, strategy="ds2")
    assert len(sub) == 11 and sub.column_names == ds.column_names


def test_clear_errors():
    ds = _ds(with_curation=False)
    with pytest.raises(ValueError, match="curated score .*run ds2_hf.curate first"):
        select(ds, budget=5, strategy="ds2")
    with pytest.raises(ValueError, match="Unknown strategy 'best'"):
        select(ds, budget=5, strategy="best")
    with pytest.raises(ValueError, match="budget_tokens needs a tokenizer"):
        select(ds, budget=None, budget_tokens=100, strategy="random")
    with pytest.raises(ValueError, match="quotas need by="):
        SelectionConfig(quotas={"a": 1.0})
    with pytest.raises(ValueError, match="quotas must be a JSON object"):
        SelectionConfig(by="source", quotas="{oops")
    assert SelectionConfig(by="source", quotas='{"a": 0.5}').quotas == {"a": 0.5}
