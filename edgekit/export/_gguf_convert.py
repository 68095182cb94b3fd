"""Run llama.cpp's ``convert_hf_to_gguf.py`` with the ``gguf-py`` vendored beside it (a child process).

usage: python -P _gguf_convert.py LLAMA_SRC_DIR [--no-space-prefix] <convert_hf_to_gguf.py arguments>

The converter needs the gguf-py of its own source tree (the PyPI ``gguf`` lags behind it), so this runs in
its own interpreter with that tree first on ``sys.path``, never inside edgekit's process. With
``--no-space-prefix`` every SentencePiece vocabulary is written with ``tokenizer.ggml.add_space_prefix``
false: the converters of some architectures (qwen2, phi3) leave the key out and llama.cpp then defaults to
adding a space before the text, which the byte-level tokenizer edgekit writes for models without one does
not do. This file imports nothing of edgekit.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> None:
    src = Path(argv[0]).resolve()
    args = argv[1:]
    no_space_prefix = "--no-space-prefix" in args
    args = [a for a in args if a != "--no-space-prefix"]
    # This file's directory holds edgekit modules named like the converter's imports (gguf.py, onnx.py).
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(src), str(src / "gguf-py"), *(p for p in sys.path if p and Path(p).resolve() != here)]
    import gguf

    if no_space_prefix:
        original = gguf.GGUFWriter.add_tokenizer_model

        def add_tokenizer_model(self: Any, model: str) -> None:
            original(self, model)
            if model == "llama":  # llama.cpp's name for a SentencePiece vocabulary
                self.add_add_space_prefix(False)

        gguf.GGUFWriter.add_tokenizer_model = add_tokenizer_model  # type: ignore[method-assign]
    script = src / "convert_hf_to_gguf.py"
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
