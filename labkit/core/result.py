"""What a run returns: a tidy history, final metrics, claim checks and figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .claims import ClaimCheck, Verdict, fmt

HISTORY_COLUMNS = ["seed", "step", "series", "metric", "value"]


@dataclass(frozen=True)
class Arm:
    """One trained variant of a comparison: ``key`` is what the code branches on and what history rows
    and metrics are named by; ``label`` is only for display (a legend entry, a table header)."""

    key: str
    label: str

    def __str__(self) -> str:
        return self.label


class History:
    """Collects tidy rows (seed, step, series, metric, value); calls ``callback(row)`` on each.

    ``series`` names an arm (e.g. "dpo", "rpo eta=1") and ``metric`` a quantity ("gold_reward").
    """

    def __init__(self, callback: Callable[[dict], None] | None = None):
        self.rows: list[dict] = []
        self.callback = callback

    def log(self, step: int, series: str, metric: str, value: float, seed: int = 0) -> None:
        row = {
            "seed": int(seed),
            "step": int(step),
            "series": str(series),
            "metric": str(metric),
            "value": float(value),
        }
        self.rows.append(row)
        if self.callback is not None:
            self.callback(row)

    def log_many(self, step: int, series: str, values: dict[str, float], seed: int = 0) -> None:
        for metric, value in values.items():
            self.log(step, series, metric, value, seed)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=HISTORY_COLUMNS)


@dataclass
class Result:
    """Everything a run produced. ``history`` is a pandas DataFrame with ``HISTORY_COLUMNS``."""

    method: str
    preset: str
    params: dict
    seed: int
    device: str
    history: Any
    metrics: dict[str, float]
    claims: list[ClaimCheck]
    duration_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> ClaimCheck | None:
        """The paper's headline claim (the runner puts it first), or None for a method without one."""
        return self.claims[0] if self.claims and self.claims[0].headline else None

    @property
    def verdict(self) -> Verdict | None:
        """The headline claim's three-way verdict (None when the method states no headline claim)."""
        return self.headline.verdict if self.headline else None

    @property
    def claims_hold(self) -> bool:
        """True when the headline claim holds (its interval clears the margin)."""
        return self.verdict is Verdict.HOLDS

    def claims_text(self) -> str:
        """The claims as text, headline first, each with verdict, interval and margin."""
        return "\n".join(str(c) for c in self.claims) or "(this method states no claim)"

    def summary(self, decimals: int = 4) -> str:
        lines = [
            f"{self.method} · preset={self.preset} · seed={self.seed} · device={self.device} · {self.duration_s:.1f} s"
        ]
        lines += [f"  {k}: {fmt(v, decimals)}" for k, v in self.metrics.items()]
        lines.append(self.claims_text())
        return "\n".join(lines)

    def __repr__(self) -> str:
        verdict = self.verdict.label if self.verdict else "no claim"
        return f"<Result {self.method} preset={self.preset} headline={verdict}>"
