"""SFT recipe, chat template, data preparation and CLI parsing (no training here; see test_sft_train.py).

Real parts: the SmolLM2 tokenizer and chat templates rendered by transformers, TRL's config and
template checks, `datasets` files on disk, `huggingface_hub`'s client against a closed port.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from ds2_hf.sft.recipe import (
    PAPER_TARGET_MODULES,
    SFTRecipe,
    load_recipe,
    namespace_to_recipe,
    resolve_gradient_accumulation,
)

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "examples" / "recipes"
ACCELERATE = REPO / "examples" / "accelerate"


# --- recipe defaults and batch arithmetic ---


def test_recipe_defaults_are_the_papers():
    r = SFTRecipe(model_name_or_path="meta-llama/Llama-3.1-8B")
    assert (r.lora_r, r.lora_alpha, r.lora_dropout) == (64, 16, 0.1)
    assert r.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (r.learning_rate, r.lr_scheduler_type, r.warmup_ratio, r.weight_decay) == (1e-4, "linear", 0.03, 0.0)
    assert (r.num_train_epochs, r.effective_batch_size, r.max_length) == (5.0, 128, 2048)
    assert r.chat_format == "tulu" and r.assistant_only_loss and r.merge_adapter and r.precision == "auto"


@pytest.mark.parametrize(
    "per_device, processes, expected", [(4, 8, 4), (1, 1, 128), (4, 1, 32), (16, 8, 1), (2, 2, 32)]
)
def test_gradient_accumulation_gives_effective_batch(per_device, processes, expected):
    assert resolve_gradient_accumulation(128, per_device, processes) == expected
    assert per_device * expected * processes == 128


def test_gradient_accumulation_errors_say_what_to_pick():
    with pytest.raises(ValueError, match=r"not a multiple.*3 x 2 process\(es\) = 6.*\[1, 2, 4, 8, 16, 32, 64\]"):
        resolve_gradient_accumulation(128, 3, 2)
    with pytest.raises(ValueError, match="contradicts effective_batch_size=128"):
        resolve_gradient_accumulation(128, 4, 1, gradient_accumulation_steps=4)
    # Without an effective batch the given accumulation is kept.
    assert resolve_gradient_accumulation(None, 4, 8, gradient_accumulation_steps=3) == 3


def test_recipe_validation_errors():
    with pytest.raises(ValueError, match="chat_format"):
        SFTRecipe(chat_format="chatml")
    with pytest.raises(ValueError, match="max_length must be positive"):
        SFTRecipe(max_length=0)
    with pytest.raises(ValueError, match="hub_model_id"):
        SFTRecipe(push_to_hub=True)
    with pytest.raises(ValueError, match="use_lora=True"):
        SFTRecipe(load_in_4bit=True, use_lora=False)
    with pytest.raises(ValueError, match=r"trainer_kwargs sets \['learning_rate'\]"):
        SFTRecipe(trainer_kwargs={"learning_rate": 1.0})
    with pytest.raises(ValueError, match="JSON object"):
        SFTRecipe(trainer_kwargs="{not json")


# --- recipe files ---


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_example_recipes_load_and_batch_to_their_effective_size(name):
    recipe = load_recipe(RECIPES / name)
    assert recipe.model_name_or_path
    for processes in (1, 2, 8):
        if recipe.effective_batch_size % (recipe.per_device_train_batch_size * processes) == 0:
            acc = recipe.gradient_accumulation(processes)
            assert recipe.per_device_train_batch_size * acc * processes == recipe.effective_batch_size


def test_paper_recipes_match_the_paper():
    for name, model, max_length in [
        ("llama31_8b_ds2.yaml", "meta-llama/Llama-3.1-8B", 2048),
        ("mistral_7b_v03_ds2.yaml", "mistralai/Mistral-7B-v0.3", 2048),
        ("llama2_7b_ds2.yaml", "meta-llama/Llama-2-7b-hf", 4096),
        ("llama3_70b_qlora_ds2.yaml", "meta-llama/Meta-Llama-3-70B", 2048),
    ]:
        r = load_recipe(RECIPES / name)
        assert (r.model_name_or_path, r.max_length) == (model, max_length)
        assert (r.lora_r, r.lora_alpha, r.lora_dropout, r.lora_target_modules) == (64, 16, 0.1, PAPER_TARGET_MODULES)
        assert (r.learning_rate, r.warmup_ratio, r.num_train_epochs, r.effective_batch_size) == (1e-4, 0.03, 5.0, 128)
        assert r.precision == "bf16" and r.chat_format == "tulu" and r.merge_adapter
    qlora = load_recipe(RECIPES / "llama3_70b_qlora_ds2.yaml")
    assert qlora.load_in_4bit and qlora.bnb_4bit_quant_type == "nf4" and qlora.bnb_4bit_use_double_quant


def test_accelerate_configs_parse_with_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted(ACCELERATE.glob("*.yaml")):
        config = load_config_from_file(str(path))
        kinds[path.stem] = (str(config.distributed_type).split(".")[-1], config.num_processes)
    assert kinds == {
        "cpu_2proc": ("MULTI_GPU", 2),  # the torchrun launcher; use_cpu makes the processes gloo/CPU
        "deepspeed_zero3": ("DEEPSPEED", 8),
        "fsdp2": ("FSDP", 8),
        "multi_gpu": ("MULTI_GPU", 8),
        "single_gpu": ("NO", 1),
    }
    assert load_config_from_file(str(ACCELERATE / "fsdp2.yaml")).fsdp_config["fsdp_version"] == 2
    assert load_config_from_file(str(ACCELERATE / "deepspeed_zero3.yaml")).deepspeed_config["zero_stage"] == 3
    assert load_config_from_file(str(ACCELERATE / "cpu_2proc.yaml")).use_cpu is True


def test_yaml_round_trip_and_overrides(tmp_path):
    recipe = load_recipe(RECIPES / "llama31_8b_ds2.yaml", lora_r=8, output_dir=str(tmp_path))
    path = tmp_path / "recipe.yaml"
    recipe.to_yaml(path)
    assert load_recipe(path) == recipe
    assert SFTRecipe.from_yaml(path, lora_r=16).lora_r == 16


def test_yaml_reads_exponents_and_env_and_rejects_unknown_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("DS2_SFT_TEST_VAR", raising=False)
    path = tmp_path / "r.yaml"
    # PyYAML reads `1e-4` (no dot) as a string; the recipe must still get a float.
    path.write_text("model_name_or_path: m\nlearning_rate: 1e-4\nlogging_steps: 5\nenv:\n  DS2_SFT_TEST_VAR: abc\n")
    recipe = load_recipe(path)
    assert recipe.learning_rate == 1e-4 and isinstance(recipe.learning_rate, float)
    import os

    assert os.environ["DS2_SFT_TEST_VAR"] == "abc"
    path.write_text("model_name_or_path: m\nlearning_rat: 1.0e-4\n")
    with pytest.raises(ValueError, match="'learning_rat' \\(did you mean 'learning_rate'\\?\\)"):
        load_recipe(path)
    with pytest.raises(FileNotFoundError, match="Recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


# --- one YAML + flags: `python -m ds2_hf.sft` (TrlParser) and `ds2 sft` (argparse) agree ---

FLAGS = [
    "--dataset", "data.parquet",
    "--lora_r", "16",
    "--learning_rate", "2e-4",
    "--lora_target_modules", "q_proj", "v_proj",
    "--merge_adapter", "false",
    "--gradient_checkpointing",
    "--no_assistant_only_loss",
    "--trainer_kwargs", '{"dataloader_num_workers": 2}',
]  # fmt: skip


def test_trlparser_and_ds2_sft_parse_the_same_recipe():
    from ds2_hf.commands import sft as command
    from ds2_hf.sft.__main__ import parse_recipe

    config = str(RECIPES / "smollm2_135m_cpu.yaml")
    via_trl = parse_recipe(["--config", config, *FLAGS])
    parser = argparse.ArgumentParser()
    command.register(parser)
    via_ds2 = namespace_to_recipe(parser.parse_args(["--config", config, *FLAGS]))
    assert via_trl == via_ds2
    assert via_trl.lora_r == 16 and via_trl.learning_rate == 2e-4 and via_trl.lora_target_modules == ["q_proj", "v_proj"]
    assert via_trl.merge_adapter is False and via_trl.gradient_checkpointing is True and via_trl.assistant_only_loss is False
    assert via_trl.trainer_kwargs == {"dataloader_num_workers": 2}
    # Values not given on the command line come from the YAML file.
    assert via_trl.max_length == 128 and via_trl.per_device_train_batch_size == 4
    assert via_ds2 == load_recipe(config, **{k: getattr(via_ds2, k) for k in ("dataset", "lora_r", "learning_rate",
                                  "lora_target_modules", "merge_adapter", "gradient_checkpointing", "trainer_kwargs",
                                  "assistant_only_loss")})


def test_both_entry_points_print_help(capsys):
    from ds2_hf.commands import sft as command
    from ds2_hf.sft.__main__ import parse_recipe

    parser = argparse.ArgumentParser(prog="ds2 sft")
    command.register(parser)
    for parse in (parse_recipe, parser.parse_args):
        with pytest.raises(SystemExit) as exit_info:
            parse(["--help"])
        assert exit_info.value.code == 0
        assert "--effective_batch_size" in capsys.readouterr().out


# --- TRL / PEFT / bitsandbytes configs built from a recipe ---


def test_sft_config_carries_the_recipe(tmp_path):
    from ds2_hf.sft.training import build_lora_config, build_sft_config

    recipe = load_recipe(RECIPES / "llama31_8b_ds2.yaml", output_dir=str(tmp_path), precision="auto",
                         trainer_kwargs={"dataloader_num_workers": 1})  # fmt: skip
    config = build_sft_config(recipe, num_processes=1)
    assert config.gradient_accumulation_steps == 32 and config.per_device_train_batch_size == 4
    assert (config.learning_rate, config.lr_scheduler_type.value, config.warmup_steps) == (1e-4, "linear", 0.03)
    assert (config.weight_decay, config.num_train_epochs, config.max_length) == (0.0, 5.0, 2048)
    assert config.assistant_only_loss and not config.packing and config.dataloader_num_workers == 1
    assert config.use_cpu and not config.bf16 and not config.fp16  # no GPU here: fp32 on CPU
    assert config.gradient_checkpointing and config.seed == 42 and not config.push_to_hub
    lora = build_lora_config(recipe)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (64, 16, 0.1)
    assert set(lora.target_modules) == set(PAPER_TARGET_MODULES) and lora.task_type == "CAUSAL_LM"
    with pytest.raises(ValueError, match="trainer_kwargs holds a key"):
        build_sft_config(SFTRecipe(output_dir=str(tmp_path), trainer_kwargs={"no_such_option": 1}), 1)


def test_qlora_config_is_import_safe_on_cpu():
    import torch

    from ds2_hf.sft.training import build_quantization_config

    recipe = load_recipe(RECIPES / "llama3_70b_qlora_ds2.yaml")
    q = build_quantization_config(recipe)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and q.bnb_4bit_quant_storage == torch.bfloat16
    assert build_quantization_config(SFTRecipe()) is None


# --- chat templates ---


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


CONVERSATION = [
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "And 4+4?"},
    {"role": "assistant", "content": "8"},
]


def test_tulu_template_renders_the_tulu_format_and_masks_reply_plus_eos(tokenizer):
    from ds2_hf.sft.chat import check_loss_mask, resolve_chat_template, tulu_chat_template

    template = resolve_chat_template(tokenizer, "tulu")
    text = tokenizer.apply_chat_template(CONVERSATION, chat_template=template, tokenize=False)
    assert text == "<|user|>\nWhat is 2+3?\n<|assistant|>\n5<|im_end|>\n<|user|>\nAnd 4+4?\n<|assistant|>\n8<|im_end|>"
    prompt = tokenizer.apply_chat_template(CONVERSATION[:1], chat_template=template, tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
    assert prompt == "<|user|>\nWhat is 2+3?\n<|assistant|>\n"
    out = tokenizer.apply_chat_template(CONVERSATION, chat_template=template, return_assistant_tokens_mask=True,
                                        return_dict=True)  # fmt: skip
    kept = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(kept) == "5<|im_end|>8<|im_end|>"
    check_loss_mask(tokenizer, template)  # does not raise
    # SmolLM2's tokenizer adds no BOS to plain text, so the template adds none; LLaMA-style ones get it.
    assert tokenizer.apply_chat_template(CONVERSATION[:1], chat_template=tulu_chat_template(add_bos=True),
                                         tokenize=False).startswith(tokenizer.bos_token + "<|user|>")  # fmt: skip


def test_model_template_without_markers_is_a_clear_error(tokenizer, tmp_path):
    from ds2_hf.sft.chat import check_loss_mask, resolve_chat_template

    with pytest.raises(ValueError, match="no \\{% generation %\\} markers.*chat_format='tulu'"):
        resolve_chat_template(tokenizer, "model")
    # A template file is read as given; one whose EOS sits outside the markers is refused.
    bad = tmp_path / "bad.jinja"
    bad.write_text(
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}"
        "{% endgeneration %}{{ eos_token }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    template = resolve_chat_template(tokenizer, str(bad))
    with pytest.raises(ValueError, match="end-of-turn token outside"):
        check_loss_mask(tokenizer, template)
    with pytest.raises(ValueError, match="markers"):
        check_loss_mask(tokenizer, "{% for m in messages %}{{ m['content'] }}{% endfor %}")


# --- data ---


def _rows():
    return [
        {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"instruction": "Say hi.", "input": "in French", "output": "Salut"},
    ]


def test_load_sft_dataset_from_disk_parquet_jsonl(tmp_path):
    from datasets import Dataset, DatasetDict

    from ds2_hf.sft.data import load_sft_dataset

    ds = Dataset.from_list(_rows())
    ds.save_to_disk(tmp_path / "disk")
    DatasetDict({"train": ds}).save_to_disk(tmp_path / "dict")
    ds.to_parquet(tmp_path / "d.parquet")
    ds.to_json(tmp_path / "d.jsonl")
    for source in ("disk", "dict", "d.parquet", "d.jsonl"):
        assert load_sft_dataset(str(tmp_path / source))["output"] == ["5", "Salut"], source
    assert load_sft_dataset(DatasetDict({"train": ds}))["output"] == ["5", "Salut"]
    with pytest.raises(ValueError, match="splits \\['train'\\], not 'test'"):
        load_sft_dataset(tmp_path / "dict", split="test")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        load_sft_dataset(str(tmp_path / "missing.parquet"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="Unsupported file type"):
        load_sft_dataset(tmp_path / "d.txt")


def _prepare(tokenizer, smollm2_dir, rows, max_length=128):
    from datasets import Dataset

    from ds2_hf.sft.chat import tulu_chat_template
    from ds2_hf.sft.data import prepare_chat_dataset

    return prepare_chat_dataset(
        Dataset.from_list(rows) if isinstance(rows, list) else rows,
        tokenizer_name_or_path=str(smollm2_dir),
        chat_template=tulu_chat_template(),
        max_length=max_length,
        tokenizer=tokenizer,
    )


def test_every_layout_becomes_messages(tokenizer, smollm2_dir):
    alpaca, stats = _prepare(tokenizer, smollm2_dir, _rows())
    assert alpaca.column_names == ["messages"] and stats.source_format == "alpaca"
    assert alpaca[1]["messages"] == [
        {"role": "user", "content": "Say hi.\n\nin French"},
        {"role": "assistant", "content": "Salut"},
    ]
    pc, stats = _prepare(tokenizer, smollm2_dir, [{"prompt": "Hi", "completion": "Hello!", "id": 3}])
    assert pc[0]["messages"][1] == {"role": "assistant", "content": "Hello!"} and stats.source_format == "prompt_completion"
    chat, stats = _prepare(tokenizer, smollm2_dir, [{"messages": CONVERSATION}])
    assert chat[0]["messages"] == CONVERSATION
    expected = len(tokenizer.apply_chat_template(CONVERSATION, chat_template=_tulu(), tokenize=True)["input_ids"])
    assert stats.num_tokens == expected


def _tulu():
    from ds2_hf.sft.chat import tulu_chat_template

    return tulu_chat_template()


def test_bad_data_gives_clear_errors(tokenizer, smollm2_dir, caplog):
    from datasets import Dataset

    with pytest.raises(ValueError, match="Cannot find a conversation.*'messages'"):
        _prepare(tokenizer, smollm2_dir, [{"text": "no conversation here"}])
    with pytest.raises(ValueError, match="empty"):
        _prepare(tokenizer, smollm2_dir, Dataset.from_dict({"messages": []}))
    long = [{"prompt": "word " * 200, "completion": "ok"}, {"prompt": "word " * 150, "completion": "ok"}]
    shortest = len(tokenizer.apply_chat_template(
        [{"role": "user", "content": "word " * 150}, {"role": "assistant", "content": "ok"}],
        chat_template=_tulu(), tokenize=True)["input_ids"])  # fmt: skip
    with pytest.raises(ValueError, match=rf"Every one of the 2 examples is longer than max_length=64.*least {shortest},"):
        _prepare(tokenizer, smollm2_dir, long, max_length=64)
    with pytest.raises(ValueError, match="None of the 1 examples has an assistant reply"):
        _prepare(tokenizer, smollm2_dir, [{"messages": [{"role": "user", "content": "hi"}]}])
    # Some overlong / reply-less rows: counted, not fatal.
    mixed = [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]},
        {"messages": CONVERSATION},
    ]
    prepared, stats = _prepare(tokenizer, smollm2_dir, mixed, max_length=64)
    assert len(prepared) == 2 and (stats.num_input, stats.num_without_assistant, stats.num_overlong) == (3, 1, 1)
    assert "Dropping 1 of 3 examples with no assistant turn" in caplog.text


def test_chat_examples_transform_pickles_without_its_tokenizer(tokenizer, smollm2_dir):
    import pickle

    from datasets.fingerprint import Hasher

    from ds2_hf.sft.data import ChatExamples

    loaded = ChatExamples(str(smollm2_dir), _tulu(), "messages", _tokenizer=tokenizer)
    fresh = ChatExamples(str(smollm2_dir), _tulu(), "messages")
    assert Hasher.hash(loaded) == Hasher.hash(fresh)  # same config -> same datasets cache entry
    clone = pickle.loads(pickle.dumps(loaded))
    assert clone._tokenizer is None and clone({"messages": [CONVERSATION]})["num_assistant_turns"] == [2]


# --- model card and hub push ---


def test_model_card_names_base_data_selection_and_recipe():
    from ds2_hf.sft.card import model_card

    recipe = load_recipe(RECIPES / "llama31_8b_ds2.yaml", dataset="me/ds2-subset-10k", selection_method="ds2")
    card = model_card(recipe, metrics={"final train loss": 0.9}, merged=True)
    assert card.data.base_model == "meta-llama/Llama-3.1-8B" and card.data.datasets == ["me/ds2-subset-10k"]
    assert card.data.library_name == "transformers" and "selection-ds2" in card.data.tags
    text = str(card)
    for needle in ("**meta-llama/Llama-3.1-8B**", "**me/ds2-subset-10k**", "**ds2** data selection", "lora_r: 64",
                   "merged in", "| final train loss | 0.9 |"):  # fmt: skip
        assert needle in text, needle
    yaml_block = text.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(yaml_block)["learning_rate"] == 1e-4
    adapter = model_card(SFTRecipe(model_name_or_path="/local/model", dataset="/data/x.parquet"), merged=False)
    assert adapter.data.base_model is None and adapter.data.library_name == "peft"  # local paths stay out of metadata
    assert "not recorded" in str(adapter)


def test_failed_push_keeps_the_model_and_says_how_to_retry(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from ds2_hf.sft.card import HubPushError, push_folder

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    # Nothing listens on port 9 (discard): the real client fails to connect.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(HubPushError, match=r"model is saved in .*retry with `hf upload me/x"):
        push_folder(tmp_path, "me/x")
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"


# --- the ds2 sft command ---


def test_ds2_sft_reports_a_missing_dataset(tmp_path, smollm2_dir, capsys):
    from ds2_hf.commands import sft as command
    from ds2_hf.sft.recipe import add_recipe_arguments

    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    args = parser.parse_args(["--config", str(RECIPES / "smollm2_135m_cpu.yaml"), "--model_name_or_path",
                              str(smollm2_dir), "--dataset", str(tmp_path / "nope.parquet"), "--output_dir",
                              str(tmp_path / "out")])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        command.run(args)
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    json.dumps(vars(args))  # the namespace holds plain values only
