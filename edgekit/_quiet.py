"""Keep third-party chatter off the user's terminal.

torch, torchao, transformers and onnxruntime log warnings and emit Python warnings that say
nothing to an edgekit user (deprecations, optional kernels not built for this CPU). The CLI calls
``quiet_libraries`` unless ``--debug`` is given. ExecuTorch's native runtime prints CPU-probe lines on
fd 2 when it loads a program; ``native_stderr_silenced`` hides those around the call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

_LOGGERS = ("torch", "torchao", "transformers", "onnxruntime", "executorch", "root", "huggingface_hub")


def quiet_libraries() -> None:
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # transformers' own tqdm bars (GGUF conversion) follow this switch; edgekit draws its own progress.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Redirect the process's fd 2 to /dev/null for the duration (native libraries write there)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
