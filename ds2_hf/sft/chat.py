"""Chat templates for training: the paper's TULU format, or the model's own template.

TRL's ``assistant_only_loss`` keeps the loss on the tokens a template wraps in
``{% generation %}...{% endgeneration %}``. The TULU template below wraps each assistant reply *and its
EOS token*, so the model learns to stop; the user turns and the ``<|assistant|>`` header get label -100.

    <|user|>
    What is 2 + 3?
    <|assistant|>
    5</s>

    >>> from transformers import AutoTokenizer
    >>> from ds2_hf.sft.chat import resolve_chat_template
    >>> tok = AutoTokenizer.from_pretrained("meta-llama/Llama-3.1-8B")
    >>> tok.chat_template = resolve_chat_template(tok, "tulu")
    >>> tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    '<|begin_of_text|><|user|>\\nHi\\n<|assistant|>\\n'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Written from the TULU format description (Wang et al. 2023; DS2 Sec. 5). The BOS marker is filled in
# per tokenizer: models whose tokenizer prepends BOS to plain text were pretrained that way.
_TULU_TEMPLATE = (
    "{%- if messages | length == 0 -%}{{ raise_exception('A conversation needs at least one message.') }}{%- endif -%}"
    "__BOS__"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- if not loop.last -%}{{ '\\n' }}{%- endif -%}"
    "{%- else -%}"
    "{{ raise_exception('The TULU format has system, user and assistant turns; got role ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of plain text (LLaMA, Mistral) or not (GPT-2, SmolLM2)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def tulu_chat_template(add_bos: bool = False) -> str:
    """The TULU chat template with `{% generation %}` markers around each assistant reply + EOS."""
    return _TULU_TEMPLATE.replace("__BOS__", "{{ bos_token }}" if add_bos else "")


def resolve_chat_template(tokenizer: Any, chat_format: str) -> str:
    """The chat template to train with, checked for assistant-only loss.

    ``chat_format`` is ``"tulu"``, ``"model"`` (the tokenizer's own template, or TRL's training version
    of it when it lacks generation markers), or a path to a ``.jinja``/``.j2`` file.
    """
    if chat_format == "tulu":
        return tulu_chat_template(add_bos=tokenizer_adds_bos(tokenizer))
    if chat_format == "model":
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers

        own = tokenizer.chat_template
        if isinstance(own, dict):
            own = own.get("default")
        if not own:
            raise ValueError(
                "chat_format='model' but this tokenizer has no chat template (base models usually don't). "
                "Use chat_format='tulu' (the paper's format) or a path to a .jinja template."
            )
        if has_generation_markers(own):
            return own
        try:
            patched = get_training_chat_template(tokenizer)
        except ValueError:
            raise ValueError(
                "The model's chat template has no {% generation %} markers, so TRL cannot tell assistant tokens "
                "apart, and TRL ships no training version of this template. Use chat_format='tulu', or copy the "
                "template into a .jinja file, wrap each assistant reply and its end-of-turn token in "
                "{% generation %}...{% endgeneration %}, and pass its path as chat_format."
            ) from None
        return patched or own
    path = Path(chat_format)
    if not path.is_file():
        raise FileNotFoundError(f"Chat template file not found: {path}")
    return path.read_text(encoding="utf-8")


def check_loss_mask(tokenizer: Any, chat_template: str) -> None:
    """Raise unless the template marks assistant tokens and ends each assistant span on its stop token.

    A template can mark assistant replies yet leave the end-of-turn token outside the markers; the
    loss then never teaches the model to stop, which only shows at generation time.
    """
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    if not has_generation_markers(chat_template):
        raise ValueError(
            "assistant_only_loss needs a chat template with {% generation %} markers around assistant replies. "
            "Use chat_format='tulu', or set assistant_only_loss=False to train on every token."
        )
    if not (
        is_chat_template_stop_token_trained(tokenizer, chat_template=chat_template)
        or _last_trained_token(tokenizer, chat_template) == tokenizer.eos_token_id
    ):
        raise ValueError(
            "The chat template leaves the assistant's end-of-turn token outside {% generation %}...{% endgeneration %}, "
            "so the model would never learn to stop. Move the end-of-turn/EOS token inside the markers, or use "
            "chat_format='tulu'."
        )


def _last_trained_token(tokenizer: Any, chat_template: str) -> int | None:
    # TRL's check wants an added-vocabulary token; a plain EOS that some tokenizers do not list as
    # "added" is just as good a stop token.
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "hi"}]
    out = tokenizer.apply_chat_template(
        probe, chat_template=chat_template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    while trained and not tokenizer.decode([trained[-1]]).strip():
        trained.pop()
    return trained[-1] if trained else None
