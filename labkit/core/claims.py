"""Claims: the paper's statement, a margin fixed before the run, and a three-way verdict from an interval.

A claim compares one quantity, measured once per seed (e.g. "final gold reward of RPO minus DPO"), with a
margin that states what the paper says ("better than" is a margin of 0; "within 1 pt of" is −0.01). The
verdict comes from a 95% interval of the mean over seeds, never from the point estimate near the bar:

    holds           the whole interval is on the claimed side of the margin
    does not hold   the whole interval is on the other side
    inconclusive    the interval straddles the margin (or there is one seed only and no interval)

Everything here is pure Python (``statistics``), so ``import labkit`` stays cheap and a claim can be built
from numbers alone, as the tests do with hand-made per-seed values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

#: default interval level; a claim may ask for another
LEVEL = 0.95
#: comparisons at the margin allow this much floating-point slack (0.7 - 0.3 >= 0.4 must hold)
TOLERANCE = 1e-9


class Verdict(str, Enum):
    """The three outcomes of a claim check."""

    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    INCONCLUSIVE = "inconclusive"

    @property
    def label(self) -> str:
        """Upper-case label for text output: ``HOLDS``, ``DOES NOT HOLD``, ``INCONCLUSIVE``."""
        return self.value.upper()


def nonfinite_note(*values) -> str:
    """The detail line for a claim whose per-seed values (any number of arrays) include NaN/inf: an arm diverged,
    and :func:`decide` makes the verdict inconclusive. Empty when every value is finite."""
    finite = all(math.isfinite(float(v)) for vals in values for v in _flat(vals))
    return "" if finite else "a value is not finite (an arm diverged): the verdict is inconclusive"


def _flat(values) -> Iterable:
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        for v in values:
            yield from _flat(v)
    else:
        yield values


def fmt(value: float, decimals: int = 3, sign: bool = False) -> str:
    """A number at a fixed number of decimals (``-0.000`` printed as ``0.000``); ``nan``/``inf`` as words.

    Checked notebook cells print through this, with ``decimals`` chosen per quantity from the spread
    measured across CPU kernels and thread counts (``benchmarks/spread.py``)."""
    if isinstance(value, bool) or isinstance(value, int):
        return f"{value:+d}" if sign else str(value)
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    text = f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"
    zero = f"{0:.{decimals}f}"
    if text.lstrip("+-") == zero:  # no "-0.000"
        return ("+" if sign else "") + zero
    return text


def _t_quantile(p: float, df: int) -> float:
    """Student-t quantile; scipy when available (exact), else the Cornish-Fisher expansion (to ~1e-4 for df ≥ 2)."""
    try:
        from scipy.stats import t

        return float(t.ppf(p, df))
    except ImportError:  # pragma: no cover - scipy is a core dependency
        z = statistics.NormalDist().inv_cdf(p)
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        return z + g1 / df + g2 / df**2 + g3 / df**3


@dataclass(frozen=True)
class Interval:
    """Mean of per-seed values with a two-sided Student-t interval at ``level`` (``n = 1``: no interval)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    @classmethod
    def of(cls, values: Iterable[float], level: float = LEVEL) -> Interval:
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("an interval needs at least one value")
        mean = statistics.fmean(vals)
        if len(vals) == 1 or not all(math.isfinite(v) for v in vals):
            return cls(mean, mean, mean, len(vals), level)
        half = _t_quantile(0.5 + level / 2, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
        return cls(mean, mean - half, mean + half, len(vals), level)

    @property
    def has_spread(self) -> bool:
        """False for one seed: the interval is a point and says nothing about seed-to-seed noise."""
        return self.n > 1

    def text(self, decimals: int = 3) -> str:
        if not self.has_spread:
            return f"{fmt(self.mean, decimals, sign=True)} (1 seed, no interval)"
        return (
            f"{fmt(self.mean, decimals, sign=True)}, {self.level:.0%} CI "
            f"[{fmt(self.low, decimals, sign=True)}, {fmt(self.high, decimals, sign=True)}] over {self.n} seeds"
        )


def decide(interval: Interval, margin: float, higher_is_better: bool = True, tol: float = TOLERANCE) -> Verdict:
    """The three-way verdict of ``interval`` against ``margin`` (see the module docstring); a non-finite
    interval (a diverged arm) is inconclusive."""
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return Verdict.INCONCLUSIVE
    if higher_is_better:
        if interval.low >= margin - tol:
            return Verdict.HOLDS
        if interval.high < margin - tol:
            return Verdict.DOES_NOT_HOLD
    else:
        if interval.high <= margin + tol:
            return Verdict.HOLDS
        if interval.low > margin + tol:
            return Verdict.DOES_NOT_HOLD
    return Verdict.INCONCLUSIVE


def margin_bar(margin: float, higher_is_better: bool, decimals: int) -> str:
    """A claim's comparison in symbols, ``mean ≥ +0.150``: what every front end prints after "claim:"."""
    return f"mean {'≥' if higher_is_better else '≤'} {fmt(margin, decimals, sign=True)}"


@dataclass
class ClaimCheck:
    """One claim: the statement, the per-seed values of what it compares, the margin, and the verdict.

    - ``claim``: the paper's statement in words ("RPO ends with a higher gold reward than DPO").
    - ``quantity``: what each value measures ("gold(RPO η=1) − gold(DPO), final step").
    - ``values``: that quantity once per seed (or per independent problem).
    - ``margin``: fixed before the run; the claim is ``mean ≥ margin`` (``higher_is_better``) or ``≤``.
    - ``headline``: the paper's main claim (one per method, shown first); the others are supporting checks.
    - ``numbers``: further numbers for the reader, printed at ``decimals`` and never compared.
    - ``decimals``: the precision printed in checked notebook cells (from the measured cross-CPU spread).
    - ``margin_decimals``: the margin's own precision where it is finer than ``decimals`` (a margin of 0.15 with
      numbers at 1 decimal would print as +0.1); a constant, so it cannot move across CPUs.

    With one value there is no interval; the verdict then follows the point, and the text says "1 seed".
    """

    claim: str
    quantity: str
    values: Sequence[float]
    margin: float
    higher_is_better: bool = True
    headline: bool = False
    numbers: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    decimals: int = 3
    level: float = LEVEL
    tol: float = TOLERANCE
    margin_decimals: int | None = None

    def __post_init__(self):
        self.values = tuple(float(v) for v in self.values)
        if not self.values:
            raise ValueError(f"claim {self.claim!r} has no values")

    @classmethod
    def paired(
        cls,
        claim: str,
        quantity: str,
        method: Sequence[float],
        baseline: Sequence[float],
        *,
        labels: tuple[str, str],
        margin: float = 0.0,
        numbers: dict[str, float] | None = None,
        **kwargs,
    ) -> ClaimCheck:
        """The comparison most claims make: per seed, the method's value minus the baseline's on the same seed
        (``values = method − baseline``), against ``margin`` (0 = "better than"). ``numbers`` gets both means,
        under ``labels = (method label, baseline label)``, before any extra numbers given."""
        method, baseline = [float(v) for v in method], [float(v) for v in baseline]
        if len(method) != len(baseline):
            raise ValueError(f"claim {claim!r}: {len(method)} method values but {len(baseline)} baseline values")
        means = {labels[0]: statistics.fmean(method), labels[1]: statistics.fmean(baseline)}
        values = [m - b for m, b in zip(method, baseline)]
        return cls(claim, quantity, values, margin, numbers={**means, **(numbers or {})}, **kwargs)

    @property
    def interval(self) -> Interval:
        return Interval.of(self.values, self.level)

    @property
    def verdict(self) -> Verdict:
        iv = self.interval
        if not iv.has_spread:  # one seed: the point against the margin, said so in the text
            iv = Interval(iv.mean, iv.mean, iv.mean, 1, iv.level)
        return decide(iv, self.margin, self.higher_is_better, self.tol)

    @property
    def holds(self) -> bool:
        return self.verdict is Verdict.HOLDS

    @property
    def kind(self) -> str:
        return "headline" if self.headline else "supporting"

    def bar(self) -> str:
        """The comparison in symbols: ``mean ≥ 1.000``."""
        return margin_bar(
            self.margin, self.higher_is_better, self.decimals if self.margin_decimals is None else self.margin_decimals
        )

    def __str__(self) -> str:
        d = self.decimals
        lines = [
            f"[{self.verdict.label}] ({self.kind}) {self.claim}",
            f"    {self.quantity}: {self.interval.text(d)}; claim: {self.bar()}",
        ]
        if self.numbers:
            lines.append("    " + ", ".join(f"{k} = {fmt(v, d)}" for k, v in self.numbers.items()))
        if self.detail:
            lines.append(f"    {self.detail}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        iv = self.interval
        return {
            "claim": self.claim,
            "quantity": self.quantity,
            "values": list(self.values),
            "margin": self.margin,
            "higher_is_better": self.higher_is_better,
            "headline": self.headline,
            "verdict": self.verdict.value,
            "mean": iv.mean,
            "low": iv.low,
            "high": iv.high,
            "n": iv.n,
            "level": self.level,
            "numbers": {k: float(v) for k, v in self.numbers.items()},
            "detail": self.detail,
            "decimals": self.decimals,
            "margin_decimals": self.margin_decimals,
        }


def order_claims(claims: Sequence[ClaimCheck]) -> list[ClaimCheck]:
    """Headline first; refuse more than one headline (a method states one main claim)."""
    heads = [c for c in claims if c.headline]
    if len(heads) > 1:
        raise ValueError(f"{len(heads)} claims are marked headline; a method has one: {[c.claim for c in heads]}")
    return heads + [c for c in claims if not c.headline]


def describe_record(d: dict) -> tuple[str, str]:
    """``(verdict label, one line)`` for a claim as stored (:meth:`ClaimCheck.to_dict`), for the CLI, the report
    and the app. Records written before three-way verdicts (``passed``/``asserted``) are shown as such."""
    if "verdict" not in d:
        label = "HOLDS" if d.get("passed") else "DOES NOT HOLD"
        return label + " (old record, no interval)", d.get("claim", "")
    dec = int(d.get("decimals", 3))
    iv = Interval(d["mean"], d["low"], d["high"], int(d["n"]), d.get("level", LEVEL))
    bar = margin_bar(
        d["margin"],
        d.get("higher_is_better", True),
        dec if d.get("margin_decimals") is None else int(d["margin_decimals"]),
    )
    kind = "headline" if d.get("headline") else "supporting"
    return Verdict(d["verdict"]).label, f"({kind}) {d['claim']} — {d['quantity']}: {iv.text(dec)}; claim: {bar}"
