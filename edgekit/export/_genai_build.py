"""Runs ONNX Runtime GenAI's model builder on one Hugging Face directory (a child process of the ONNX target).

    python -m edgekit.export._genai_build HF_DIR OUT_DIR PRECISION CACHE_DIR [key=value ...]

The builder's last step copies the source's tokenizer files into the output (``save_processing``); a
source without a tokenizer (the tiny test models) makes that step raise after the model and
``genai_config.json`` are written. This entry point runs the builder's own two calls and forgives an
exception only when it was raised inside ``save_processing`` and the source has no tokenizer files, so
any other failure still fails the export. It runs in its own process because the builder loads the whole
model in PyTorch, prints freely and keeps module state; the parent enforces a timeout.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _raised_in(exc: BaseException, function: str) -> bool:
    return any(frame.name == function for frame in traceback.extract_tb(exc.__traceback__))


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    hf_dir, out_dir, precision, cache_dir, *options = argv
    from onnxruntime_genai.models import builder

    extra = builder.parse_extra_options(None, hf_dir, out_dir, precision, "cpu", cache_dir, options)
    try:
        builder.create_model(None, hf_dir, out_dir, precision, "cpu", cache_dir, **extra)
    except Exception as exc:
        has_tokenizer = any((Path(hf_dir) / name).exists() for name in _TOKENIZER_FILES)
        written = (Path(out_dir) / "genai_config.json").exists()
        if has_tokenizer or not written or not _raised_in(exc, "save_processing"):
            raise
        print(f"the source has no tokenizer: no tokenizer files written ({type(exc).__name__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
