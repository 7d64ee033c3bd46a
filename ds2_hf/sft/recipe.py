"""`SFTRecipe`: one dataclass (and one YAML file) describing a DS2 fine-tuning run.

The defaults are the paper's recipe (Pang et al., ICLR 2025, Sec. 5): LoRA r=64, alpha=16, dropout 0.1
on the attention and MLP projections; AdamW at lr 1e-4 with a linear schedule and 3% warmup, no weight
decay, 5 epochs, an effective batch of 128 sequences, max length 2048, bf16 where the hardware has it,
the TULU chat format with the loss on assistant tokens only, and the adapter merged after training.

    >>> from ds2_hf.sft.recipe import SFTRecipe
    >>> recipe = SFTRecipe(model_name_or_path="meta-llama/Llama-3.1-8B", per_device_train_batch_size=4)
    >>> recipe.gradient_accumulation(num_processes=8)    # 4 x 4 x 8 = 128
    4
    >>> recipe = SFTRecipe.from_yaml("examples/recipes/llama31_8b_ds2.yaml", output_dir="./run1")

This module imports nothing heavy, so `ds2 --help` and config validation stay fast; the training code
lives in `ds2_hf.sft.training`.
"""

import argparse
import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PAPER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHAT_FORMATS = ("tulu", "model")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SFTRecipe:
    """A fine-tuning run: model, data, LoRA, optimisation and output settings (paper defaults).

    Every field is also a flag of `python -m ds2_hf.sft` and `ds2 sft` (`--lora_r 16`), and a key of the
    YAML file given with `--config`; flags override the file. Fields not listed here that
    `trl.SFTConfig` knows (``fsdp``, ``deepspeed``, ``dataloader_num_workers``...) go in
    ``trainer_kwargs``.

        >>> SFTRecipe(model_name_or_path="mistralai/Mistral-7B-v0.3", max_length=2048).lora_r
        64
    """

    # --- model ---
    model_name_or_path: str | None = field(
        default=None, metadata=_help("Base model: a hub id, a local folder, or the folder holding `gguf_file`.")
    )
    gguf_file: str | None = field(
        default=None, metadata=_help("GGUF file name inside `model_name_or_path` (dequantised to torch on load).")
    )
    chat_format: str = field(
        default="tulu",
        metadata=_help(
            "'tulu' (the paper's `<|user|>`/`<|assistant|>` format, EOS ends every assistant turn), 'model' (the "
            "model's own chat template; it needs `{%% generation %%}` markers or a TRL training version), or a path "
            "to a .jinja template with `{%% generation %%}` markers."
        ),
    )
    attn_implementation: str | None = field(
        default=None, metadata=_help("Attention kernel, e.g. 'sdpa' or 'flash_attention_2' (default: the model's).")
    )
    trust_remote_code: bool = field(default=False, metadata=_help("Allow model code from the hub."))

    # --- data ---
    dataset: str | None = field(
        default=None,
        metadata=_help("Training data: a `save_to_disk` folder, a .parquet/.jsonl/.json/.csv file, or a hub id."),
    )
    dataset_config: str | None = field(default=None, metadata=_help("Hub dataset configuration name."))
    dataset_split: str = field(default="train", metadata=_help("Split to train on."))
    max_train_samples: int | None = field(
        default=None, metadata=_help("Train on the first N examples only (smoke runs).")
    )
    max_length: int = field(default=2048, metadata=_help("Maximum tokens per example; longer ones are truncated."))
    assistant_only_loss: bool = field(
        default=True, metadata=_help("Compute the loss on assistant tokens only (user turns get label -100).")
    )
    packing: bool = field(default=False, metadata=_help("Pack several examples per sequence (not in the paper)."))
    dataset_num_proc: int | None = field(default=None, metadata=_help("Processes for dataset preparation."))

    # --- LoRA ---
    use_lora: bool = field(default=True, metadata=_help("Train a LoRA adapter (False: full fine-tuning)."))
    lora_r: int = field(default=64, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=16, metadata=_help("LoRA alpha (scaling = alpha / r)."))
    lora_dropout: float = field(default=0.1, metadata=_help("Dropout on the LoRA branch."))
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(PAPER_TARGET_MODULES), metadata=_help("Module names that get LoRA adapters.")
    )

    # --- QLoRA (needs a CUDA GPU and the `gpu` extra: bitsandbytes) ---
    load_in_4bit: bool = field(default=False, metadata=_help("Load the base model in 4 bits (QLoRA)."))
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata=_help("4-bit data type."))
    bnb_4bit_use_double_quant: bool = field(default=True, metadata=_help("Quantise the quantisation constants."))
    bnb_4bit_quant_storage: str | None = field(
        default=None, metadata=_help("Storage dtype of 4-bit weights; 'bfloat16' is needed to shard them with FSDP.")
    )

    # --- optimisation ---
    learning_rate: float = field(default=1e-4, metadata=_help("Peak learning rate (AdamW)."))
    lr_scheduler_type: str = field(default="linear", metadata=_help("Learning-rate schedule."))
    warmup_ratio: float = field(default=0.03, metadata=_help("Fraction of the steps spent warming up."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    num_train_epochs: float = field(default=5.0, metadata=_help("Epochs over the selected subset."))
    max_steps: int = field(default=-1, metadata=_help("Stop after this many optimiser steps (-1: use epochs)."))
    effective_batch_size: int | None = field(
        default=128,
        metadata=_help(
            "Sequences per optimiser step = per-device batch x accumulation x processes; the accumulation is "
            "computed from it. None: use `gradient_accumulation_steps` as given."
        ),
    )
    per_device_train_batch_size: int = field(default=1, metadata=_help("Sequences per device per forward pass."))
    gradient_accumulation_steps: int | None = field(
        default=None, metadata=_help("Set only to pin it; by default it is derived from `effective_batch_size`.")
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto", metadata=_help("'auto': bf16 on a GPU that supports it, else fp32.")
    )
    gradient_checkpointing: bool = field(default=True, metadata=_help("Recompute activations to save memory."))
    seed: int = field(default=42, metadata=_help("Seed for LoRA init, data order and dropout."))
    use_cpu: bool | None = field(
        default=None, metadata=_help("Train on CPU (gloo between processes). Default: when no GPU is found.")
    )

    # --- output ---
    output_dir: str = field(default="ds2-sft-output", metadata=_help("Where checkpoints and the final model go."))
    logging_steps: float = field(default=10, metadata=_help("Log the loss every N optimiser steps."))
    save_strategy: str = field(default="epoch", metadata=_help("Checkpoint every 'epoch', 'steps', or 'no'."))
    save_total_limit: int | None = field(default=1, metadata=_help("Checkpoints to keep."))
    report_to: str = field(default="none", metadata=_help("Experiment tracker: 'none', 'tensorboard', 'wandb'..."))
    resume_from_checkpoint: str | None = field(
        default=None, metadata=_help("A checkpoint folder, or 'last' for the newest one in `output_dir`.")
    )
    merge_adapter: bool = field(
        default=True, metadata=_help("After training, merge the LoRA adapter into the base and save it in merged/.")
    )
    push_to_hub: bool = field(default=False, metadata=_help("Upload the final model and its card to the hub."))
    hub_model_id: str | None = field(default=None, metadata=_help("Hub repo for `push_to_hub` (user/name)."))
    hub_private: bool = field(default=False, metadata=_help("Create the hub repo as private."))

    # --- provenance for the model card ---
    dataset_name: str | None = field(
        default=None, metadata=_help("Name of the training data in the model card (default: `dataset`).")
    )
    selection_method: str | None = field(
        default=None, metadata=_help("How the subset was selected (e.g. 'ds2', 'random'), for the model card.")
    )

    # --- anything else trl.SFTConfig accepts ---
    trainer_kwargs: dict | str | None = field(
        default=None,
        metadata=_help("Extra `trl.SFTConfig` fields as a mapping (JSON on the command line), e.g. {\"fsdp\": ...}."),
    )

    def __post_init__(self) -> None:
        _coerce_field_types(self)
        if isinstance(self.trainer_kwargs, str):
            try:
                self.trainer_kwargs = json.loads(self.trainer_kwargs) if self.trainer_kwargs.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(f"trainer_kwargs must be a JSON object, got {self.trainer_kwargs!r}: {err}") from None
        if self.trainer_kwargs is not None and not isinstance(self.trainer_kwargs, dict):
            raise ValueError(f"trainer_kwargs must be a mapping, got {type(self.trainer_kwargs).__name__}")
        clashes = sorted(set(self.trainer_kwargs or {}) & _recipe_and_derived_names())
        if clashes:
            raise ValueError(
                f"trainer_kwargs sets {clashes}, which the recipe controls; set them as recipe fields instead "
                "(e.g. `learning_rate: 2e-4` at the top level of the YAML, or `--learning_rate 2e-4`)."
            )
        if self.chat_format not in CHAT_FORMATS and not str(self.chat_format).endswith((".jinja", ".j2")):
            raise ValueError(
                f"chat_format must be 'tulu', 'model' or a path to a .jinja/.j2 template, got {self.chat_format!r}."
            )
        for name in ("max_length", "per_device_train_batch_size", "lora_r", "lora_alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("effective_batch_size", "gradient_accumulation_steps", "max_train_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or unset, got {value}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.load_in_4bit and not self.use_lora:
            raise ValueError("load_in_4bit (QLoRA) trains an adapter on a frozen 4-bit base: set use_lora=True.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (e.g. --hub_model_id me/llama31-8b-ds2).")

    # --- batch arithmetic ---
    def gradient_accumulation(self, num_processes: int = 1) -> int:
        """Accumulation steps so that per-device batch x accumulation x processes = `effective_batch_size`.

        >>> SFTRecipe(per_device_train_batch_size=8).gradient_accumulation(num_processes=2)
        8
        """
        return resolve_gradient_accumulation(
            self.effective_batch_size,
            self.per_device_train_batch_size,
            num_processes,
            self.gradient_accumulation_steps,
        )

    # --- (de)serialisation ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The recipe as YAML (what `from_yaml` reads back); written to `path` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> "SFTRecipe":
        """Read a recipe YAML; keyword overrides win over the file (like command-line flags)."""
        return load_recipe(path, **overrides)


def resolve_gradient_accumulation(
    effective_batch_size: int | None,
    per_device_train_batch_size: int,
    num_processes: int = 1,
    gradient_accumulation_steps: int | None = None,
) -> int:
    """Gradient-accumulation steps giving `effective_batch_size` sequences per optimiser step.

    >>> resolve_gradient_accumulation(128, per_device_train_batch_size=4, num_processes=8)
    4
    """
    if effective_batch_size is None:
        return gradient_accumulation_steps or 1
    per_step = per_device_train_batch_size * num_processes
    if effective_batch_size % per_step:
        options = [b for b in range(1, effective_batch_size + 1) if effective_batch_size % (b * num_processes) == 0]
        raise ValueError(
            f"effective_batch_size={effective_batch_size} is not a multiple of per_device_train_batch_size="
            f"{per_device_train_batch_size} x {num_processes} process(es) = {per_step}. Pick a per-device batch "
            f"from {options or 'none (use fewer processes)'}, or change effective_batch_size."
        )
    derived = effective_batch_size // per_step
    if gradient_accumulation_steps is not None and gradient_accumulation_steps != derived:
        raise ValueError(
            f"gradient_accumulation_steps={gradient_accumulation_steps} contradicts effective_batch_size="
            f"{effective_batch_size} (= {per_device_train_batch_size} per device x {num_processes} process(es) x "
            f"{derived}). Unset one of them (effective_batch_size: null keeps the accumulation you give)."
        )
    return derived


# --- loading from YAML and flags ---


def recipe_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(SFTRecipe)]


def _recipe_and_derived_names() -> set[str]:
    # SFTConfig fields that the recipe sets from its own fields (see ds2_hf.sft.training.build_sft_config).
    derived = {"bf16", "fp16", "warmup_steps", "data_seed", "activation_checkpointing", "assistant_only_loss"}
    return set(recipe_field_names()) | derived


def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(SFTRecipe)


def _scalar_types(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
        return (str,)
    return tuple(a for a in args if isinstance(a, type)) if args else ((hint,) if isinstance(hint, type) else ())


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert YAML/flag strings to the field's type (PyYAML reads `1e-4` as a string)."""
    if not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool) and float in _scalar_types(hint):
            return float(value) if int not in _scalar_types(hint) else value
        return value
    types = _scalar_types(hint)
    if str in types or not types:
        return value
    if value.strip().lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    for typ in types:
        try:
            if typ is bool:
                return _string_to_bool(value)
            if typ in (int, float):
                return typ(value)
        except ValueError:
            continue
    raise ValueError(f"{name}: cannot read {value!r} as {' or '.join(t.__name__ for t in types)}.")


def _coerce_field_types(recipe: SFTRecipe) -> None:
    hints = _type_hints()
    for f in dataclasses.fields(recipe):
        setattr(recipe, f.name, _coerce(f.name, getattr(recipe, f.name), hints[f.name]))
    if isinstance(recipe.lora_target_modules, str):
        recipe.lora_target_modules = [m.strip() for m in recipe.lora_target_modules.split(",") if m.strip()]


def _string_to_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _check_keys(keys: Any, source: str) -> None:
    valid = recipe_field_names()
    unknown = [k for k in keys if k not in valid]
    if unknown:
        hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
        said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ValueError(
            f"Unknown recipe key(s) in {source}: {said}. Recipe keys are the SFTRecipe fields; other trl.SFTConfig "
            "settings go under `trainer_kwargs`."
        )


def load_recipe(config: str | os.PathLike | None = None, **overrides: Any) -> SFTRecipe:
    """Build a recipe from an optional YAML file plus overrides (overrides win).

    A top-level ``env:`` mapping in the file sets environment variables, as `trl.TrlParser` does.

        >>> load_recipe("examples/recipes/smollm2_135m_cpu.yaml", max_steps=2).max_steps
        2
    """
    values: dict[str, Any] = {}
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"Recipe file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"Recipe file {path} must hold a YAML mapping of SFTRecipe fields.")
        env = loaded.pop("env", None) or {}
        if not isinstance(env, dict):
            raise ValueError(f"`env` in {path} must be a mapping of variable -> value.")
        for key, value in env.items():
            os.environ[str(key)] = str(value)
        _check_keys(loaded, str(path))
        values.update(loaded)
    _check_keys(overrides, "overrides")
    values.update(overrides)
    return SFTRecipe(**values)


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--config` and one flag per recipe field to an argparse parser (for `ds2 sft`).

    Flags follow `transformers.HfArgumentParser` conventions (`--lora_r 16`, `--merge_adapter false`,
    lists as several values) but default to "not given", so `namespace_to_recipe` can layer them over
    the YAML file. This keeps `ds2 --help` from importing transformers.
    """
    parser.add_argument("--config", help="Recipe YAML; flags given here override its values.")
    hints = _type_hints()
    for f in dataclasses.fields(SFTRecipe):
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f.metadata.get("help")}
        origin = typing.get_origin(hint)
        if origin is list:
            kwargs.update(nargs="+", type=typing.get_args(hint)[0])
        elif bool in _scalar_types(hint):
            kwargs.update(nargs="?", const=True, type=_string_to_bool)
        elif origin is Literal:
            kwargs.update(choices=typing.get_args(hint))
        else:
            kwargs["type"] = next((t for t in _scalar_types(hint) if t is not type(None)), str)
            if kwargs["type"] is dict:
                kwargs["type"] = str
        parser.add_argument(f"--{f.name}", **kwargs)
        if f.default is True:  # HfArgumentParser's complement flag, e.g. --no_merge_adapter
            parser.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", default=argparse.SUPPRESS)


def namespace_to_recipe(args: argparse.Namespace) -> SFTRecipe:
    """The recipe described by `--config` plus the flags actually given (see `add_recipe_arguments`)."""
    names = set(recipe_field_names())
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return load_recipe(getattr(args, "config", None), **overrides)
