"""Accounting of a rating run: what was sent, what came from the cache, what failed and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RatingStats"]


@dataclass
class RatingStats:
    """Counters of one process's rating work (see `Rater.stats`).

    ``requests_sent`` counts answered requests (what a paid API bills); ``attempts`` also counts
    the ones that failed on the way; ``cache_hits`` counts requests answered from the cache.
    """

    samples: int = 0
    rated: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)
    requests_sent: int = 0
    attempts: int = 0
    retries: int = 0
    transport_errors: Counter = field(default_factory=Counter)
    cache_hits: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    response_format_fallback: bool = False

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = dict(self.failures)
        data["transport_errors"] = dict(self.transport_errors)
        data["samples_per_s"] = round(self.samples_per_s, 3)
        return data

    def summary(self) -> str:
        """A few lines for logs and the CLI."""
        failures = ", ".join(f"{k} {v}" for k, v in self.failures.most_common()) or "none"
        errors = ", ".join(f"{k} {v}" for k, v in self.transport_errors.most_common()) or "none"
        lines = [
            f"rated {self.rated}/{self.samples} samples, failed {self.failed} ({failures})",
            f"requests sent {self.requests_sent}, cache hits {self.cache_hits}, re-asks {self.reasks}, "
            f"retries {self.retries} (transport errors: {errors})",
            f"tokens: prompt {self.prompt_tokens}, completion {self.completion_tokens}; "
            f"{self.samples_per_s:.2f} samples/s over {self.seconds:.1f} s",
        ]
        if self.response_format_fallback:
            lines.append("the server rejected response_format; answers were parsed from free text")
        return "\n".join(lines)
