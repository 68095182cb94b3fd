"""The quality gate's measurement on a small model whose answers are known: a bigram table as the reference,
and runners that compute it exactly, with a constant logit bias, or with a broken decode path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.export.quality import chunks, gate_failures, measure
from edgekit.export.recipes import Gate

VOCAB = 64


class Bigram:
    """logits(position i) = table[token i]: a reference whose every position is cheap and exact."""

    def __init__(self, seed: int = 0, scale: float = 3.0) -> None:
        self.table = np.random.default_rng(seed).normal(size=(VOCAB, VOCAB)).astype(np.float32) * scale

    def logits(self, token_ids: list[int]) -> np.ndarray:
        return self.table[np.asarray(token_ids)]


class Runner:
    """The same bigram through the runner protocol, with an optional perturbation of its logits."""

    def __init__(self, reference: Bigram, perturb=None, forget_steps: bool = False) -> None:
        self.reference, self.perturb, self.forget_steps = reference, perturb, forget_steps
        self.last: int | None = None

    def reset(self) -> None:
        self.last = None

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        self.last = token_ids[-1]
        return self._out()

    def step(self, token_id: int) -> np.ndarray:
        if not self.forget_steps:  # a broken decode path keeps answering for the prefill's last token
            self.last = token_id
        return self._out()

    def _out(self) -> np.ndarray:
        assert self.last is not None
        logits = self.reference.table[self.last].copy()
        return logits if self.perturb is None else self.perturb(logits)


def sample_text(reference: Bigram, n: int, seed: int = 1) -> list[int]:
    """Tokens drawn from the reference itself, so its perplexity is meaningful."""
    rng = np.random.default_rng(seed)
    ids = [0]
    probs = np.exp(reference.table - reference.table.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for _ in range(n - 1):
        ids.append(int(rng.choice(VOCAB, p=probs[ids[-1]])))
    return ids


def test_chunks_score_at_least_the_asked_tokens() -> None:
    ids = list(range(512 * 50))
    parts = chunks(ids, 512, 10_000)
    assert len(parts) == math.ceil(10_000 / 255) == 40 and all(len(p) == 512 for p in parts)
    assert parts[1][0] == 512  # consecutive, no overlap
    assert len(chunks(ids[:1000], 512, 10_000)) == 1  # a short text gives what it has


def test_an_exact_artifact_measures_as_the_reference() -> None:
    reference = Bigram()
    ids = sample_text(reference, 64 * 40)
    result = measure(Runner(reference), reference, ids, text="bigram", n_ctx=64, min_tokens=1000)
    assert result.tokens == result.chunks * 31 and result.tokens >= 1000
    assert result.kl_mean == pytest.approx(0, abs=1e-9) and result.top1_agreement == 1.0
    assert result.ppl_ratio == pytest.approx(1.0) and result.max_abs_logit_diff == 0
    assert result.ppl_ratio_ci[0] == pytest.approx(1.0) and result.ppl_ratio_ci[1] == pytest.approx(1.0)
    # perplexity of text sampled from the model itself: exp(entropy), far below the uniform 64
    assert 1 < result.ppl_reference < VOCAB


def test_noise_costs_kl_and_perplexity_with_intervals_around_them() -> None:
    reference = Bigram()
    ids = sample_text(reference, 64 * 60)
    rng = np.random.default_rng(7)
    noisy = Runner(reference, perturb=lambda x: x + rng.normal(scale=1.0, size=x.shape).astype(np.float32))
    result = measure(noisy, reference, ids, text="bigram", n_ctx=64, min_tokens=1500)
    assert 0.05 < result.kl_mean < 2 and result.kl_ci[0] < result.kl_mean < result.kl_ci[1]
    assert result.ppl_ratio > 1.01 and result.ppl_ratio_ci[0] < result.ppl_ratio < result.ppl_ratio_ci[1]
    assert result.top1_agreement < 1 and result.top1_ci[0] <= result.top1_agreement <= result.top1_ci[1]
    # A logit shift is no change at all: softmax is invariant to it.
    shifted = measure(Runner(reference, perturb=lambda x: x + 5.0), reference, ids, text="b", n_ctx=64,
                      min_tokens=1500)  # fmt: skip
    assert shifted.kl_mean == pytest.approx(0, abs=1e-6) and shifted.max_abs_logit_diff == pytest.approx(5.0)


def test_a_broken_decode_path_is_caught_even_when_prefill_is_exact() -> None:
    reference = Bigram()
    ids = sample_text(reference, 64 * 40)
    result = measure(Runner(reference, forget_steps=True), reference, ids, text="bigram", n_ctx=64, min_tokens=1000)
    gate = Gate(max_kl=0.05, max_ppl_ratio=1.05, min_top1_agreement=0.9, max_abs_logit_diff=50)
    failures = gate_failures(result, gate, linear_total=10, linear_quantized=10, delegated_share=None)
    assert any(f.startswith("mean KL divergence") for f in failures), failures
    assert any(f.startswith("same top-1") for f in failures)


def test_nan_logits_fail_with_their_own_line() -> None:
    reference = Bigram()
    ids = sample_text(reference, 64 * 20)
    result = measure(Runner(reference, perturb=lambda x: x * np.nan), reference, ids, text="b", n_ctx=64,
                     min_tokens=500)  # fmt: skip
    gate = Gate(max_kl=1, max_ppl_ratio=2, min_top1_agreement=0, max_abs_logit_diff=1e9)
    failures = gate_failures(result, gate, linear_total=1, linear_quantized=1, delegated_share=None)
    assert "the artifact's logits are not finite (NaN or inf)" in failures
