"""What a run returns: a tidy history, final metrics, claim checks and figures."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

HISTORY_COLUMNS = ["seed", "step", "series", "metric", "value"]


@dataclass
class ClaimCheck:
    """The paper's claim as a measurable statement, and whether this run shows it.

    ``passed`` is computed from ``numbers`` by the method; ``asserted=False`` marks a claim the card
    asks us to report without asserting (e.g. a gain that did not show at toy scale).
    """

    claim: str
    passed: bool
    numbers: dict[str, float]
    detail: str = ""
    asserted: bool = True

    @property
    def verdict(self) -> str:
        if not self.asserted:
            return "REPORTED" + (" (holds)" if self.passed else " (does not hold)")
        return "HOLDS" if self.passed else "DOES NOT HOLD"

    def __str__(self) -> str:
        nums = ", ".join(f"{k} = {_fmt(v)}" for k, v in self.numbers.items())
        text = f"[{self.verdict}] {self.claim}\n    {nums}"
        return text + (f"\n    {self.detail}" if self.detail else "")

    def to_dict(self) -> dict:
        return {"claim": self.claim, "passed": bool(self.passed), "numbers": dict(self.numbers),
                "detail": self.detail, "asserted": self.asserted}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


class History:
    """Collects tidy rows (seed, step, series, metric, value); calls ``callback(row)`` on each.

    ``series`` names an arm (e.g. "dpo", "rpo eta=1") and ``metric`` a quantity ("gold_reward").
    """

    def __init__(self, callback: Callable[[dict], None] | None = None):
        self.rows: list[dict] = []
        self.callback = callback

    def log(self, step: int, series: str, metric: str, value: float, seed: int = 0) -> None:
        row = {"seed": int(seed), "step": int(step), "series": str(series), "metric": str(metric),
               "value": float(value)}
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
    def claims_hold(self) -> bool:
        """True when every asserted claim holds (reported-only claims do not count)."""
        return all(c.passed for c in self.claims if c.asserted)

    def summary(self) -> str:
        lines = [f"{self.method} · preset={self.preset} · seed={self.seed} · device={self.device}"
                 f" · {self.duration_s:.1f} s"]
        lines += [f"  {k}: {_fmt(v)}" for k, v in self.metrics.items()]
        lines += [str(c) for c in self.claims]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Result {self.method} preset={self.preset} claims_hold={self.claims_hold}>"
