"""Curation core on clusterable synthetic data with a known transition matrix (real FAISS, no mocks)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from datasets import Dataset

from ds2_hf.curation.api import CurationConfig, curate, curate_arrays
from ds2_hf.curation.detection import _epoch_subsamples, noise_rates
from ds2_hf.curation.knn import NeighborIndex, brute_force, recall_at_k
from ds2_hf.curation.report import CurationReport
from ds2_hf.curation.synthetic import default_transition, make_clusterable
from ds2_hf.curation.transition import _moments, fit_transition, hoc_loss_and_grad

P_TRUE = np.array([0.1, 0.15, 0.2, 0.25, 0.2, 0.1])


@pytest.fixture(scope="module")
def pool():
    # 8,000 rows in clusters of 50: the 2-NN clusterability DS2 assumes holds by construction.
    return make_clusterable(8_000, dim=48, T=default_transition(), p=P_TRUE, seed=11)


def _random_unit(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- k-NN
def test_global_search_excludes_self_by_index_and_matches_brute_force():
    x = _random_unit(600, 16, 0)
    index = NeighborIndex(x, "exact")
    idx, dist = index.search(10)
    assert not (idx == np.arange(600)[:, None]).any()
    truth_i, truth_d = brute_force(x, np.arange(600), 10)
    np.testing.assert_array_equal(idx, truth_i)
    np.testing.assert_allclose(dist, truth_d, atol=1e-5)
    assert (np.diff(dist, axis=1) >= -1e-6).all(), "neighbours must be sorted nearest first"


def test_exact_duplicates_are_ordinary_neighbours():
    x = _random_unit(200, 8, 1)
    x[1] = x[0]  # an exact duplicate pair
    idx, dist = NeighborIndex(x, "exact").search(3)
    assert idx[0, 0] == 1 and idx[1, 0] == 0
    assert dist[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert 0 not in idx[0] and 1 not in idx[1]


@pytest.mark.parametrize("fraction", [0.1, 0.35, 1.0])
def test_exact_subsample_search_equals_direct_search_inside_subsample(fraction):
    n = 3_000
    x = _random_unit(n, 24, 2)
    index = NeighborIndex(x, "exact")
    rng = np.random.default_rng(3)
    members = np.sort(rng.choice(n, size=int(n * fraction), replace=False))
    got_i, got_d = index.search(9, members=members)
    sub = x[members]
    direct_i, direct_d = brute_force(sub, np.arange(len(members)), 9)
    np.testing.assert_array_equal(got_i, members[direct_i])
    np.testing.assert_allclose(got_d, direct_d, atol=1e-5)


def test_exact_subsample_fallback_rows_still_exact():
    # A tiny subsample forces many rows to see too few members in their global list.
    n = 2_000
    x = _random_unit(n, 16, 4)
    index = NeighborIndex(x, "exact")
    index.search(5)  # caches a short global list first
    members = np.sort(np.random.default_rng(5).choice(n, size=60, replace=False))
    got_i, _ = index.search(5, members=members)
    direct_i, _ = brute_force(x[members], np.arange(60), 5)
    np.testing.assert_array_equal(got_i, members[direct_i])


def test_ivf_recall_is_measured_and_reaches_target(pool):
    index = NeighborIndex(pool.embeddings, "ivf", nlist=40, target_recall=0.95, recall_queries=400, seed=0)
    assert index.method == "ivf"
    assert index.info.recall["global@10"] >= 0.95
    assert 1 <= index.nprobe <= 40
    # Independent check on other queries, global and inside a subsample.
    q = np.arange(0, 8_000, 37)
    found, _ = index.search(10)
    truth, _ = brute_force(pool.embeddings, q, 10)
    assert recall_at_k(found[q], truth) >= 0.93
    members = np.sort(np.random.default_rng(1).choice(8_000, 3_000, replace=False))
    assert index.measure_recall(9, members, 300) >= 0.9


def test_ivf_with_one_probe_reports_low_recall_honestly():
    x = _random_unit(4_000, 32, 6)  # no cluster structure: one probe misses most neighbours
    index = NeighborIndex(x, "ivf", nlist=64, nprobe=1, recall_queries=200)
    assert index.info.recall["global@10"] < 0.5


# ----------------------------------------------------------------------------- HOC
def test_hoc_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    U, v = rng.standard_normal((6, 6)), rng.standard_normal(6)
    c3 = rng.random((6, 6, 6))
    c3 /= c3.sum()
    c2, c1 = c3.sum(2), c3.sum((1, 2))
    _, dU, dv = hoc_loss_and_grad(U, v, c1, c2, c3)
    eps = 1e-6
    for i, j in [(0, 0), (2, 5), (5, 1)]:
        up, down = U.copy(), U.copy()
        up[i, j] += eps
        down[i, j] -= eps
        num = (hoc_loss_and_grad(up, v, c1, c2, c3)[0] - hoc_loss_and_grad(down, v, c1, c2, c3)[0]) / (2 * eps)
        assert num == pytest.approx(dU[i, j], abs=1e-7)
    vp, vm = v.copy(), v.copy()
    vp[3] += eps
    vm[3] -= eps
    num = (hoc_loss_and_grad(U, vp, c1, c2, c3)[0] - hoc_loss_and_grad(U, vm, c1, c2, c3)[0]) / (2 * eps)
    assert num == pytest.approx(dv[3], abs=1e-7)


def test_hoc_fit_recovers_T_from_exact_moments_and_keeps_best_iterate():
    T = default_transition()
    _, _, c3 = _moments(T, P_TRUE)
    fit = fit_transition(c3, steps=1500, seed=0)
    assert np.abs(fit.T - T).max() < 0.01
    assert np.abs(fit.p - P_TRUE).max() < 0.01
    assert fit.loss <= fit.initial_loss
    np.testing.assert_allclose(fit.T.sum(axis=1), 1.0)
    # best iterate: the reported loss is the minimum over all steps, not the last one.
    short = fit_transition(c3, steps=3, seed=0)
    assert short.loss <= short.initial_loss


def test_noise_rates_follow_bayes_and_are_clipped():
    T = np.eye(3)
    np.testing.assert_allclose(noise_rates(T, np.full(3, 1 / 3)), 0.05)  # perfect rater -> floor
    T = np.array([[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(noise_rates(T, np.array([0.5, 0.5])), 0.5)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("sample_size", [50_000, 3_000])
def test_curation_recovers_T_and_improves_score_accuracy(pool, sample_size):
    result = curate_arrays(
        pool.embeddings, pool.rated_scores, seed=0, sample_size=sample_size, hoc_sample_size=sample_size, hoc_rounds=10
    )
    T_hat = result.report.transition_matrix
    # Tolerance: 8k rows give pattern frequencies with standard errors ~0.005 and the 3rd-order
    # moments of 216 cells are sparser; 0.03 mean / 0.12 max absolute error is what a correct
    # estimator reaches here (the doubled-pool bug of the original code estimates T = identity,
    # a mean error of ~0.1).
    err = np.abs(T_hat - pool.T)
    assert err.mean() < 0.03, err
    assert err.max() < 0.12, err
    raw_acc = (pool.rated_scores == pool.true_scores).mean()
    cur_acc = (result.curated_score == pool.true_scores).mean()
    assert raw_acc < 0.75
    assert cur_acc > raw_acc + 0.15
    assert result.report.n_changed > 0
    assert result.report.n_flagged >= result.report.n_changed * 0.9
    if sample_size < 8_000:
        det = result.report.detection
        assert det["draws_min"] >= 10 and det["draws_max"] - det["draws_min"] <= 1


def test_same_seed_same_output_different_seed_differs_only_in_randomised_parts(pool):
    kw = dict(sample_size=2_500, hoc_sample_size=2_500, hoc_rounds=5, epochs=10)
    a = curate_arrays(pool.embeddings, pool.rated_scores, seed=5, **kw)
    b = curate_arrays(pool.embeddings, pool.rated_scores, seed=5, **kw)
    c = curate_arrays(pool.embeddings, pool.rated_scores, seed=6, **kw)
    np.testing.assert_array_equal(a.curated_score, b.curated_score)
    np.testing.assert_array_equal(a.curation_confidence, b.curation_confidence)
    assert a.report.T == b.report.T
    assert a.report.T != c.report.T  # other subsamples
    np.testing.assert_array_equal(a.longtail_score, c.longtail_score)  # no randomness in long-tail


def test_epoch_subsamples_are_balanced_and_distinct():
    valid = np.arange(1_000)
    draws = np.zeros(1_000, dtype=int)
    for members in _epoch_subsamples(valid, 300, 7, np.random.default_rng(0)):
        assert len(members) == 300 and len(np.unique(members)) == 300
        draws[members] += 1
    assert draws.min() == 2 and draws.max() == 3  # 7 * 300 / 1000 = 2.1


def test_longtail_is_tanh_of_half_mean_distance_to_other_rows():
    x = _random_unit(500, 12, 7)
    scores = np.random.default_rng(0).integers(0, 6, 500)
    res = curate_arrays(x, scores, k=10)
    _, d = brute_force(x, np.arange(500), 10)
    np.testing.assert_allclose(res.longtail_score, np.tanh(d.mean(axis=1) / 2), rtol=1e-5)
    assert res.longtail_score.dtype == np.float32
    assert ((res.longtail_score >= 0) & (res.longtail_score < 1)).all()


# ----------------------------------------------------------------------------- Dataset API
def _dataset(data, null_every=None):
    scores = data.rated_scores.astype(object)
    if null_every:
        scores[::null_every] = None
    return Dataset.from_dict(
        {"id": list(range(len(scores))), "score": list(scores), "embedding": data.embeddings.tolist(), "text": ["x"] * len(scores)}
    )


@pytest.fixture(scope="module")
def small():
    return make_clusterable(1_500, dim=16, seed=3)


def test_curate_dataset_adds_columns_keeps_rows_and_handles_nulls(small):
    ds = _dataset(small, null_every=25)
    out, report = curate(ds, seed=0)
    assert len(out) == len(ds)
    assert out.column_names == ["id", "score", "embedding", "text", "curated_score", "curation_confidence", "score_flagged", "longtail_score"]
    assert str(out.features["curated_score"].dtype) == "int64"
    assert str(out.features["curation_confidence"].dtype) == "float32"
    assert str(out.features["longtail_score"].dtype) == "float32"
    curated, scores = out["curated_score"], out["score"]
    nulls = [i for i, s in enumerate(scores) if s is None]
    assert len(nulls) == 60 and report.n_null == 60 and report.n_scored == 1_440
    assert all(curated[i] is None and out["score_flagged"][i] is None for i in nulls)
    assert all(out["longtail_score"][i] is not None for i in nulls)
    assert all(c is not None for i, c in enumerate(curated) if i not in set(nulls))
    # the same result as the array API on the same rows
    res = curate_arrays(small.embeddings, np.where(np.arange(1_500) % 25 == 0, -1, small.rated_scores), seed=0)
    assert [c if c is not None else -1 for c in curated] == res.curated_score.tolist()
    assert report.n_changed == sum(1 for c, s in zip(curated, scores) if s is not None and c != s)


def test_curate_works_on_indices_mapping_and_in_view_order(small):
    ds = _dataset(small).shuffle(seed=4).select(range(900))
    assert ds._indices is not None
    out, _ = curate(ds, seed=1)
    assert out["id"] == ds["id"]
    ids = np.array(ds["id"])
    res = curate_arrays(small.embeddings[ids], small.rated_scores[ids], seed=1)
    assert out["curated_score"] == res.curated_score.tolist()
    np.testing.assert_allclose(out["longtail_score"], res.longtail_score, rtol=1e-6)


def test_rerun_on_own_output_replaces_columns(small):
    out, _ = curate(_dataset(small), seed=0)
    again, _ = curate(out, seed=0, tau=0.8)
    assert again.column_names == out.column_names
    changed = sum(a != b for a, b in zip(again["curated_score"], again["score"]))
    assert changed <= sum(a != b for a, b in zip(out["curated_score"], out["score"]))


def test_embeddings_argument_instead_of_column(small):
    ds = Dataset.from_dict({"score": small.rated_scores.tolist()})
    out, report = curate(ds, embeddings=small.embeddings)
    assert "curated_score" in out.column_names and report.n_rows == 1_500


def test_report_json_round_trip(small, tmp_path):
    _, report = curate(_dataset(small), CurationConfig(seed=2, tau=0.4))
    path = tmp_path / "r.json"
    report.to_json(path)
    back = CurationReport.from_json(path)
    assert back == report
    assert CurationReport.from_json(report.to_json()) == report
    data = json.loads(path.read_text())
    for key in ("T", "p", "noise_rates", "transition_counts", "params", "seed", "knn", "n_flagged", "n_changed", "n_null"):
        assert key in data
    assert data["params"]["tau"] == 0.4 and data["seed"] == 2
    assert np.asarray(data["transition_counts"]).sum() == 1_500
    assert "recall" in data["knn"] and data["knn"]["method"] == "exact"
    assert "T (rows: true score" in report.summary()


# ----------------------------------------------------------------------------- bad input
def test_missing_columns_name_the_column(small):
    ds = _dataset(small)
    with pytest.raises(ValueError, match="Score column 'rating' not found"):
        curate(ds, score_column="rating")
    with pytest.raises(ValueError, match="Embedding column 'emb' not found"):
        curate(ds, embedding_column="emb")


def test_bad_embeddings_are_named_by_row():
    good = _random_unit(30, 4, 0).tolist()
    ragged = [list(r) for r in good]
    ragged[7] = ragged[7][:3]
    ds = Dataset.from_dict({"score": [i % 6 for i in range(30)], "embedding": ragged})
    with pytest.raises(ValueError, match="row 7 .* dimension 3, expected 4"):
        curate(ds)
    nan = [list(r) for r in good]
    nan[12][0] = float("nan")
    with pytest.raises(ValueError, match="row 12 .*NaN or inf"):
        curate(Dataset.from_dict({"score": [i % 6 for i in range(30)], "embedding": nan}))
    inf = np.array(good)
    inf[3, 1] = np.inf
    with pytest.raises(ValueError, match="row 3"):
        curate_arrays(inf, np.arange(30) % 6)
    with pytest.raises(ValueError, match="dimension 4, expected 8"):
        curate_arrays(np.array(good), np.arange(30) % 6, expected_dim=8)
    with pytest.raises(ValueError, match="Got 29 embeddings for 30 rows"):
        curate_arrays(np.array(good)[:29], np.arange(30) % 6)
    zero = np.array(good)
    zero[5] = 0
    with pytest.raises(ValueError, match="row 5 .* all zeros"):
        curate_arrays(zero, np.arange(30) % 6)


@pytest.mark.parametrize("bad, match", [(7, "Score 7 .* row 4 is outside 0..5"), (-3, "Score -3 .* row 4"), (2.5, "2.5 .* row 4 is not an integer")])
def test_scores_out_of_range_are_named(bad, match):
    scores = [float(i % 6) for i in range(30)]
    scores[4] = bad
    x = _random_unit(30, 4, 0)
    with pytest.raises(ValueError, match=match):
        curate_arrays(x, np.array(scores) if isinstance(bad, float) else np.array(scores, dtype=np.int64))


def test_too_few_rows_and_too_few_scored_rows():
    x = _random_unit(10, 4, 0)
    with pytest.raises(ValueError, match="more than k=10 rows"):
        curate_arrays(x, np.arange(10) % 6)
    x = _random_unit(40, 4, 0)
    scores = np.full(40, -1)
    scores[:5] = [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="Only 5 of 40 rows have a score"):
        curate_arrays(x, scores)


def test_all_scores_equal_warns_and_changes_nothing():
    x = _random_unit(200, 8, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = curate_arrays(x, np.full(200, 3))
    assert any("same score" in str(w.message) for w in caught)
    assert (res.curated_score == 3).all() and not res.score_flagged.any()
    assert res.report.n_changed == 0 and res.report.warnings
    np.testing.assert_array_equal(res.report.transition_matrix, np.eye(6))


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="tau"):
        CurationConfig(tau=1.5)
    with pytest.raises(ValueError, match="knn_method"):
        CurationConfig(knn_method="hnsw")
    with pytest.raises(TypeError, match="Unknown curation option"):
        curate_arrays(_random_unit(30, 4, 0), np.arange(30) % 6, config=CurationConfig(), nope=1)


def test_curate_on_the_ivf_path_reports_recall_and_still_curates(pool):
    res = curate_arrays(
        pool.embeddings, pool.rated_scores, knn_method="ivf", nlist=40, sample_size=4_000,
        hoc_sample_size=4_000, hoc_rounds=10, epochs=10, recall_queries=300, seed=0,
    )
    knn = res.report.knn
    assert knn["method"] == "ivf" and knn["nlist"] == 40 and knn["nprobe"] >= 1
    assert knn["recall"]["global@10"] >= 0.95  # measured on queries not used for tuning
    assert knn["recall"]["subsample@9"] >= 0.95  # nprobe is tuned on subsample searches too
    assert "tuning@10" in knn["recall"] and knn["recall"]["subsample_tuning@9"] >= 0.97
    exact = curate_arrays(
        pool.embeddings, pool.rated_scores, knn_method="exact", sample_size=4_000,
        hoc_sample_size=4_000, hoc_rounds=10, epochs=10, seed=0,
    )
    acc = lambda r: (r.curated_score == pool.true_scores).mean()  # noqa: E731
    assert acc(res) > (pool.rated_scores == pool.true_scores).mean() + 0.15
    assert abs(acc(res) - acc(exact)) < 0.02
    # ~2% of neighbours are missed, so a few rows' long-tail scores move; the bulk must not.
    close = np.abs(res.longtail_score - exact.longtail_score) <= 0.02
    assert close.mean() >= 0.97
    assert (res.longtail_score >= exact.longtail_score - 1e-5).all()  # a missed neighbour can only raise the mean distance


def test_too_few_draws_to_reach_tau_warns(pool):
    from ds2_hf.curation.api import max_confidence

    assert max_confidence(5, 6) < 0.5 < max_confidence(6, 6)
    with pytest.warns(UserWarning, match="cannot exceed 0.468 < tau=0.5"):
        res = curate_arrays(pool.embeddings, pool.rated_scores, sample_size=4_000, hoc_sample_size=4_000, hoc_rounds=5, epochs=10, min_draws=5)
    assert res.report.n_changed == 0 and res.report.n_flagged > 0
