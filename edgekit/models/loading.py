"""Load a prepared model into eager PyTorch (fp32, eval, no grad) and get a tokenizer for it.

Models without a tokenizer (the tiny test models) get ``ByteTokenizer``: UTF-8 bytes mapped into the
vocabulary, which is enough to feed real text through the model for parity and perplexity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from edgekit.errors import ModelSourceError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from edgekit.models.sources import PreparedModel


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes offset past the special ids, folded into the vocabulary."""

    def __init__(self, vocab_size: int, offset: int = 3) -> None:
        self.vocab_size = vocab_size
        self.offset = offset

    def encode(self, text: str) -> list[int]:
        return [(b + self.offset) % self.vocab_size for b in text.encode("utf-8")]


class _HfTokenizer:
    def __init__(self, tokenizer: object) -> None:
        self._tok = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]


def load_model(prepared: PreparedModel) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(prepared.hf_dir), torch_dtype=torch.float32, attn_implementation="sdpa"
        )
    except Exception as exc:  # corrupt weights surface as many exception types
        raise ModelSourceError(f"'{prepared.model_id}' could not be loaded: {exc}") from exc
    model.eval().requires_grad_(False)
    return model


def load_tokenizer(prepared: PreparedModel, vocab_size: int) -> Tokenizer:
    if not prepared.has_tokenizer:
        return ByteTokenizer(vocab_size)
    from transformers import AutoTokenizer

    return _HfTokenizer(AutoTokenizer.from_pretrained(str(prepared.hf_dir)))
