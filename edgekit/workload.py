"""The workload: what one profiling run measures, defined once.

Every entry point builds a ``Workload`` (the CLI's options, a farm file's ``workloads:``, a study's
protocol) and passes it down unchanged; every runner on a device receives it as the same flags
(``agent_flags``) and the same prompt ids (``prompt_ids``, written to a file the host pushes). The limits
are the ones the on-device agents enforce, so a workload that validates here runs on every device; an
invalid one is refused at the edge with the key and the allowed range (exit 2), never at run time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit._config_files import describe_error
from edgekit.errors import WorkloadError

RunnerChoice = Literal["auto", "python", "native"]

# The agents' own limits (device_agents/linux/edgekit_agent and device_agents/android/agent.sh check the
# same; tests/profile/test_workload.py runs both against these bounds).
SAMPLE_MS_MIN, SAMPLE_MS_MAX = 10, 100
DEFAULT_THRESHOLD_C = 45.0  # conditioning: the hottest zone must be below this before a run starts


class Workload(BaseModel):
    """One profiling workload; frozen, validated on construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_len: int = Field(default=50, ge=1, le=100_000, description="prompt tokens (prefill)")
    gen_len: int = Field(default=50, ge=1, le=100_000, description="generated tokens: 1 from prefill + G-1 steps")
    runs: int = Field(default=5, ge=1, le=10_000, description="measured repetitions")
    warmup: int = Field(default=1, ge=0, le=1_000, description="warm-up repetitions (recorded, not measured)")
    threads: int = Field(default=2, ge=1, le=256, description="runtime threads")
    sample_ms: int = Field(default=20, description="sampler period, SAMPLE_MS_MIN..SAMPLE_MS_MAX")
    pss_ms: int = Field(default=100, ge=0, le=60_000,
                        description="PSS (a walk of every mapped page) at most this often unless cheap; 0: no floor")
    baseline_s: float = Field(default=1.0, ge=0, le=3600, description="idle baseline before loading")
    cooldown_s: float = Field(default=10.0, ge=0, le=3600, description="longest cool-down wait before the run")
    threshold_c: float = Field(default=DEFAULT_THRESHOLD_C, gt=0, le=150, description="cool-down target")
    runner: RunnerChoice = "auto"
    timeout_s: float | None = Field(default=None, gt=0, description="kill the agent after this long")

    @field_validator("sample_ms")
    @classmethod
    def _sample_ms_range(cls, value: int) -> int:
        if not SAMPLE_MS_MIN <= value <= SAMPLE_MS_MAX:
            raise ValueError(f"must be within {SAMPLE_MS_MIN}..{SAMPLE_MS_MAX} ms (the agents' sampler limits)")
        return value

    @classmethod
    def parse(cls, values: dict[str, Any], where: str) -> Workload:
        """A workload from user input; every problem is one ``WorkloadError`` naming ``where`` and the key."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            details = "; ".join(describe_error(e, cls) for e in exc.errors())
            raise WorkloadError(f"{where}: {details}") from exc

    def prompt_ids(self, vocab_size: int) -> list[int]:
        """The prompt every runner feeds: fixed ids spread over the vocabulary, skipping the first ids
        (where tokenizers keep their special tokens)."""
        low = 3 if vocab_size > 16 else 0
        span = max(1, vocab_size - low)
        return [low + (i * 7919 + 13) % span for i in range(self.prompt_len)]

    def agent_flags(self, prompt_ids_file: str) -> list[str]:
        """The workload as the flags both on-device agents take (the same names, the same units)."""
        return [
            "--prompt-len", str(self.prompt_len),
            "--prompt-ids", prompt_ids_file,
            "--gen-len", str(self.gen_len),
            "--warmup", str(self.warmup),
            "--runs", str(self.runs),
            "--threads", str(self.threads),
            "--sample-ms", str(self.sample_ms),
            "--pss-ms", str(self.pss_ms),
            "--baseline-ms", str(round(self.baseline_s * 1000)),
        ]  # fmt: skip

    def default_timeout_s(self) -> float:
        repetitions = self.runs + self.warmup
        # Generous: 2 s per token and repetition on the slowest device we expect, plus load time.
        return 300.0 + self.baseline_s + repetitions * (self.prompt_len * 0.2 + self.gen_len * 2.0)

    @property
    def effective_timeout_s(self) -> float:
        return self.timeout_s or self.default_timeout_s()

    def check_fits(self, max_context: int | None, what: str) -> None:
        """``WorkloadError`` when prompt and generation do not fit an artifact of ``max_context`` positions."""
        if max_context is not None and self.prompt_len + self.gen_len - 1 > max_context:
            raise WorkloadError(
                f"{what}: prompt_len {self.prompt_len} + gen_len {self.gen_len} - 1 = "
                f"{self.prompt_len + self.gen_len - 1} positions exceed the artifact's max_context {max_context}"
            )

