"""Ad survival (06): the hazard loss and its binning against hand computations, Harrell's c-index against
lifelines, the Cox and Kaplan–Meier helpers, the synthetic creatives, the claims, divergence and a small run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.core import DivergenceError, History, Result, RunContext, Verdict, torch_threads
from labkit.data import ads as ads_data
from labkit.methods import ad_survival as ad
from labkit.methods.ad_survival import experiment as ex

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def logit(p):
    return math.log(p / (1 - p))


# --- binning and the loss ---------------------------------------------------------------------------------------


def test_discretize_by_hand():
    time = T([1, 7, 8, 13, 20, 3, 15, 30])
    event = T([True, True, True, False, False, False, True, True])
    # weekly bins, 3 of them (horizon 21 days): events in bin ⌈T/7⌉, censored after ⌊T/7⌋ whole bins, beyond → censored
    index, ev = ad.discretize(time, event, 7, 3)
    assert index.tolist() == [0, 0, 1, 0, 1, -1, 2, 2]
    assert ev.tolist() == [True, True, True, False, False, False, True, False]
    # daily bins, horizon 14: index T − 1 for both; day 15 and 30 are beyond → censored at the last bin
    index, ev = ad.discretize(time, event, 1, 14)
    assert index.tolist() == [0, 6, 7, 12, 13, 2, 13, 13]
    assert ev.tolist() == [True, True, True, False, False, False, False, False]


def test_short_head_censors_creatives_that_stop_after_the_horizon():
    """The card's pitfall: a creative stopping after L_s is censored at L_s for the short head; one censored
    before L_s is censored for both heads."""
    index, ev = ad.discretize(T([20, 5]), T([True, False]), 1, 14)
    assert index.tolist() == [13, 4] and ev.tolist() == [False, False]
    index, ev = ad.discretize(T([20, 5]), T([True, False]), 7, 12)
    assert index.tolist() == [2, -1] and ev.tolist() == [True, False]


def test_hazard_nll_by_hand():
    h = [0.2, 0.5, 0.1]
    logits = T([[logit(v) for v in h]] * 4)
    loss = ad.hazard_nll(logits, T([1, 2, 1, -1]), T([True, False, False, False]))
    expected = [
        -(math.log(0.8) + math.log(0.5)),  # stopped in bin 2: (1 − h1)·h2
        -(math.log(0.8) + math.log(0.5) + math.log(0.9)),  # censored after 3 bins: S(3)
        -(math.log(0.8) + math.log(0.5)),  # censored after 2 bins: S(2)
        0.0,  # seen for less than one bin: no information
    ]
    assert loss.tolist() == pytest.approx(expected, abs=1e-5)


def test_hazard_nll_is_the_likelihood_of_the_discrete_distribution():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=gen)
    h = torch.sigmoid(logits).double()
    p = h * torch.cat([torch.ones(6, 1, dtype=h.dtype), (1 - h).cumprod(1)[:, :-1]], 1)  # p(l) = h_l Π_{j<l}(1−h_j)
    s = (1 - h).cumprod(1)
    idx = T([0, 4, 2, 3, 1, 0])
    ev = T([True, True, False, True, False, False])
    want = torch.where(ev, -p[range(6), idx].log(), -s[range(6), idx].log())
    assert ad.hazard_nll(logits, idx, ev).double() == pytest.approx(want.tolist(), abs=1e-5)
    assert float(p.sum(1).max()) <= 1.0 + 1e-9 and torch.allclose(p.sum(1) + s[:, -1], torch.ones(6, dtype=h.dtype))


def test_hazard_nll_is_clamped_in_log_space():
    logits = T([[200.0, -200.0], [-200.0, 200.0]], dtype=torch.float64)
    assert torch.isfinite(ad.hazard_nll(logits.float(), T([1, 1]), T([True, False]))).all()
    loss = ad.hazard_nll(logits, T([1, 1]), T([True, False]))
    assert loss.tolist() == pytest.approx([-2 * math.log(1e-6), -math.log(1 - 1e-6) - math.log(1e-6)], rel=1e-4)


def test_event_rank_term_by_hand():
    logits = T([[logit(0.2), logit(0.5)]] * 2)
    term = ad.event_rank_term(logits, T([1, 1]), T([True, False]))
    assert term.tolist() == pytest.approx([-math.log(1 - 0.8 * 0.5), 0.0], abs=1e-5)
    both = ad.survival_loss(logits, T([1, 1]), T([True, False]), rank_weight=0.5)
    assert both.tolist() == pytest.approx((ad.hazard_nll(logits, T([1, 1]), T([True, False])) + 0.5 * term).tolist())


def test_two_term_loss_and_ctr_weights_by_hand():
    short = T([[logit(0.5), logit(0.5)], [logit(0.1), logit(0.1)]])
    long = T([[logit(0.25)], [logit(0.25)]])
    st = (T([0, 1]), T([True, False]))
    lt = (T([0, 0]), T([True, False]))
    w = ad.ctr_weights(T([0.02, 0.01]), 1.0, 0.015)
    assert w.tolist() == pytest.approx([4 / 3, 2 / 3])
    assert ad.ctr_weights(T([0.02, 0.01]), 0.0, 0.015).tolist() == [1.0, 1.0]
    ad0 = -math.log(0.5) - math.log(0.25)  # stopped on day 1; stopped in week 1
    ad1 = -2 * math.log(0.9) - math.log(0.75)  # ran 2 days; survived week 1
    loss = ad.two_term_loss(short, long, st, lt, w)
    assert loss.item() == pytest.approx((4 / 3 * ad0 + 2 / 3 * ad1) / 2, abs=1e-5)


def test_survival_curves_and_the_stitch_by_hand():
    s = ad.survival_curve(T([[logit(0.5), logit(0.5), logit(0.2)]]))
    assert s.tolist()[0] == pytest.approx([0.5, 0.25, 0.2])
    assert ad.restricted_mean(s).item() == pytest.approx(0.95) and ad.restricted_mean(s, 7).item() == pytest.approx(
        6.65
    )
    short = T([[logit(0.5), logit(0.5)]])  # L_s = 2 days
    long = T([[logit(0.4), logit(0.5), logit(0.5)]])  # bins of 2 days
    daily = ad.stitched_daily_survival(short, long, 2)
    # days 1–2 from the short head; then S_s(2)·S_l(d)/S_l(2), S_l = 0.6 (days 1–2), 0.3 (3–4), 0.15 (5–6)
    assert daily.tolist()[0] == pytest.approx([0.5, 0.25, 0.125, 0.125, 0.0625, 0.0625], abs=1e-6)
    with pytest.raises(ValueError, match="whole number"):
        ad.stitched_daily_survival(T([[0.0, 0.0, 0.0]]), long, 2)


# --- the concordance index -------------------------------------------------------------------------------------


def test_concordance_index_by_hand():
    time = T([1.0, 2.0, 2.0, 3.0])
    event = T([True, True, False, False])
    # comparable: (0,1), (0,2), (0,3), (1,2) [tie, 2 censored], (1,3) → 5 pairs
    risk = T([4.0, 3.0, 3.0, 1.0])  # all concordant except (1,2), a tie in risk: ½
    assert ad.concordance_index(time, risk, event) == pytest.approx(4.5 / 5)
    assert ad.concordance_index(time, -risk, event) == pytest.approx(0.5 / 5)
    assert math.isnan(ad.concordance_index(time, risk, T([False] * 4)))


@pytest.mark.parametrize("seed", range(5))
def test_concordance_index_matches_lifelines_with_ties_and_censoring(seed):
    lifelines = pytest.importorskip("lifelines.utils")
    rng = np.random.default_rng(seed)
    n = 300
    time = rng.integers(1, 15, n)  # many tied times
    event = rng.random(n) < 0.6
    risk = np.round(rng.normal(size=n) - 0.1 * time, 1)  # tied risks too
    ours = ad.concordance_index(T(time), T(risk), T(event), chunk=37)
    # lifelines wants scores that are higher for LONGER survival: pass −risk
    assert ours == pytest.approx(lifelines.concordance_index(time, -risk, event), abs=1e-12)


def test_kaplan_meier_matches_lifelines():
    lifelines = pytest.importorskip("lifelines")
    rng = np.random.default_rng(1)
    time, event = rng.integers(1, 20, 200), rng.random(200) < 0.7
    km = lifelines.KaplanMeierFitter().fit(time, event)
    want = km.survival_function_at_times(np.arange(1, 26)).to_numpy()
    assert ad.kaplan_meier(time, event, 25) == pytest.approx(want, abs=1e-12)


def test_cox_partial_nll_by_hand_with_a_tie():
    eta = T([0.5, -0.2, 0.1, 0.0], dtype=torch.float64)
    time = T([2.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    event = T([True, True, True, False])
    e = [math.exp(v) for v in eta.tolist()]
    # Breslow: risk set of T=1 is everyone; of T=2 (twice) is {0, 2, 3}
    want = -((-0.2 - math.log(sum(e))) + (0.5 - math.log(e[0] + e[2] + e[3])) + (0.1 - math.log(e[0] + e[2] + e[3])))
    assert ex.cox_partial_nll(eta, time, event).item() == pytest.approx(want / 3, abs=1e-12)


def test_comparable_pairs_count_what_the_c_index_counts():
    rng = np.random.default_rng(0)
    time, event = T(rng.integers(1, 10, 200)), T(rng.random(200) < 0.6)
    n = ex.comparable_pairs(time, event)
    ti, tj = time[:, None], time[None, :]
    brute = (event[:, None] & ((ti < tj) | ((ti == tj) & ~event[None, :]))).sum(1)
    assert torch.equal(n, brute)
    share = ex.short_pair_share(time, event, 4)
    assert share == pytest.approx(float(brute[time <= 4].sum() / brute.sum()))


def test_evaluate_clips_the_short_term_and_keeps_late_creatives_for_the_long_term():
    time = T([1, 3, 10, 20, 30, 40, 50, 60])
    event = T([True, True, True, True, True, False, True, False])
    risk = -time.double()
    r = ex.Risks(short=risk, long=risk, overall=risk)
    c = ex.evaluate(r, time, event, torch.linspace(0.01, 0.03, 8), short_days=14)
    assert c["short"] == pytest.approx(1.0) and c["long"] == pytest.approx(1.0) and c["overall"] == pytest.approx(1.0)
    bad = ex.Risks(short=risk, long=-risk, overall=risk)
    assert ex.evaluate(bad, time, event, torch.linspace(0.01, 0.03, 8), short_days=14)["long"] == pytest.approx(0.0)


# --- the data ------------------------------------------------------------------------------------------------------


def test_creatives_follow_the_card():
    a = ads_data.make_ads(4000, seed=3)
    assert a.tokens.shape == (4000, 12) and a.image.shape == (4000, 64) and a.numeric.shape == (4000, 2)
    assert 0.25 < a.censored_share < 0.45  # administrative censoring ≈ 30–40 %
    assert 0.01 < float(a.ctr.median()) < 0.03
    assert bool((a.time >= 1).all()) and bool((a.time <= 90).all())
    assert torch.equal(a.time[a.event], a.true_time[a.event])  # an observed stop is the true stop
    assert bool((a.true_time[~a.event] > a.time[~a.event]).all())  # a censored creative ran past its last day seen
    assert bool((a.time[~a.event] == 90 - a.launch[~a.event]).all())  # censored at the end of the window
    cut = a.mechanism == 0
    assert 0.25 < float(cut.float().mean()) < 0.35 and float(a.true_time[cut].float().median()) <= 7
    assert float(a.true_time[~cut].float().median()) > 14
    # the image's brightness and the bid reveal quality; the launch day is not a feature
    assert np.corrcoef(a.image.mean(1), a.quality)[0, 1] > 0.7
    assert torch.equal(ads_data.make_ads(4000, seed=3).time, a.time)


def test_true_survival_matches_the_simulated_stops():
    a = ads_data.make_ads(20_000, seed=0)
    s = ads_data.true_survival(a, 30)
    for d in (3, 10, 30):
        assert float((a.true_time > d).float().mean()) == pytest.approx(float(s[:, d - 1].mean()), abs=0.015)


def test_launch_shift_makes_censoring_depend_on_the_advertiser():
    plain, shifted = ads_data.make_ads(6000, seed=1), ads_data.make_ads(6000, seed=1, launch_shift=1.0)
    assert shifted.censored_share > plain.censored_share + 0.1

    def spread(a):
        per_adv = torch.zeros(50).index_add_(0, a.advertiser, a.launch.float()) / torch.bincount(a.advertiser, None, 50)
        return float(per_adv.std())

    assert spread(shifted) > 3 * spread(plain)


def test_split_is_a_partition():
    a = ads_data.make_ads(1000, seed=0)
    tr, va, te = ads_data.split(a, (0.2, 0.2), seed=0)
    assert (len(tr), len(va), len(te)) == (600, 200, 200)
    ids = torch.cat([tr.quality, va.quality, te.quality])
    assert len(torch.unique(ids)) == 1000


# --- claims, knobs, divergence, the run --------------------------------------------------------------------------


def test_headline_claim_three_ways():
    base = np.array([0.70, 0.71, 0.69])
    holds = ad.headline_claim(base + 0.1 + np.array([0.0, 0.005, -0.005]), base)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.05
    fails = ad.headline_claim(base + np.array([0.0, 0.005, -0.005]), base)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    wide = ad.headline_claim(base + np.array([0.3, -0.2, 0.05]), base)
    assert wide.verdict is Verdict.INCONCLUSIVE
    nan = ad.headline_claim(np.array([0.8, float("nan"), 0.8]), base)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_supporting_claims():
    assert ad.absolute_claim([0.75, 0.76, 0.74]).verdict is Verdict.HOLDS
    assert ad.absolute_claim([0.65, 0.66, 0.64]).verdict is Verdict.DOES_NOT_HOLD
    assert ad.two_term_claim([0.8, 0.81, 0.8], [0.7, 0.7, 0.71]).verdict is Verdict.HOLDS
    assert ad.ctr_claim([0.7, 0.7, 0.71], [0.8, 0.81, 0.8]).verdict is Verdict.DOES_NOT_HOLD
    assert ad.ctr_claim([0.7, float("nan"), 0.71], [0.8, 0.81, 0.8]).verdict is Verdict.INCONCLUSIVE


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="whole number of long bins"):
        ad.run(short_days=10)
    with pytest.raises(ValueError, match="shorter than the long horizon"):
        ad.run(short_days=28, long_bins=4)
    with pytest.raises(ValueError, match="ctr_power"):
        ad.run(ctr_power=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        ad.run(n_ads=200, batch_size=256)


def tiny_ctx(**overrides):
    return RunContext(ad.Knobs(**overrides), "quick", 0, torch.device("cpu"), History(), False)


def small_splits(n=400):
    return ads_data.split(ads_data.make_ads(n, seed=0), (0.2, 0.2), seed=0)


def test_a_huge_learning_rate_diverges_naming_the_series():
    ctx = tiny_ctx(n_ads=400, epochs=3, batch_size=64, lr=1e12)  # the knob's range refuses it at the front end
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'two-term \+ CTR seed 0'"):
        ex.fit_arm(ctx, "two_term", "two-term + CTR", 0, small_splits(), 200, 50)


def test_fit_arm_keeps_the_best_validation_epoch():
    ctx = tiny_ctx(n_ads=400, epochs=3, batch_size=64)
    net, epoch = ex.fit_arm(ctx, "two_term", "two-term + CTR", 0, small_splits(), 200, 50)
    val = ctx.history.frame()
    assert list(val["step"]) == [1, 2, 3] and epoch == int(val.loc[val["value"].idxmax(), "step"])
    _, va, _ = small_splits()
    r = ex.network_risks(net, "two_term", ex.features(va), ctx.p)
    assert ad.concordance_index(va.time, r.overall, va.event) == pytest.approx(val["value"].max(), abs=1e-12)


def test_small_run_has_a_headline_and_finite_metrics():
    r = ad.run(n_ads=600, epochs=2, batch_size=64, cox_steps=20, progress=False)
    assert isinstance(r, Result) and r.claims[0].headline and len(r.claims) == 4
    assert all(math.isfinite(v) for v in r.metrics.values())
    by = {o.arm.key: o for o in r.extras["arms"]}
    assert set(by) == {"two_term", "two_term_plain", "single", "mse", "cox", "oracle"}
    gap = np.array(by["two_term"].c_overall) - np.array(by["mse"].c_overall)
    assert r.claims[0].values == pytest.approx(tuple(gap), abs=1e-12)
    assert r.metrics["c_overall_oracle"] > 0.8  # the true hazards rank well: the data carry the signal
    assert {"survival", "hazards", "c_overall", "c_by_term", "c_by_ctr", "val_c"} <= set(r.figures)
    assert set(r.history["seed"]) == {0, 1, 2}
    few = ad.run(n_ads=600, epochs=1, batch_size=64, ablations=False, n_seeds=3, progress=False)
    assert len(few.claims) == 2 and {o.arm.key for o in few.extras["arms"]} == {"two_term", "mse", "oracle"}


def test_encoder_with_a_gru_and_the_heads_shapes():
    torch.manual_seed(0)
    a = ads_data.make_ads(50, seed=0)
    x = ad.Batch(a.tokens, a.advertiser, a.image, a.numeric)
    for text in ("bag", "gru"):
        net = ad.SurvivalNet(
            ad.MultiModalEncoder(200, 50, 64, 2, dim=8, hidden=16, text=text), 16, {"short": 14, "long": 12}
        )
        out = net(x)
        assert out["short"].shape == (50, 14) and out["long"].shape == (50, 12)
    assert ad.Knobs().text_encoder == "bag"
    assert ad.PARAMS[[q.name for q in ad.PARAMS].index("text_encoder")].value_for("standard") == "gru"


def test_method_file_is_the_paper_only():
    source = (Path(ad.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2204.11588" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment", "figures"):
        assert banned not in source
