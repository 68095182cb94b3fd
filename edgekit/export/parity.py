"""The parity and quality gate: does the artifact, run in its own runtime, still compute the model?

The eager PyTorch fp32 model is the reference. On fixed prompts it generates greedy tokens; the artifact
is then fed the same tokens (teacher forcing: one prefill of the prompt, then one decode step per token)
so every position is compared on the same context. Measured:

- max absolute logit difference over every compared position;
- top-1 agreement of the artifact's argmax with the reference's greedy tokens;
- perplexity on a small public-domain text shipped with edgekit, artifact over reference.

The reference is computed before export, because quantization modifies the model in place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit.export.recipes import Gate
from edgekit.manifest import Quality

PROMPTS = (
    "The quick brown fox jumps over the lazy dog because",
    "Four score and seven years ago our fathers brought forth",
)
DECODE_TOKENS = 32
PPL_TOKENS = 128


def corpus_text() -> str:
    from edgekit.data import training_text

    return training_text()


class ArtifactRunner(Protocol):
    """One sequence at a time: ``reset`` starts a new one, ``step`` appends tokens and returns their logits."""

    def reset(self) -> None: ...

    def step(self, token_ids: list[int]) -> np.ndarray: ...


class OnnxRunner:
    """Drives an ONNX model with past/present key-values through ONNX Runtime."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted(n for n in self.input_names if n.startswith("past_key_values."))
        self.reset()

    def reset(self) -> None:
        self.past: dict[str, np.ndarray] = {}
        for name in self.past_names:
            shape = self.input_names[name].shape  # [batch, kv_heads, past_len, head_dim]
            self.past[name] = np.zeros((1, int(shape[1]), 0, int(shape[3])), dtype=np.float32)
        self.pos = 0

    def step(self, token_ids: list[int]) -> np.ndarray:
        n = len(token_ids)
        feed: dict[str, Any] = {"input_ids": np.asarray([token_ids], dtype=np.int64)}
        if "attention_mask" in self.input_names:
            feed["attention_mask"] = np.ones((1, self.pos + n), dtype=np.int64)
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.arange(self.pos, self.pos + n, dtype=np.int64)[None, :]
        feed.update(self.past)
        outputs = self.session.run(None, feed)
        names = [o.name for o in self.session.get_outputs()]
        result = dict(zip(names, outputs, strict=True))
        for past in self.past_names:
            self.past[past] = result[past.replace("past_key_values.", "present.")]
        self.pos += n
        return np.asarray(result["logits"][0], dtype=np.float32)


class PteRunner:
    """Drives a ``.pte`` whose ``forward(input_ids, cache_position)`` keeps a static KV cache inside."""

    def __init__(self, path: Path) -> None:
        from executorch.runtime import Runtime

        from edgekit._quiet import native_stderr_silenced

        with native_stderr_silenced():
            self.program = Runtime.get().load_program(str(path))
            self.method = self.program.load_method("forward")
        self.pos = 0

    def reset(self) -> None:
        # Stale cache entries past the current position are masked by cache_position: no wipe needed.
        self.pos = 0

    def step(self, token_ids: list[int]) -> np.ndarray:
        import torch

        n = len(token_ids)
        ids = torch.tensor([token_ids], dtype=torch.long)
        positions = torch.arange(self.pos, self.pos + n, dtype=torch.long)
        (logits,) = self.method.execute([ids, positions])
        self.pos += n
        return logits[0].float().numpy()


@dataclass
class _Case:
    prompt_ids: list[int]
    sequence: list[int]  # prompt + greedy tokens
    logits: np.ndarray  # reference logits at every position of sequence[:-1]


@dataclass
class Reference:
    """What eager fp32 PyTorch computes on the fixed prompts and the corpus."""

    cases: list[_Case]
    ppl_ids: list[int]
    ppl: float

    @classmethod
    def compute(cls, model: Any, tokenizer: Any, max_context: int) -> Reference:
        import torch

        budget = max_context - 1
        cases = []
        with torch.no_grad():
            for prompt in PROMPTS:
                ids = tokenizer.encode(prompt)[: max(1, budget - DECODE_TOKENS)]
                seq = _greedy(model, ids, DECODE_TOKENS)
                full = model(torch.tensor([seq[:-1]])).logits[0].float().numpy()
                cases.append(_Case(list(ids), seq, full))
            ppl_ids = tokenizer.encode(corpus_text())[: min(PPL_TOKENS, budget) + 1]
            ref_logits = model(torch.tensor([ppl_ids[:-1]])).logits[0].float().numpy()
        return cls(cases, ppl_ids, _perplexity(ref_logits, ppl_ids))


def _greedy(model: Any, ids: list[int], n_tokens: int) -> list[int]:
    """Greedy continuation with the model's own KV cache (one token per forward after the prompt)."""
    import torch

    seq = list(ids)
    out = model(torch.tensor([seq]), use_cache=True)
    for _ in range(n_tokens):
        token = int(torch.argmax(out.logits[0, -1]))
        seq.append(token)
        out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return seq


def _perplexity(logits: np.ndarray, ids: list[int]) -> float:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    targets = np.asarray(ids[1:])
    nll = -log_probs[np.arange(len(targets)), targets]
    return float(math.exp(nll.mean()))


@dataclass
class ParityResult:
    max_abs_logit_diff: float
    top1_agreement: float
    ppl_reference: float
    ppl_artifact: float
    compared_positions: int

    @property
    def ppl_ratio(self) -> float:
        return self.ppl_artifact / self.ppl_reference

    def to_quality(self) -> Quality:
        return Quality(**asdict(self), ppl_ratio=self.ppl_ratio)

    @classmethod
    def from_quality(cls, quality: Quality) -> ParityResult:
        return cls(**{k: getattr(quality, k) for k in cls.__dataclass_fields__})


def measure(runner: ArtifactRunner, reference: Reference) -> ParityResult:
    max_diff = 0.0
    agree = total = positions = 0
    for case in reference.cases:
        runner.reset()
        chunks = [runner.step(case.prompt_ids)]
        for token in case.sequence[len(case.prompt_ids) : -1]:
            chunks.append(runner.step([token]))
        got = np.concatenate(chunks, axis=0)
        max_diff = max(max_diff, float(np.abs(got - case.logits).max()))
        positions += got.shape[0]
        start = len(case.prompt_ids) - 1
        predicted = got[start:].argmax(axis=-1)
        expected = np.asarray(case.sequence[start + 1 :])
        agree += int((predicted == expected).sum())
        total += len(expected)
    runner.reset()
    ppl_logits = runner.step(reference.ppl_ids[:-1])
    return ParityResult(
        max_abs_logit_diff=max_diff,
        top1_agreement=agree / total,
        ppl_reference=reference.ppl,
        ppl_artifact=_perplexity(ppl_logits, reference.ppl_ids),
        compared_positions=positions,
    )


def gate_failures(
    result: ParityResult, gate: Gate, *, linear_total: int, linear_quantized: int, delegated_share: float | None
) -> list[str]:
    """Every threshold the artifact misses, as a sentence with the number and the limit."""
    failures = []
    if result.max_abs_logit_diff > gate.max_abs_logit_diff:
        failures.append(f"max |logit diff| {result.max_abs_logit_diff:.4g} > {gate.max_abs_logit_diff:g}")
    if result.top1_agreement < gate.min_top1_agreement:
        failures.append(f"top-1 agreement {result.top1_agreement:.3f} < {gate.min_top1_agreement:g}")
    if result.ppl_ratio > gate.max_ppl_ratio:
        failures.append(f"perplexity ratio {result.ppl_ratio:.4f} > {gate.max_ppl_ratio:g}")
    if gate.require_all_linear_quantized and linear_quantized < linear_total:
        failures.append(f"only {linear_quantized} of {linear_total} linear layers quantized")
    if delegated_share is not None and delegated_share < gate.min_delegated_share:
        failures.append(f"XNNPACK delegated share {delegated_share:.2f} < {gate.min_delegated_share:g}")
    return failures
