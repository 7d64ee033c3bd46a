"""Real LoRA fine-tuning of SmolLM2-135M-Instruct on CPU with TRL's SFTTrainer (one thread per process).

One module-scoped run overfits 16 examples (the whole set is one batch) for 5 optimiser steps and is
then checked from several sides: the loss curve, the merged model against base + adapter, reloading
and generating, the files written. Separately: the collated batch's labels, and `accelerate launch`
with two CPU processes (gloo) reproducing a single-process run step for step.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ds2_hf.sft.recipe import load_recipe

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "recipes" / "smollm2_135m_cpu.yaml"
CPU_2PROC = REPO / "examples" / "accelerate" / "cpu_2proc.yaml"

FACTS = [
    ("What is the capital of France?", "Paris."),
    ("What is 2 + 3?", "5."),
    ("Name a primary colour.", "Red."),
    ("What do bees make?", "Honey."),
    ("What is the opposite of hot?", "Cold."),
    ("How many legs does a spider have?", "Eight."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("What is frozen water called?", "Ice."),
    ("Which planet is called the red planet?", "Mars."),
    ("What is 10 minus 4?", "6."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("What animal says moo?", "A cow."),
    ("How many days are in a week?", "Seven."),
    ("What is the largest ocean?", "The Pacific."),
    ("Who wrote Hamlet?", "Shakespeare."),
    ("What is H2O?", "Water."),
]


def _chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _facts_dataset():
    from datasets import Dataset

    return Dataset.from_list([_chat(q, a) for q, a in FACTS])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm2_dir):
    from ds2_hf.sft import train

    out = tmp_path_factory.mktemp("sft") / "smollm2-facts"
    recipe = load_recipe(
        TINY,
        model_name_or_path=str(smollm2_dir),
        output_dir=str(out),
        effective_batch_size=16,
        per_device_train_batch_size=16,  # all 16 examples in one batch: each step revisits the same batch
        num_train_epochs=5,
        dataset_name="ds2-test-facts",
    )
    started = time.perf_counter()
    result = train(recipe, _facts_dataset())
    print(f"\nCPU smoke run: {time.perf_counter() - started:.1f}s wall (train {result.metrics['train_wall_s']}s); "
          f"losses {[round(x, 4) for x in result.losses]}")  # fmt: skip
    return recipe, result


def test_loss_falls_when_overfitting_one_batch(trained):
    recipe, result = trained
    assert result.effective_batch_size == 16 and result.gradient_accumulation_steps == 1
    assert result.metrics["global_steps"] == 5 and [e["step"] for e in result.loss_history] == [1, 2, 3, 4, 5]
    losses = result.losses
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0], losses


def _answer_nll(model, tokenizer, pairs) -> float:
    """Mean negative log-likelihood of the answers + EOS given TULU prompts (what training minimised)."""
    import torch

    total, count = 0.0, 0
    for q, a in pairs:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                               tokenize=False)  # fmt: skip
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(a + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + a_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(p_ids) - 1 : -1]
        total += torch.nn.functional.cross_entropy(logits, ids[0, len(p_ids) :], reduction="sum").item()
        count += len(a_ids)
    return total / count


def test_adapter_merges_into_the_base(trained, smollm2_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe, result = trained
    assert Path(result.adapter_dir, "adapter_model.safetensors").is_file()
    ids = torch.tensor([[44, 108, 4093, 108, 46, 198, 1780, 314, 216, 34, 27, 35, 47, 198]])
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(ids).logits
    with_adapter = PeftModel.from_pretrained(base, result.adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32)
    with torch.no_grad():
        adapter_logits = with_adapter(ids).logits
        merged_logits = merged(ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-3), (merged_logits - adapter_logits).abs().max()
    assert (merged_logits - base_logits).abs().max() > 0.1  # the adapter changed something
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_merged_model_reloads_and_generates(trained, smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe, result = trained
    tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32)
    # The saved tokenizer carries the TULU template the model was trained with.
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What do bees make?"}],
                                           add_generation_prompt=True, return_dict=True, return_tensors="pt")  # fmt: skip
    assert tokenizer.decode(prompt["input_ids"][0]) == "<|user|>\nWhat do bees make?\n<|assistant|>\n"
    out = merged.generate(**prompt, max_new_tokens=16, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :].tolist()
    assert tokenizer.eos_token_id in new, tokenizer.decode(new)  # it learned to stop
    assert "Honey" in tokenizer.decode(new, skip_special_tokens=True)
    # Training lowered the answers' NLL in the saved weights, not only in memory.
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert _answer_nll(merged, tokenizer, FACTS) < 0.6 * _answer_nll(base, tokenizer, FACTS)


def test_run_writes_card_recipe_and_results(trained):
    recipe, result = trained
    out = Path(result.output_dir)
    saved = json.loads((out / "ds2_sft_results.json").read_text())
    assert saved["loss_history"] == result.loss_history and saved["merged_dir"] == result.merged_dir
    assert saved["data"]["num_input"] == 16 and saved["data"]["source_format"] == "messages"
    assert load_recipe(out / "ds2_sft_recipe.yaml") == recipe
    card = (Path(result.merged_dir) / "README.md").read_text()
    for needle in (str(recipe.model_name_or_path), "ds2-test-facts", "**ds2** data selection", "merged in"):
        assert needle in card, needle
    assert "library_name: peft" in (out / "README.md").read_text()


# --- labels on the collated batch ---


def test_collated_batch_masks_user_turns_and_trains_eos(tmp_path, smollm2_dir):
    import torch
    from datasets import Dataset

    from ds2_hf.sft import build_trainer

    rows = [
        _chat("What is 2 + 3?", "5."),
        {"messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome."},
            {"role": "user", "content": "And of Spain?"},
            {"role": "assistant", "content": "Madrid."},
        ]},
        _chat("Name a fruit.", "An apple."),
        _chat("What do cows drink?", "Water."),
    ]  # fmt: skip
    recipe = load_recipe(TINY, model_name_or_path=str(smollm2_dir), output_dir=str(tmp_path), effective_batch_size=4)
    run = build_trainer(recipe, Dataset.from_list(rows))
    tokenizer = run.trainer.processing_class
    batch = next(iter(run.trainer.get_train_dataloader()))
    eos = tokenizer.eos_token_id
    seen = set()
    for ids, labels, attention in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        ids, labels = ids[attention.bool()], labels[attention.bool()]
        text = tokenizer.decode(ids)
        row = next(r for r in rows if r["messages"][-2]["content"] in text)
        seen.add(id(row))
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        trained_ids = ids[labels != -100]
        # Exactly the assistant replies, each followed by its EOS, carry a label ...
        assert tokenizer.decode(trained_ids) == "".join(r + tokenizer.eos_token for r in replies)
        assert torch.equal(labels[labels != -100], trained_ids)
        assert (trained_ids == eos).sum() == len(replies) and labels[-1] == eos
        # ... and every user/system turn and role header is -100.
        masked = tokenizer.decode(ids[labels == -100])
        for m in row["messages"]:
            if m["role"] != "assistant":
                assert m["content"] in masked
        assert masked.count("<|assistant|>") == len(replies)
    assert len(seen) == 4
    # Padding positions are never trained either.
    assert (batch["labels"][~batch["attention_mask"].bool()] == -100).all()


# --- two processes with accelerate launch ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_cpu_processes_matches_one_process(tmp_path, smollm2_dir):
    from ds2_hf.sft import train

    data = tmp_path / "facts.jsonl"
    _facts_dataset().to_json(data)
    common = dict(model_name_or_path=str(smollm2_dir), max_steps=2, merge_adapter=False)
    # Reference: one process, 4 per batch x 2 accumulation = 8 per step.
    single = train(load_recipe(TINY, output_dir=str(tmp_path / "one"), **common), str(data))
    assert (single.num_processes, single.gradient_accumulation_steps) == (1, 2)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
        "--config_file", str(CPU_2PROC), "--main_process_port", str(_free_port()),
        "-m", "ds2_hf.sft", "--config", str(TINY), "--dataset", str(data), "--output_dir", str(tmp_path / "two"),
        "--model_name_or_path", str(smollm2_dir), "--max_steps", "2", "--merge_adapter", "false",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    saved = json.loads((tmp_path / "two" / "ds2_sft_results.json").read_text())
    # Two gloo processes, 4 per device x 1 accumulation x 2 = the same 8 per step.
    assert (saved["num_processes"], saved["distributed_type"], saved["gradient_accumulation_steps"]) == (2, "MULTI_CPU", 1)
    assert saved["effective_batch_size"] == 8 and saved["metrics"]["global_steps"] == 2
    assert Path(tmp_path / "two" / "adapter_model.safetensors").is_file()
    # Averaged gradients over two processes take the same steps as one process accumulating twice.
    assert summary["losses"] == pytest.approx([round(x, 4) for x in single.losses], abs=2e-3)
    assert summary["losses"][1] < summary["losses"][0]
