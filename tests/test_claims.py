"""Claims: the interval, the three-way verdict, the margin tolerance, headline order, the fixed-decimal formatter."""

import math

import pytest

from labkit.core import ClaimCheck, Interval, Verdict, decide, fmt
from labkit.core.claims import order_claims


def test_t_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, n 3, t_{0.975, 2} = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138
    iv = Interval.of([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.high - iv.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert iv.mean - iv.low == pytest.approx(iv.high - iv.mean)
    assert iv.n == 3 and iv.has_spread


def test_one_seed_is_a_point_and_said_so():
    iv = Interval.of([0.5])
    assert (iv.low, iv.mean, iv.high, iv.has_spread) == (0.5, 0.5, 0.5, False)
    c = ClaimCheck("x beats y", "x - y", [0.5], margin=0.0)
    assert c.verdict is Verdict.HOLDS and "1 seed, no interval" in str(c)


@pytest.mark.parametrize(
    "values, margin, higher, expected",
    [
        ([1.0, 1.1, 0.9], 0.0, True, Verdict.HOLDS),  # interval well above 0
        ([-1.0, -1.1, -0.9], 0.0, True, Verdict.DOES_NOT_HOLD),  # well below
        ([1.0, -1.0, 0.5], 0.0, True, Verdict.INCONCLUSIVE),  # straddles
        ([0.2, 0.25, 0.3], 0.5, False, Verdict.HOLDS),  # a ratio claimed <= 0.5
        ([0.8, 0.85, 0.9], 0.5, False, Verdict.DOES_NOT_HOLD),
    ],
)
def test_three_way_verdict(values, margin, higher, expected):
    assert ClaimCheck("c", "q", values, margin, higher_is_better=higher).verdict is expected


def test_margin_comparison_has_a_tolerance():
    # 0.7 - 0.3 = 0.39999999999999997 < 0.4 in floating point; the stated tolerance lets it hold
    assert 0.7 - 0.3 < 0.4
    assert ClaimCheck("c", "q", [0.7 - 0.3], margin=0.4).verdict is Verdict.HOLDS
    assert ClaimCheck("c", "q", [0.4 - 1e-6], margin=0.4).verdict is Verdict.DOES_NOT_HOLD


def test_non_finite_values_are_inconclusive():
    assert decide(Interval.of([1.0, float("nan")]), 0.0) is Verdict.INCONCLUSIVE
    assert ClaimCheck("c", "q", [1.0, math.inf, 2.0], 0.0).verdict is Verdict.INCONCLUSIVE


def test_headline_goes_first_and_only_one():
    a, b = ClaimCheck("a", "q", [1.0], 0.0), ClaimCheck("b", "q", [1.0], 0.0, headline=True)
    assert order_claims([a, b]) == [b, a]
    with pytest.raises(ValueError, match="headline"):
        order_claims([b, ClaimCheck("c", "q", [1.0], 0.0, headline=True)])


def test_text_and_dict():
    c = ClaimCheck("x beats y", "x - y", [1.9, 2.0, 2.1], margin=0.5, headline=True, numbers={"x": 1.23456})
    text = str(c)
    assert text.startswith("[HOLDS] (headline) x beats y")
    assert "+2.000, 95% CI [" in text and "over 3 seeds" in text and "mean ≥ +0.500" in text and "x = 1.235" in text
    d = c.to_dict()
    assert d["verdict"] == "holds" and d["n"] == 3 and d["headline"] is True
    with pytest.raises(ValueError):
        ClaimCheck("empty", "q", [], 0.0)


def test_fmt_fixed_decimals():
    assert fmt(0.12345, 2) == "0.12"
    assert fmt(-0.0001, 3) == "0.000"  # never "-0.000"
    assert fmt(0.5, 1, sign=True) == "+0.5"
    assert fmt(3, 2) == "3" and fmt(float("nan")) == "nan"


def test_paired_claim_is_method_minus_baseline_per_seed():
    c = ClaimCheck.paired("a beats b", "a − b", [0.9, 0.8, 0.7], [0.5, 0.6, 0.4], labels=("a", "b"), headline=True)
    assert c.values == pytest.approx((0.4, 0.2, 0.3)) and c.margin == 0.0 and c.headline
    assert c.numbers == pytest.approx({"a": 0.8, "b": 0.5})
    assert c.verdict is Verdict.HOLDS
    assert ClaimCheck.paired("b beats a", "b − a", [0.5, 0.6, 0.4], [0.9, 0.8, 0.7], labels=("b", "a")).verdict is (
        Verdict.DOES_NOT_HOLD
    )
    with pytest.raises(ValueError, match="2 method values but 3"):
        ClaimCheck.paired("x", "q", [1, 2], [1, 2, 3], labels=("m", "b"))


def test_nonfinite_note_names_a_diverged_value_in_any_of_the_arrays():
    import numpy as np

    from labkit.core import nonfinite_note

    assert nonfinite_note([0.1, 0.2], np.array([[1.0, 2.0]])) == ""
    assert "not finite" in nonfinite_note([0.1, 0.2], np.array([[1.0, float("nan")]]))
    assert "not finite" in nonfinite_note(float("inf"))


def test_a_margin_finer_than_the_numbers_prints_at_its_own_precision():
    from labkit.core.claims import describe_record

    coarse = ClaimCheck("c", "q", [0.5, 0.5, 0.5], margin=0.15, decimals=1)
    assert "claim: mean ≥ +0.1" in str(coarse)  # what it printed before: the margin rounded away
    exact = ClaimCheck("c", "q", [0.5, 0.5, 0.5], margin=0.15, decimals=1, margin_decimals=2)
    assert "+0.5, 95% CI [+0.5, +0.5]" in str(exact) and "claim: mean ≥ +0.15" in str(exact)
    record = exact.to_dict()
    assert record["margin_decimals"] == 2 and describe_record(record)[1].endswith("claim: mean ≥ +0.15")
    record.pop("margin_decimals")  # a record stored before the field existed
    assert describe_record(record)[1].endswith("claim: mean ≥ +0.1")
