"""A GGUF file run in llama.cpp through its C API (ctypes on the build's libllama), for the quality gate.

``LlamaRunner`` is the gate's ``ArtifactRunner``: ``reset`` clears the context's memory (KV cache),
``prefill`` decodes a batch of tokens and returns the logits of the last, ``step`` decodes one. It runs
what a device runs: ``llama_decode`` with the context's own KV cache (f16, ``n_ctx`` cells allocated at
creation), ``n_threads`` from the recipe.

The structs below are copied field by field from ``include/llama.h`` of the pinned build (b11312), the
only layout this binding has been checked against (``tests/export/test_gguf.py`` compiles a C program
against the header and compares sizes and offsets). Parameters come from ``llama_*_default_params``
returned by value, and only plain fields are changed. The library is loaded once per process; llama.cpp's
log goes to a ring buffer that errors quote instead of to stderr.

This module runs a GGUF; it never writes one and does not locate or build llama.cpp (``edgekit.llamacpp``).
"""

from __future__ import annotations

import collections
import ctypes
import threading
import weakref
from pathlib import Path

import numpy as np

from edgekit.errors import ExportError

c_enum = ctypes.c_int  # C enums here are int-sized
GGML_TYPE_F32 = 0  # enum ggml_type
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0


class ModelParams(ctypes.Structure):
    _fields_ = [
        ("devices", ctypes.c_void_p),
        ("tensor_buft_overrides", ctypes.c_void_p),
        ("n_gpu_layers", ctypes.c_int32),
        ("split_mode", c_enum),
        ("load_mode", c_enum),
        ("lazy_mode", c_enum),
        ("main_gpu", ctypes.c_int32),
        ("tensor_split", ctypes.c_void_p),
        ("progress_callback", ctypes.c_void_p),
        ("progress_callback_user_data", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("vocab_only", ctypes.c_bool),
        ("check_tensors", ctypes.c_bool),
        ("use_extra_bufts", ctypes.c_bool),
        ("no_host", ctypes.c_bool),
        ("no_alloc", ctypes.c_bool),
        ("load_mtp", ctypes.c_bool),
    ]


class ContextParams(ctypes.Structure):
    _fields_ = [
        ("n_ctx", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint32),
        ("n_ubatch", ctypes.c_uint32),
        ("n_seq_max", ctypes.c_uint32),
        ("n_rs_seq", ctypes.c_uint32),
        ("n_outputs_max", ctypes.c_uint32),
        ("n_outputs_max_per_seq", ctypes.c_uint32),
        ("n_threads", ctypes.c_int32),
        ("n_threads_batch", ctypes.c_int32),
        ("ctx_type", c_enum),
        ("rope_scaling_type", c_enum),
        ("pooling_type", c_enum),
        ("attention_type", c_enum),
        ("flash_attn_type", c_enum),
        ("rope_freq_base", ctypes.c_float),
        ("rope_freq_scale", ctypes.c_float),
        ("yarn_ext_factor", ctypes.c_float),
        ("yarn_attn_factor", ctypes.c_float),
        ("yarn_beta_fast", ctypes.c_float),
        ("yarn_beta_slow", ctypes.c_float),
        ("yarn_orig_ctx", ctypes.c_uint32),
        ("defrag_thold", ctypes.c_float),
        ("cb_eval", ctypes.c_void_p),
        ("cb_eval_user_data", ctypes.c_void_p),
        ("type_k", c_enum),
        ("type_v", c_enum),
        ("abort_callback", ctypes.c_void_p),
        ("abort_callback_data", ctypes.c_void_p),
        ("embeddings", ctypes.c_bool),
        ("offload_kqv", ctypes.c_bool),
        ("no_perf", ctypes.c_bool),
        ("op_offload", ctypes.c_bool),
        ("swa_full", ctypes.c_bool),
        ("kv_unified", ctypes.c_bool),
        ("samplers", ctypes.c_void_p),
        ("n_samplers", ctypes.c_size_t),
        ("ctx_other", ctypes.c_void_p),
    ]


class Batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("token", ctypes.POINTER(ctypes.c_int32)),
        ("embd", ctypes.POINTER(ctypes.c_float)),
        ("pos", ctypes.POINTER(ctypes.c_int32)),
        ("n_seq_id", ctypes.POINTER(ctypes.c_int32)),
        ("seq_id", ctypes.POINTER(ctypes.POINTER(ctypes.c_int32))),
        ("logits", ctypes.POINTER(ctypes.c_int8)),
    ]


STRUCTS = {"llama_model_params": ModelParams, "llama_context_params": ContextParams, "llama_batch": Batch}

# void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * user_data)
_LogCallback = ctypes.CFUNCTYPE(None, c_enum, ctypes.c_char_p, ctypes.c_void_p)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_log_lines: collections.deque[str] = collections.deque(maxlen=40)


@_LogCallback
def _keep_log(level: int, text: bytes | None, user_data: int | None) -> None:
    if text:
        _log_lines.append(text.decode(errors="replace"))


def log_tail(lines: int = 8) -> str:
    """The last lines llama.cpp logged in this process (for error messages)."""
    text = "".join(_log_lines)
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def load_library(path: Path) -> ctypes.CDLL:
    """libllama, loaded and initialised once per process (later calls return the first one)."""
    global _lib
    with _lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise ExportError(f"cannot load {path}: {exc}") from exc
            _declare(lib)
            lib.llama_log_set(_keep_log, None)
            lib.llama_backend_init()
            _lib = lib
        return _lib


def _declare(lib: ctypes.CDLL) -> None:
    p, b, i32p = ctypes.c_void_p, ctypes.c_bool, ctypes.POINTER(ctypes.c_int32)
    signatures: dict[str, tuple[object, list[object]]] = {
        "llama_log_set": (None, [_LogCallback, p]),
        "llama_backend_init": (None, []),
        "llama_model_default_params": (ModelParams, []),
        "llama_context_default_params": (ContextParams, []),
        "llama_model_load_from_file": (p, [ctypes.c_char_p, ModelParams]),
        "llama_model_free": (None, [p]),
        "llama_init_from_model": (p, [p, ContextParams]),
        "llama_free": (None, [p]),
        "llama_model_get_vocab": (p, [p]),
        "llama_vocab_n_tokens": (ctypes.c_int32, [p]),
        "llama_n_ctx": (ctypes.c_uint32, [p]),
        "llama_n_batch": (ctypes.c_uint32, [p]),
        "llama_get_memory": (p, [p]),
        "llama_memory_clear": (None, [p, ctypes.c_bool]),
        "llama_batch_get_one": (Batch, [ctypes.POINTER(ctypes.c_int32), ctypes.c_int32]),
        "llama_decode": (ctypes.c_int32, [p, Batch]),
        "llama_get_logits_ith": (ctypes.POINTER(ctypes.c_float), [p, ctypes.c_int32]),
        "llama_tokenize": (ctypes.c_int32, [p, ctypes.c_char_p, ctypes.c_int32, i32p, ctypes.c_int32, b, b]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _free(lib: ctypes.CDLL, ctx: int, model: int) -> None:
    if ctx:
        lib.llama_free(ctx)
    if model:
        lib.llama_model_free(model)


class LlamaRunner:
    """One GGUF model and one context (one sequence), logits of the newest position as numpy float32."""

    def __init__(self, libllama: Path, gguf: Path, *, n_ctx: int, n_threads: int, exact_kv: bool = False) -> None:
        lib = self._lib = load_library(libllama)
        model = lib.llama_model_load_from_file(str(gguf).encode(), lib.llama_model_default_params())
        if not model:
            raise ExportError(f"llama.cpp could not load {gguf.name}: {log_tail()}")
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx  # a prefill of up to n_ctx tokens is one llama_decode call
        params.n_threads = params.n_threads_batch = n_threads
        if exact_kv:
            # For checking the binding and the conversion, not for the gate: the default f16 KV cache (and
            # flash attention, which computes in f16) moves a tiny f32 model's logits by up to ~0.1; with
            # f32 cells and plain attention they match eager PyTorch to ~1e-3.
            params.type_k = params.type_v = GGML_TYPE_F32
            params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = lib.llama_init_from_model(model, params)
        if not ctx:
            lib.llama_model_free(model)
            raise ExportError(f"llama.cpp could not create a context of {n_ctx} for {gguf.name}: {log_tail()}")
        self._ctx = ctx
        self._finalizer = weakref.finalize(self, _free, lib, ctx, model)
        self.n_ctx = int(lib.llama_n_ctx(ctx))
        self._n_batch = int(lib.llama_n_batch(ctx))
        self._vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self._memory = lib.llama_get_memory(ctx)
        self.position = 0

    def reset(self) -> None:
        self._lib.llama_memory_clear(self._memory, True)
        self.position = 0

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        for start in range(0, len(token_ids), self._n_batch):
            self._decode(token_ids[start : start + self._n_batch])
        return self._last_logits()

    def step(self, token_id: int) -> np.ndarray:
        self._decode([token_id])
        return self._last_logits()

    def tokenize(self, text: str) -> list[int]:
        """``text`` as llama.cpp's tokenizer for this file splits it (no BOS, special tokens as text)."""
        raw = text.encode()
        room = len(raw) + 16
        out = (ctypes.c_int32 * room)()
        n = self._lib.llama_tokenize(self._vocab, raw, len(raw), out, room, False, False)
        if n < 0:
            raise ExportError(f"llama_tokenize needs {-n} tokens for {len(raw)} bytes")
        return list(out[:n])

    def close(self) -> None:
        self._finalizer()

    def _decode(self, ids: list[int]) -> None:
        if self.position + len(ids) > self.n_ctx:
            raise ExportError(f"llama.cpp context of {self.n_ctx} positions is full at {self.position}")
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:  # llama.cpp aborts the process on an out-of-range id; refuse here instead
            raise ExportError(f"token id {bad[0]} is outside the model's vocabulary of {self.n_vocab}")
        tokens = (ctypes.c_int32 * len(ids))(*ids)
        # llama_batch_get_one: sequence 0, positions continue from the memory, logits for the last only.
        status = self._lib.llama_decode(self._ctx, self._lib.llama_batch_get_one(tokens, len(ids)))
        if status != 0:
            raise ExportError(f"llama_decode returned {status} at position {self.position}: {log_tail()}")
        self.position += len(ids)

    def _last_logits(self) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(self._ctx, -1)
        if not ptr:
            raise ExportError(f"llama.cpp returned no logits at position {self.position}: {log_tail()}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
