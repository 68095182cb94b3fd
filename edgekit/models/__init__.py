"""Model sources (see ``sources``) and loading them into PyTorch for export and parity checks."""

from edgekit.models.loading import ByteTokenizer, load_model, load_tokenizer
from edgekit.models.sources import SUPPORTED_ARCHITECTURES, PreparedModel, known_aliases, prepare

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "ByteTokenizer",
    "PreparedModel",
    "known_aliases",
    "load_model",
    "load_tokenizer",
    "prepare",
]
