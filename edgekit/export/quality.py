"""The quality gate: does the artifact, run in its own runtime, still compute the model? Measured the way
llama.cpp's ``llama-perplexity --kl-divergence`` measures a quantization, against the eager fp32 model.

The text is public-domain English prose shipped with edgekit (``edgekit.data.gate_text``), apart from the
text the tiny test models are trained on. It is tokenized once and cut into chunks of ``n_ctx`` tokens
(512, or the artifact's context if smaller). In every chunk the first half is context and the second
half is scored: the artifact is given the first half as one prefill and then the scored half one token at
a time through its own decode path (its KV cache included), so what is measured is what runs on a
device. The reference is the eager fp32 model on the same chunk. Per scored token:

- the KL divergence KL(reference || artifact) of the next-token distributions;
- whether the artifact's top-1 token is the reference's;
- the negative log-likelihood of the true next token under each;
- the largest absolute logit difference (only a sanity bound: a broken artifact is off by orders).

Reported with 95% confidence intervals over the scored tokens: mean KL, the same-top-1 rate (binomial),
and the perplexity ratio exp(mean(nll_artifact - nll_reference)) from the paired per-token differences,
which is far narrower than comparing two perplexities. At least ``MIN_TOKENS`` tokens are scored.
Thresholds live in each recipe's ``gate`` (``Gate``); this module measures and judges, it exports nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgekit.export.recipes import Gate

N_CTX = 512
MIN_TOKENS = 10_000
Z95 = 1.959963984540054


class ArtifactRunner(Protocol):
    """One sequence at a time through the artifact's runtime, logits of the newest position only."""

    def reset(self) -> None:
        """Start a new sequence (position 0)."""
        ...

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        """Feed the tokens at the next positions; the logits [vocab] after the last of them."""
        ...

    def step(self, token_id: int) -> np.ndarray:
        """Feed one token at the next position; the logits [vocab] after it."""
        ...


class ReferenceModel(Protocol):
    def logits(self, token_ids: list[int]) -> np.ndarray:
        """Logits [len, vocab] of a fresh sequence, every position."""
        ...


class TorchReference:
    """The eager PyTorch fp32 model as the reference."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def logits(self, token_ids: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(torch.tensor([token_ids]), use_cache=False).logits[0]
        return np.asarray(out.float().numpy(), dtype=np.float32)


def chunks(token_ids: list[int], n_ctx: int, min_tokens: int = MIN_TOKENS) -> list[list[int]]:
    """Consecutive chunks of ``n_ctx`` tokens, as many as score at least ``min_tokens`` (or all there are)."""
    per_chunk = n_ctx - 1 - n_ctx // 2
    wanted = math.ceil(min_tokens / per_chunk)
    available = len(token_ids) // n_ctx
    return [token_ids[i * n_ctx : (i + 1) * n_ctx] for i in range(min(wanted, available))]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class _Tally:
    kl: list[float] = field(default_factory=list)
    nll_diff: list[float] = field(default_factory=list)
    nll_ref: list[float] = field(default_factory=list)
    nll_art: list[float] = field(default_factory=list)
    same_top1: list[bool] = field(default_factory=list)
    max_abs_logit_diff: float = 0.0

    def add(self, ref_logits: np.ndarray, art_logits: np.ndarray, target: int) -> None:
        lp_ref, lp_art = _log_softmax(ref_logits), _log_softmax(art_logits)
        self.kl.append(float(np.sum(np.exp(lp_ref) * (lp_ref - lp_art))))
        self.nll_ref.append(-float(lp_ref[target]))
        self.nll_art.append(-float(lp_art[target]))
        self.nll_diff.append(self.nll_art[-1] - self.nll_ref[-1])
        self.same_top1.append(int(ref_logits.argmax()) == int(art_logits.argmax()))
        diff = float(np.abs(ref_logits.astype(np.float64) - art_logits).max())
        self.max_abs_logit_diff = max(self.max_abs_logit_diff, diff if math.isfinite(diff) else math.inf)


@dataclass(frozen=True)
class QualityResult:
    """What the gate measured; every interval is a 95% confidence interval over the scored tokens."""

    text: str
    n_ctx: int
    chunks: int
    tokens: int
    kl_mean: float
    kl_ci: tuple[float, float]
    kl_p99: float
    kl_max: float
    top1_agreement: float
    top1_ci: tuple[float, float]
    ppl_reference: float
    ppl_artifact: float
    ppl_ratio: float
    ppl_ratio_ci: tuple[float, float]
    max_abs_logit_diff: float

    @classmethod
    def from_tally(cls, tally: _Tally, text: str, n_ctx: int, n_chunks: int) -> QualityResult:
        n = len(tally.kl)
        kl, diff = np.asarray(tally.kl), np.asarray(tally.nll_diff)
        top1 = float(np.mean(tally.same_top1))
        kl_half = Z95 * float(kl.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        diff_mean = float(diff.mean())
        diff_half = Z95 * float(diff.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        top1_half = Z95 * math.sqrt(max(top1 * (1 - top1), 1e-12) / n)
        finite = bool(np.isfinite(kl).all() and np.isfinite(diff).all())
        return cls(
            text=text, n_ctx=n_ctx, chunks=n_chunks, tokens=n,
            kl_mean=float(kl.mean()) if finite else math.inf,
            kl_ci=(float(kl.mean()) - kl_half, float(kl.mean()) + kl_half) if finite else (math.inf, math.inf),
            kl_p99=float(np.percentile(kl, 99)) if finite else math.inf,
            kl_max=float(kl.max()) if finite else math.inf,
            top1_agreement=top1, top1_ci=(max(0.0, top1 - top1_half), min(1.0, top1 + top1_half)),
            ppl_reference=math.exp(float(np.mean(tally.nll_ref))),
            ppl_artifact=math.exp(float(np.mean(tally.nll_art))) if finite else math.inf,
            ppl_ratio=math.exp(diff_mean) if finite else math.inf,
            ppl_ratio_ci=(math.exp(diff_mean - diff_half), math.exp(diff_mean + diff_half)) if finite
            else (math.inf, math.inf),
            max_abs_logit_diff=tally.max_abs_logit_diff,
        )  # fmt: skip


def measure(runner: ArtifactRunner, reference: ReferenceModel, token_ids: list[int], *, text: str,
            n_ctx: int = N_CTX, min_tokens: int = MIN_TOKENS) -> QualityResult:  # fmt: skip
    """Score ``runner`` against ``reference`` on ``token_ids`` (see the module docstring)."""
    parts = chunks(token_ids, n_ctx, min_tokens)
    if not parts:
        raise ValueError(f"the gate text has {len(token_ids)} tokens, fewer than one chunk of {n_ctx}")
    tally = _Tally()
    first = n_ctx // 2
    for chunk in parts:
        ref = reference.logits(chunk)
        runner.reset()
        art = runner.prefill(chunk[: first + 1])
        for position in range(first, n_ctx - 1):
            if position > first:
                art = runner.step(chunk[position])
            tally.add(ref[position], art, chunk[position + 1])
    return QualityResult.from_tally(tally, text, n_ctx, len(parts))


def gate_failures(result: QualityResult, gate: Gate, *, linear_total: int, linear_quantized: int,
                  delegated_share: float | None) -> list[str]:  # fmt: skip
    """Every threshold the artifact misses, as a sentence with the number and the limit."""
    failures = []
    if not math.isfinite(result.kl_mean):
        failures.append("the artifact's logits are not finite (NaN or inf)")
    if result.kl_mean > gate.max_kl:
        failures.append(f"mean KL divergence {result.kl_mean:.4f} > {gate.max_kl:g}")
    if result.ppl_ratio > gate.max_ppl_ratio:
        failures.append(f"perplexity ratio {result.ppl_ratio:.4f} > {gate.max_ppl_ratio:g}")
    if result.top1_agreement < gate.min_top1_agreement:
        failures.append(f"same top-1 {result.top1_agreement:.3f} < {gate.min_top1_agreement:g}")
    if result.max_abs_logit_diff > gate.max_abs_logit_diff:
        failures.append(f"max |logit diff| {result.max_abs_logit_diff:.4g} > {gate.max_abs_logit_diff:g}")
    if gate.require_all_linear_quantized and linear_quantized < linear_total:
        failures.append(f"only {linear_quantized} of {linear_total} linear layers quantized")
    if delegated_share is not None and delegated_share < gate.min_delegated_share:
        failures.append(f"XNNPACK delegated share {delegated_share:.2f} < {gate.min_delegated_share:g}")
    return failures
