"""DAA overoptimization (14): the unified loss against hand values and the shared losses, the scaling-law fit on
synthetic points with known parameters, the toy data, batched training, the claim logic, one quick run."""

import math

import numpy as np
import pytest
import torch

from labkit.core import Result, Verdict, torch_threads
from labkit.data import preferences as prefs
from labkit.methods import daa_overoptimization as daa
from labkit.substrates.preference import dpo_loss, ipo_loss, slic_loss

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


# --- the unified loss g(β·h) --------------------------------------------------------------------------------


def test_g_by_hand():
    z = T([0.0, 1.0, 3.0, -1.0])
    assert daa.daa_g("dpo", z).tolist() == pytest.approx(
        [math.log(2), math.log1p(math.exp(-1)), math.log1p(math.exp(-3)), math.log1p(math.e)], abs=1e-6
    )
    assert daa.daa_g("ipo", z).tolist() == pytest.approx([1.0, 0.0, 4.0, 4.0])
    assert daa.daa_g("slic", z).tolist() == pytest.approx([1.0, 0.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="unknown"):
        daa.daa_g("kto", z)


def test_objective_matches_the_shared_losses_and_states_the_ipo_convention():
    pc, pr, rc, rr = T([-1.0, -4.0]), T([-3.0, -2.0]), T([-2.0, -3.0]), T([-2.0, -2.5])  # h = 2, −1.5
    for beta in (0.01, 0.1, 1.0):
        args = (pc, pr, rc, rr, beta)
        assert torch.allclose(daa.daa_objective("dpo", *args), dpo_loss(*args))
        assert torch.allclose(daa.daa_objective("slic", *args), slic_loss(*args))
        # the paper's (β h − 1)² = β²·(h − 1/β)² = β² × TRL-convention IPO at β/2 (target 1/(2·β/2) = 1/β)
        assert torch.allclose(daa.daa_objective("ipo", *args), beta**2 * ipo_loss(pc, pr, rc, rr, beta / 2))
    assert daa.daa_objective("ipo", *(pc, pr, rc, rr), beta=0.5).tolist() == pytest.approx([0.0, 3.0625])


def test_mixed_loss_gives_each_arm_its_own_g():
    z = T([[0.5, -2.0], [0.5, -2.0], [0.5, -2.0]])
    mask = T([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # arms: dpo, slic, ipo
    got = daa.mixed_daa_loss(mask, z)
    for arm, kind in enumerate(("dpo", "slic", "ipo")):
        assert torch.allclose(got[arm], daa.daa_g(kind, z[arm]))


# --- the scaling law ----------------------------------------------------------------------------------------


def test_scaling_law_by_hand():
    assert daa.scaling_law([1.0], 1.3, 0.7).tolist() == pytest.approx([1.3])  # log 1 = 0
    assert daa.scaling_law([math.e], 1.0, 0.5).tolist() == pytest.approx([0.5 * math.e])
    assert daa.scaling_law([0.0], 1.0, 0.5).tolist() == [0.0]


def test_fit_recovers_known_parameters_and_its_peak():
    d = np.linspace(0.1, 3.0, 30)
    fit = daa.fit_scaling_law(d, daa.scaling_law(d, 1.2, 0.5))
    assert (fit.alpha, fit.beta_s, fit.r2) == pytest.approx((1.2, 0.5, 1.0), abs=1e-9)
    assert fit.peak_d == pytest.approx(math.exp(1.2 / 0.5 - 1))  # dR/dd = α − β_s(log d + 1) = 0
    noisy = daa.scaling_law(d, 1.2, 0.5) + np.random.default_rng(0).normal(0, 0.05, d.size)
    fit = daa.fit_scaling_law(d, noisy)
    assert fit.alpha == pytest.approx(1.2, abs=0.1) and 0.9 < fit.r2 < 1.0


def test_fit_drops_points_near_zero_and_reports_a_bad_fit():
    d = np.r_[0.0, 0.01, np.linspace(0.2, 2.0, 10)]
    gain = daa.scaling_law(d, 1.0, 0.3)
    gain[:2] = 50.0  # would ruin the fit if kept
    fit = daa.fit_scaling_law(d, gain)
    assert fit.n_points == 10 and fit.r2 == pytest.approx(1.0)
    flat = daa.fit_scaling_law(d[2:], np.tile([1.0, -1.0], 5))  # a zigzag the law cannot follow
    assert flat.r2 < 0.3
    assert math.isnan(daa.fit_scaling_law([0.01], [1.0]).r2)


# --- the toy and the policy -------------------------------------------------------------------------------


def test_problem_draws_the_card_pairs_and_masks_the_surplus():
    cands, pairs = daa.make_problem(0, 32, 40, 4000, gold_peak=5.0)
    ref = prefs.make_length_candidates(32, 40, torch.Generator().manual_seed(0))
    assert torch.equal(cands.gold, ref.gold)  # gold_peak 5 = the substrate's 0.6ℓ − 0.06ℓ²
    direct = prefs.sample_bt_pairs(ref.gold, ref.ref_logp, 125, seeds=range(32))
    assert torch.equal(pairs.chosen.view(32, 125) % 40, direct.chosen)
    assert torch.equal(pairs.chosen.view(32, 125) // 40, torch.arange(32).view(-1, 1).expand(32, 125))
    assert 3200 < int(pairs.mask.sum()) < 3600  # ≈ 3,400 left after ties
    _, small = daa.make_problem(0, 32, 40, 100, gold_peak=5.0)  # 4 per prompt = 128 drawn, 28 masked
    assert int(small.mask.view(32, 4)[:28, -1].sum()) == 0 and int(small.mask.sum()) <= 100
    assert cands.ref_logp.exp().mul(cands.length).sum(-1).mean().item() == pytest.approx(2.4, abs=0.2)


def test_gold_peak_moves_the_peak():
    cands, _ = daa.make_problem(0, 2, 40, 10, gold_peak=8.0)
    gold_no_q = cands.gold - cands.quality
    assert (
        gold_no_q.argmax().item() == (cands.length == 8).flatten().nonzero()[0].item()
        or cands.length.flatten()[gold_no_q.flatten().argmax()].item() == 8.0
    )


@pytest.mark.parametrize("head", daa.HEADS)
def test_policy_starts_at_the_reference(head):
    cands, _ = daa.make_problem(0, 3, 5, 10, 5.0)
    x = daa.head_inputs(cands, head).unsqueeze(0)
    params = daa.init_head(head, 2, [0], x.shape[-1], 4)
    logp = daa.policy_logp(params, x, cands.ref_logp.unsqueeze(0))
    assert logp.shape == (2, 1, 3, 5) and torch.allclose(logp, cands.ref_logp.expand_as(logp), atol=1e-6)


def test_policy_metrics_by_hand():
    logp = torch.log(T([[0.75, 0.25]]))
    ref = torch.log(T([[0.5, 0.5]]))
    m = daa.policy_metrics(logp, T([[1.0, 3.0]]), ref, T([[2.0, 6.0]]))
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert m["gold_reward"].item() == pytest.approx(1.5) and m["mean_length"].item() == pytest.approx(3.0)
    assert m["kl"].item() == pytest.approx(kl) and m["sqrt_kl"].item() == pytest.approx(math.sqrt(kl))


def test_epoch_order_visits_every_kept_pair_once_and_schedule():
    masks = T([[True, False, True, True], [False, True, False, False]])
    order, valid = daa.epoch_order(masks, [torch.Generator().manual_seed(s) for s in (0, 1)])
    assert sorted(order[0][valid[0]].tolist()) == [0, 2, 3] and order[1][valid[1]].tolist() == [1]
    assert daa.steps_per_epoch(masks, 2) == 2
    assert daa.checkpoints(12, 5, 4) == [0, 4, 5, 8, 10, 12]


def test_parse_betas():
    assert daa.parse_betas(" 0.01, 0.1,1") == [0.01, 0.1, 1.0]
    for bad in ("", "a,b", "0,1", "0.1,0.1", "1000"):
        with pytest.raises(ValueError, match="betas"):
            daa.parse_betas(bad)


# --- training ---------------------------------------------------------------------------------------------


def _small(head="linear", seeds=(0, 1)):
    problems = [daa.make_problem(s, 4, 6, 80, 5.0) for s in seeds]
    return daa.stack_problems(problems, head, "cpu")


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_runs_trained_together_equal_runs_trained_alone(head):
    data, seeds = _small(head), [0, 1]
    gens = lambda: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    n_in = data["x"].shape[-1]
    opts = {"lr": 0.05, "epochs": 3, "batch_size": 16, "log_steps": [0, 5, 10]}
    both, _ = daa.train_daa(
        data, ["dpo", "slic"], [0.01, 1.0], daa.init_head(head, 2, seeds, n_in, 8), gens=gens(), **opts
    )
    alone, _ = daa.train_daa(data, ["slic"], [1.0], daa.init_head(head, 1, seeds, n_in, 8), gens=gens(), **opts)
    assert both["gold_reward"][:, 1] == pytest.approx(alone["gold_reward"][:, 0], abs=1e-5)
    assert both["kl"][0] == pytest.approx(np.zeros((2, 2)), abs=1e-6)  # π = π_ref at step 0
    assert both["kl"][-1, 0].min() > 1e-4  # and it moved


def test_hump_by_hand():
    h = daa.hump(np.array([1.0, 2.0, 1.5]), np.array([0.0, 1.0, 3.0]), epochs_at=[0.0, 0.5, 1.0])
    assert (h.peak_index, h.drop, h.kl_peak, h.kl_final, h.kl_growth, h.peak_epoch) == (1, 0.5, 1.0, 3.0, 2.0, 0.5)
    assert daa.hump(np.array([1.0, 2.0]), np.array([0.0, 1.0])).peak_epoch == 1.0  # default: checkpoint index


# --- claims: each holds, does not hold and is inconclusive on hand-made per-seed numbers ------------------


def test_overoptimization_claim_three_ways():
    holds = daa.overoptimization_claim({"DPO": [0.5, 0.6, 0.55], "IPO": [0.4, 0.45, 0.5]}, 0.01)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.values == (0.4, 0.45, 0.5)  # the worst objective
    assert holds.numbers["DPO drop"] == pytest.approx(0.55)
    fails = daa.overoptimization_claim({"DPO": [0.5, 0.6, 0.55], "SLiC": [0.1, 0.12, 0.08]}, 0.01)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    wide = daa.overoptimization_claim({"DPO": [0.1, 0.9, 0.3]}, 0.01)
    assert wide.verdict is Verdict.INCONCLUSIVE
    assert daa.overoptimization_claim({"DPO": [0.25]}, 0.01).verdict is Verdict.HOLDS  # 1 seed: the point, at the bar
    assert daa.overoptimization_claim({"DPO": [0.3, float("nan")]}, 0.01).verdict is Verdict.INCONCLUSIVE


def test_kl_growth_claim_three_ways():
    assert daa.kl_growth_claim({"DPO": [1.0, 1.2, 1.1], "IPO": [0.8, 1.0, 0.9]}, 0.01).verdict is Verdict.HOLDS
    fell = daa.kl_growth_claim({"DPO": [1.0, 1.2, 1.1], "IPO": [-0.1, -0.2, -0.15]}, 0.01)
    assert fell.verdict is Verdict.DOES_NOT_HOLD
    assert daa.kl_growth_claim({"DPO": [-0.5, 1.0, 0.2]}, 0.01).verdict is Verdict.INCONCLUSIVE


def test_scaling_law_and_hump_claims_three_ways():
    fits = [daa.LawFit(1.0, 0.4, 0.8, 10, math.exp(1.5)), daa.LawFit(1.2, 0.6, 0.85, 10, math.e)]
    c = daa.scaling_law_claim([0.8, 0.85, 0.82], fits=fits)
    assert c.verdict is Verdict.HOLDS and c.numbers["alpha"] == pytest.approx(1.1)
    assert daa.scaling_law_claim([0.3, 0.35, 0.4]).verdict is Verdict.DOES_NOT_HOLD
    assert daa.scaling_law_claim([0.3, 0.95, 0.6]).verdict is Verdict.INCONCLUSIVE
    assert daa.scaling_law_claim([0.8, float("nan")]).verdict is Verdict.INCONCLUSIVE  # a failed fit
    assert daa.hump_shape_claim([0.4, 0.5, 0.6]).verdict is Verdict.HOLDS
    assert daa.hump_shape_claim([-0.4, -0.5, -0.6]).verdict is Verdict.DOES_NOT_HOLD  # gold keeps rising
    assert daa.hump_shape_claim([-0.4, 0.5, 0.1]).verdict is Verdict.INCONCLUSIVE


def test_intra_epoch_claim_three_ways():
    c = daa.intra_epoch_claim({"DPO": [0.4, 0.5, 0.45], "IPO": [0.3, 0.5, 0.4]}, 0.01)
    assert c.verdict is Verdict.HOLDS and c.values == pytest.approx((0.35, 0.5, 0.425)) and not c.higher_is_better
    assert daa.intra_epoch_claim({"DPO": [1.3, 1.2, 1.25]}, 0.01).verdict is Verdict.DOES_NOT_HOLD
    assert daa.intra_epoch_claim({"DPO": [0.5, 1.5, 1.0]}, 0.01).verdict is Verdict.INCONCLUSIVE


def _hump(epoch, drop, kl_growth=1.0):
    return daa.Hump(0, 1.0 + drop, 1.0, 1.0, 1.0 + kl_growth, epoch)


def test_any_run_peaks_claim_names_its_carriers():
    humps = {
        "DPO β=0.01": [_hump(1.2, 0.5)] * 3,
        "IPO β=1": [_hump(0.3, 0.1, -0.05), _hump(0.4, 0.1, -0.05), _hump(0.35, 0.1, 0.02)],
    }
    c = daa.any_run_peaks_claim(humps, n_epochs=2)
    assert c.verdict is Verdict.HOLDS and c.values == (0.3, 0.4, 0.35)
    assert "IPO β=1 (3 of 3 seeds)" in c.detail and "KL fell after that peak in 2 of 3 seeds" in c.detail
    late = {"DPO β=0.01": [_hump(1.2, 0.5)] * 3, "flat": [_hump(0.5, 0.01)] * 3, "start": [_hump(0.0, 1.0)] * 3}
    c = daa.any_run_peaks_claim(late, n_epochs=2)
    assert c.verdict is Verdict.DOES_NOT_HOLD and "no run" in c.detail  # a plateau and a step-0 peak do not count
    mixed = {"a": [_hump(0.2, 0.3), _hump(1.5, 0.3), _hump(1.9, 0.3)]}
    assert daa.any_run_peaks_claim(mixed, n_epochs=2).verdict is Verdict.INCONCLUSIVE


# --- runs -------------------------------------------------------------------------------------------------


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="preset"):
        daa.run(preset="huge")
    with pytest.raises(ValueError, match="objective"):
        daa.run(objective="kto")
    with pytest.raises(ValueError, match="betas"):
        daa.run(betas="0.1,abc", progress=False)
    with pytest.raises(ValueError, match="unknown parameter"):
        daa.run(betaa=1.0)


def test_knobs_keep_the_presets():
    assert daa.Knobs().betas == "0.01,0.1,1" and daa.Knobs().n_seeds >= 3
    assert [p.name for p in daa.PARAMS][:5] == ["objective", "betas", "lr", "n_pairs", "gold_peak"]


def test_one_objective_small_run():
    result = daa.run(objective="ipo", betas="0.1", n_pairs=200, epochs=1, n_seeds=2, progress=False)
    assert set(result.history["series"]) == {"IPO β=0.1"}
    assert "IPO" in result.claims[2].claim and "scaling law" in result.claims[2].claim


def test_small_run_contract():
    r = daa.run(n_pairs=300, epochs=2, n_seeds=3, n_prompts=8, progress=False)
    hist, m, x = r.history, r.metrics, r.extras
    assert isinstance(r, Result) and r.headline is not None and r.claims[0].headline
    assert sum(c.headline for c in r.claims) == 1 and len(r.claims[0].values) == 3
    assert all(math.isfinite(v) for v in m.values())
    assert len(x["runs"]) == 9 and set(hist["seed"]) == {0, 1, 2}
    assert hist[(hist["step"] == 0) & (hist["metric"] == "kl")]["value"].abs().max() < 1e-6
    low = [o for o in x["runs"] if o.spec.beta == 0.01]
    drops = np.min([[h.drop for h in o.humps] for o in low], axis=0)
    assert r.claims[0].values == pytest.approx(tuple(drops))
    for o in low:  # the metrics are the runs' means over seeds
        assert m[f"peak_gold_{o.spec.arm.key}"] == pytest.approx(np.mean([h.peak_gold for h in o.humps]))
    assert m["fit_dpo_r2"] == pytest.approx(x["fits"]["DPO"].r2)
    assert r.claims[2].values == pytest.approx(tuple(f.r2 for f in x["seed_fits"]["DPO"]))
    assert {"law", "gold_progress", "kl_progress", "gold_per_beta", "kl_per_beta", "length", "prompt"} <= set(r.figures)
