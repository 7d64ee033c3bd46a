"""The embedder transform with the real all-MiniLM-L6-v2, against sentence-transformers itself."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

ROWS = [
    {"id": 0, "messages": [{"role": "user", "content": "Name three primary colours."},
                           {"role": "assistant", "content": "Red, yellow and blue."}]},
    {"id": 1, "messages": [{"role": "system", "content": "You are terse."},
                           {"role": "user", "content": "What is 12 times 12?"},
                           {"role": "assistant", "content": "144"},
                           {"role": "user", "content": "And halved?"},
                           {"role": "assistant", "content": "72"}]},
    {"id": 2, "messages": [{"role": "user", "content": "Translate 'good morning' to French."},
                           {"role": "assistant", "content": "Bonjour."}]},
    {"id": 3, "messages": [{"role": "user", "content": "Write a haiku about autumn leaves falling on a quiet pond " * 3},
                           {"role": "assistant", "content": "Red leaves drift and spin / the still pond holds each one close / "
                            "winter waits below"}]},
    {"id": 4, "messages": [{"role": "user", "content": "Summarise: the mitochondrion is the powerhouse of the cell."},
                           {"role": "assistant", "content": "Mitochondria make the cell's energy."}]},
    {"id": 5, "messages": [{"role": "user", "content": "Is 97 prime?"}, {"role": "assistant", "content": "Yes."}]},
]


@pytest.fixture(scope="module")
def embedder(minilm_path):
    import torch

    torch.set_num_threads(1)
    from ds2_hf.embedding import embed

    # all-MiniLM-L6-v2 is configured for 256 tokens in sentence-transformers; match it
    return embed(model=minilm_path, max_length=256, batch_size=4, device="cpu").load()


@pytest.fixture(scope="module")
def st_model(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


@pytest.fixture(scope="module")
def cached_ds(tmp_path_factory):
    """A dataset backed by cache files (what load_dataset gives), so map results are cached on disk."""
    import datasets

    root = tmp_path_factory.mktemp("data")
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(root / "cache"))


def test_matches_sentence_transformers_on_serialized_text(embedder, st_model, cached_ds):
    from ds2_hf.curation.api import read_embeddings
    from ds2_hf.text import serialize

    out = cached_ds.map(embedder, batched=True, batch_size=4)
    ours = read_embeddings(out, "embedding")
    ref = st_model.encode([serialize(r) for r in ROWS], normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == (len(ROWS), 384) and ours.dtype == np.float32
    cos = (ours * ref).sum(axis=1)
    assert cos.min() > 0.999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # rows must not be swapped by the length sorting inside a batch: each row matches its own reference
    assert (ours @ ref.T).argmax(axis=1).tolist() == list(range(len(ROWS)))


def test_alpaca_and_prompt_completion_use_the_same_serializer(embedder, st_model):
    import datasets

    from ds2_hf.text import serialize

    alpaca = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
              {"instruction": "Sort these", "input": "b, a, c", "output": "a, b, c"}]
    pc = [{"prompt": "Say hi.", "completion": "Hi!"}, {"prompt": "Capital of Peru?", "completion": "Lima."}]
    for rows in (alpaca, pc):
        out = datasets.Dataset.from_list(rows).map(embedder, batched=True)
        ref = st_model.encode([serialize(r) for r in rows], normalize_embeddings=True)
        assert (np.asarray(out["embedding"], dtype=np.float32) * ref).sum(axis=1).min() > 0.999


def test_fixed_size_float32_column(embedder, cached_ds):
    from datasets import List, Value

    from ds2_hf.curation.api import read_embeddings
    from ds2_hf.embedding import embed_dataset

    out = cached_ds.map(embedder, batched=True)
    assert out.features["embedding"] == List(Value("float32"), length=384)
    assert out.data.schema.field("embedding").type.list_size == 384
    assert out.column_names == cached_ds.column_names + ["embedding"]
    # a formatted dataset gets numpy back; features= keeps the fixed size there too
    formatted = cached_ds.with_format("python").map(embedder, batched=True, features=embedder.features(cached_ds.features))
    assert formatted.features["embedding"] == List(Value("float32"), length=384)
    np.testing.assert_allclose(read_embeddings(formatted, "embedding"), read_embeddings(out, "embedding"), atol=1e-6)
    # re-embedding replaces the column instead of failing on a duplicate name
    assert out.map(embedder, batched=True).column_names == out.column_names
    via_helper = embed_dataset(cached_ds, embedder.config)
    assert via_helper.features["embedding"] == List(Value("float32"), length=384)
    np.testing.assert_array_equal(read_embeddings(out, "embedding"), read_embeddings(via_helper, "embedding"))
    assert out["id"] == [r["id"] for r in ROWS]


def test_pickled_state_is_configuration_only_and_fingerprint_is_stable(embedder, minilm_path):
    from datasets.fingerprint import Hasher

    from ds2_hf.embedding import EmbeddingConfig, embed

    assert embedder._model is not None  # loaded by the fixture
    state = embedder.__getstate__()
    assert set(state) == {"config"} and state["config"]["model"] == str(minilm_path)
    clone = pickle.loads(pickle.dumps(embedder))
    assert clone._model is None and clone.config == embedder.config
    assert len(pickle.dumps(embedder)) < 2000  # no weights inside

    fresh = embed(model=minilm_path, max_length=256, batch_size=4, device="cpu")
    assert Hasher.hash(fresh) == Hasher.hash(embedder) == Hasher.hash(clone)
    assert Hasher.hash(embed(config=fresh.config, pooling="cls")) != Hasher.hash(fresh)
    assert Hasher.hash(embed(config=fresh.config, max_length=128)) != Hasher.hash(fresh)

    # ...and the same in a fresh interpreter (datasets' cache is shared across processes)
    code = (
        "from datasets.fingerprint import Hasher; from ds2_hf.embedding import embed; "
        f"print(Hasher.hash(embed(model={str(minilm_path)!r}, max_length=256, batch_size=4, device='cpu')))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == Hasher.hash(fresh)
    assert isinstance(fresh.config, EmbeddingConfig)


def test_second_map_hits_the_datasets_cache(embedder, cached_ds):
    from ds2_hf.embedding import embed

    first = cached_ds.map(embedder, batched=True, batch_size=3)
    assert first.cache_files and first.cache_files != cached_ds.cache_files
    # A new, never-loaded transform with the same configuration: a cache hit must not load a model.
    again = embed(config=embedder.config)
    second = cached_ds.map(again, batched=True, batch_size=3)
    assert again._model is None
    assert second.cache_files == first.cache_files
    assert second._fingerprint == first._fingerprint
    changed = embed(config=embedder.config, pooling="cls")
    assert cached_ds.map(changed, batched=True, batch_size=3)._fingerprint != first._fingerprint
    assert changed._model is not None  # a different config recomputes


def test_cls_pooling_and_unnormalised_output(minilm_path, embedder):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ds2_hf.embedding import embed

    text = "### user: What is the boiling point of water?\n### assistant: 100 C at sea level.\n"
    cls = embed(config=embedder.config, pooling="cls", normalize=False).encode([text])[0]
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    model = AutoModel.from_pretrained(str(minilm_path)).eval()
    with torch.inference_mode():
        hidden = model(**tok([text], return_tensors="pt")).last_hidden_state[0]
    np.testing.assert_allclose(cls, hidden[0].numpy(), rtol=1e-4, atol=1e-4)
    assert abs(float(np.linalg.norm(cls)) - 1.0) > 1e-2  # really not normalised
    mean = embedder.encode([text])[0]
    expected = hidden.mean(dim=0).numpy()
    np.testing.assert_allclose(mean, expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-5)


def test_text_column_and_truncation(embedder):
    import datasets

    from ds2_hf.embedding import embed

    ds = datasets.Dataset.from_dict({"text": ["short text", "word " * 2000]})
    out = ds.map(embed(config=embedder.config, text_column="text", output_column="vec"), batched=True)
    assert out.column_names == ["text", "vec"]
    vec = np.asarray(out["vec"], dtype=np.float32)
    assert vec.shape == (2, 384) and np.isfinite(vec).all()  # 2000 words truncated, not an index error
    long_trunc = embed(config=embedder.config, text_column="text", max_length=16).encode(["word " * 2000, "word " * 14])
    assert float(long_trunc[0] @ long_trunc[1]) > 0.9999  # both cut to the same 16 tokens


def test_clear_errors(embedder):
    import datasets

    from ds2_hf.embedding import EmbeddingConfig, embed

    with pytest.raises(ValueError, match="pooling"):
        EmbeddingConfig(pooling="max")
    with pytest.raises(ValueError, match="Unknown embedding option"):
        embed(model="x", poolng="mean")
    ds = datasets.Dataset.from_list([{"prompt": "a", "completion": "b"}])
    with pytest.raises(ValueError, match="batched=True"):
        ds.map(embed(config=embedder.config))
    with pytest.raises(ValueError, match="text_column"):
        ds.map(embed(config=embedder.config, text_column="body"), batched=True)
    with pytest.raises(ValueError, match="Cannot find a conversation"):
        datasets.Dataset.from_dict({"body": ["x"]}).map(embedder, batched=True)


@pytest.mark.slow
def test_two_process_launch_preserves_order_and_resumes(tmp_path, minilm_path, embedder):
    """`accelerate launch` with 2 CPU processes, then a restart that must reuse finished shards."""
    import datasets

    from ds2_hf.curation.api import read_embeddings
    from ds2_hf.embedding import EmbeddingConfig, ShardedEmbeddingArguments, embed_sharded

    rows = [{"id": i, "instruction": f"Question number {i}: " + "why " * (i % 11), "output": f"Answer {i}."}
            for i in range(24)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "embedded.parquet"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "ds2_hf.embedding", "--dataset", str(data), "--output", str(out), "--model", str(minilm_path),
           "--max_length", "256", "--device", "cpu", "--num_shards", "4", "--keep_shards", "true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # both processes worked: rank 1 did shards 1 and 3
    assert "rank 1: shard 1 " in proc.stderr and "rank 1: shard 3 " in proc.stderr, proc.stderr[-3000:]
    merged = datasets.Dataset.from_parquet(str(out))
    assert merged["id"] == list(range(24))
    ref = embedder.encode([f"### user: {r['instruction']}\n### assistant: {r['output']}\n" for r in rows])
    assert (read_embeddings(merged, "embedding") * ref).sum(axis=1).min() > 0.9999
    assert merged.features["embedding"].length == 384

    # A run killed after shards 0, 2 and 3: only shard 1 is recomputed, and the output is the same.
    shard_files = sorted((tmp_path / "embedded.parquet.shards").glob("*/shard-*.arrow"))
    assert len(shard_files) == 4
    shard_files[1].unlink()
    out.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in shard_files if p.exists()}
    args = ShardedEmbeddingArguments(dataset=str(data), output=str(out), num_shards=4, keep_shards=True)
    cfg = EmbeddingConfig(model=str(minilm_path), max_length=256, device="cpu")
    # the shard key ignores device and batch size, so this in-process restart finds the launcher's shards
    assert embed_sharded(args, cfg) == out
    assert {p.name: p.stat().st_mtime_ns for p in shard_files if p.name in before} == before
    assert shard_files[1].is_file()
    again = datasets.Dataset.from_parquet(str(out))
    assert again["id"] == list(range(24))
    np.testing.assert_allclose(read_embeddings(again, "embedding"), read_embeddings(merged, "embedding"), atol=1e-5)
    # unchanged inputs: a no-op
    mtime = out.stat().st_mtime_ns
    assert embed_sharded(args, cfg) == out and out.stat().st_mtime_ns == mtime
    # a changed configuration is a different key: nothing stale is reused
    out.unlink()
    assert embed_sharded(args, EmbeddingConfig(model=str(minilm_path), max_length=8, device="cpu")) == out
    assert len(list((tmp_path / "embedded.parquet.shards").iterdir())) == 2
    assert not np.allclose(read_embeddings(datasets.Dataset.from_parquet(str(out)), "embedding"), read_embeddings(merged, "embedding"), atol=1e-3)
    # without keep_shards the shard folder goes once the output is written
    out.unlink()
    embed_sharded(ShardedEmbeddingArguments(dataset=str(data), output=str(out), num_shards=4), cfg)
    assert not (tmp_path / "embedded.parquet.shards").exists()
    assert datasets.Dataset.from_parquet(str(out))["id"] == list(range(24))


def test_ds2_embed_command_with_yaml_config(tmp_path, minilm_path, embedder):
    import datasets

    from ds2_hf.cli import main
    from ds2_hf.curation.api import read_embeddings

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = tmp_path / "embed.yaml"
    cfg.write_text(f"input: {data}\nmodel: {minilm_path}\nmax_length: 256\nnum_shards: 2\ndevice: cpu\n")
    out = tmp_path / "embedded"
    assert main(["embed", "--config", str(cfg), "--output", str(out), "--batch_size", "2"]) == 0
    got = datasets.load_from_disk(str(out))
    assert got["id"] == [r["id"] for r in ROWS]
    assert got.features["embedding"].length == 384
    np.testing.assert_allclose(read_embeddings(got, "embedding"), read_embeddings(_rows_embedded(embedder), "embedding"), atol=1e-5)
    assert main(["embed", str(tmp_path / "missing.jsonl"), "--output", str(out)]) == 2


def _rows_embedded(embedder):
    import datasets

    return datasets.Dataset.from_list(ROWS).map(embedder, batched=True)
