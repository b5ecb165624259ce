"""A-LoL (02): every loss against a hand computation, the advantage filter, the stacked models, the claim logic,
a tiny seeded run and the quick run."""

import math
from types import SimpleNamespace

import pytest
import torch

from labkit.core import DivergenceError, check_finite, torch_threads
from labkit.data import language as lang
from labkit.methods import a_lol
from labkit.models import tiny_lm

T = torch.tensor
LN2 = math.log(2.0)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


# --- the advantage filter and the losses ---------------------------------------------------------------------


def test_positive_advantage_filters_negative_rows():
    # A = R − V = [0.3, −0.1, −0.5] → A⁺ = [0.3, 0, 0]
    a = a_lol.positive_advantage(T([0.9, 0.5, 0.1]), T([0.6, 0.6, 0.6]))
    assert a.tolist() == pytest.approx([0.3, 0.0, 0.0], abs=1e-6)
    assert a_lol.positive_fraction(T([0.3, -0.1, 0.0, 0.2])) == pytest.approx(0.5)


def test_a_lol_loss_clips_the_ratio_and_only_nll_carries_the_gradient():
    # row 1: r = π/π_ref = 2 → clipped to 1 + 0.9 = 1.9; loss 0.5·1.9·2 = 1.9
    # row 2: r = 1/4 inside [0.1, 1.9]; loss 0.2·0.25·1 = 0.05
    logp = T([-2.0, -1.0], requires_grad=True)
    ref = T([-2.0 - LN2, -1.0 + math.log(4.0)])
    loss = a_lol.a_lol_loss(logp, ref, T([0.5, 0.2]), eps=0.9)
    assert loss.tolist() == pytest.approx([1.9, 0.05], abs=1e-5)
    loss.sum().backward()
    assert logp.grad.tolist() == pytest.approx([-0.95, -0.05], abs=1e-5)  # −A⁺·clip(r): the ratio is detached
    # ε = 0 pins the weight to 1 (A-LoL ref-free); a zero advantage gives zero loss and zero gradient
    assert a_lol.a_lol_loss(T([-2.0]), T([-5.0]), T([0.5]), eps=0.0).item() == pytest.approx(1.0)
    logp = T([-3.0], requires_grad=True)
    a_lol.a_lol_loss(logp, T([-1.0]), T([0.0]), eps=0.9).sum().backward()
    assert logp.grad.item() == 0.0


def test_ref_free_wbc_nll_and_r_lol():
    logp, ref = T([-2.0, -4.0]), T([-2.0 - LN2, -4.0])
    assert a_lol.nll_loss(logp).tolist() == [2.0, 4.0]
    assert a_lol.wbc_loss(logp, T([0.5, 0.1])).tolist() == pytest.approx([1.0, 0.4])
    assert a_lol.a_lol_ref_free_loss(logp, T([0.25, 0.0])).tolist() == pytest.approx([0.5, 0.0])
    # R-LoL: R · clip(r) · NLL with r = [2, 1], ε = 0.5 → [1.5, 1]
    assert a_lol.r_lol_loss(logp, ref, T([0.5, 0.1]), eps=0.5).tolist() == pytest.approx([1.5, 0.4], abs=1e-5)


def test_a_lol_seq_clips_each_token():
    # r_t = [2, 0.5], ε = 0.2 → [1.2, 0.8]; loss = 0.5·(1.2·1 + 0.8·2) = 1.4
    tok = T([[-1.0, -2.0]], requires_grad=True)
    ref = T([[-1.0 - LN2, -2.0 + LN2]])
    loss = a_lol.a_lol_seq_loss(tok, ref, T([0.5]), eps=0.2)
    assert loss.item() == pytest.approx(1.4, abs=1e-5)
    loss.backward()
    assert tok.grad[0].tolist() == pytest.approx([-0.6, -0.4], abs=1e-5)


def test_a_lol_kl_adds_beta_log_ratio_without_clip():
    # 0.5·3 + 0.1·(−3 − (−5)) = 1.5 + 0.2; d/dlogp = −0.5 + 0.1
    logp = T([-3.0], requires_grad=True)
    loss = a_lol.a_lol_kl_loss(logp, T([-5.0]), T([0.5]), beta=0.1)
    assert loss.item() == pytest.approx(1.7, abs=1e-6)
    loss.backward()
    assert logp.grad.item() == pytest.approx(-0.4, abs=1e-6)


def test_r_gold_floors_token_probabilities_at_0_1():
    # π_t = [0.5, 0.05] → weights [0.5, 0.1]; loss = 0.8·(0.5·ln 2 + 0.1·ln 20)
    tok = T([[math.log(0.5), math.log(0.05)]])
    want = 0.8 * (0.5 * LN2 + 0.1 * math.log(20.0))
    assert a_lol.r_gold_loss(tok, T([0.8])).item() == pytest.approx(want, abs=1e-5)


def test_arm_loss_dispatch_matches_the_functions():
    p = SimpleNamespace(eps=0.9, kl_beta=0.1, dpo_beta=0.1)
    tok, ref = T([[-1.0, -1.0], [-0.5, -0.5]]), T([[-1.2, -1.0], [-0.5, -0.6]])
    batch = {"reward": T([0.9, 0.5]), "adv": T([0.3, 0.0])}
    got = a_lol.arm_loss("A-LoL", tok, ref, batch, p)
    assert torch.allclose(got, a_lol.a_lol_loss(tok.sum(-1), ref.sum(-1), batch["adv"], 0.9))
    assert torch.allclose(a_lol.arm_loss("A-LoL priority", tok, ref, batch, p), got)
    assert torch.allclose(a_lol.arm_loss("wBC", tok, ref, batch, p), T([1.8, 0.5]))
    dpo = a_lol.arm_loss("DPO", tok, ref, batch, p)  # pair: chosen row 0, rejected row 1
    assert dpo.shape == (1,) and dpo.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1 * (0.2 - 0.1)))))
    with pytest.raises(ValueError, match="unknown arm"):
        a_lol.arm_loss("PPO", tok, ref, batch, p)


# --- helpers ------------------------------------------------------------------------------------------------


def test_response_style_names_the_imitated_source():
    x = T([[0, 5, 11, 2]] * 3)
    rule = lang.rule_targets(x, 6, 12)  # [1, 7, 2, 6, 5, 11]
    mediocre = lang.mediocre_responses(x, 6, 12)  # [1, 7, 2, 2, 0, 5]
    other = T([[1, 7, 2, 9, 9, 9]])
    assert a_lol.response_style(x, torch.cat([rule[:1], mediocre[:1], other])).tolist() == [0, 1, 2]


def test_data_mix_refuses_more_than_everything():
    assert a_lol.data_mix(0.2, 0.2) == pytest.approx((0.2, 0.6, 0.2))
    with pytest.raises(ValueError, match="no room"):
        a_lol.data_mix(0.7, 0.4)


def test_stack_matches_plain_tiny_lm_and_clips_per_model():
    st = a_lol.Stack.fresh(2, 16, 3)
    x, y = torch.randint(12, (2, 5, 4)), torch.randint(12, (2, 5, 6))
    got = st.token_logprobs(x, y)
    for m in range(2):
        want = tiny_lm.token_logprobs(st.model(m), x[m], y[m])
        assert torch.allclose(got[m], want, atol=1e-5)
        assert torch.equal(st.greedy(x, 6)[m], tiny_lm.greedy(st.model(m), x[m], 6))
    params = {"a": torch.zeros(2, 2, requires_grad=True), "b": torch.zeros(2, 1, requires_grad=True)}
    params["a"].grad = T([[3.0, 0.0], [0.3, 0.0]])
    params["b"].grad = T([[4.0], [0.4]])  # norms 5 and 0.5
    a_lol.clip_per_model(params, 1.0)
    assert params["a"].grad.flatten().tolist() == pytest.approx([0.6, 0.0, 0.3, 0.0], abs=1e-5)
    assert params["b"].grad.flatten().tolist() == pytest.approx([0.8, 0.4], abs=1e-5)


def test_value_head_learns_a_feature_dependent_value():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(200, 4, generator=gen)
    target = torch.where(f[:, 0] > 0, 0.8, 0.2)
    value, mse = a_lol.fit_value_head(f, target, 300, gen, lr=1e-2)
    v = value(f)
    assert mse < 0.05 and float(v.max()) <= 1.0  # a constant would give 0.09
    assert float(v[f[:, 0] > 0].mean()) > 0.7 and float(v[f[:, 0] <= 0].mean()) < 0.3


# --- claim and failure ------------------------------------------------------------------------------------


def test_reward_claim_both_ways():
    good = a_lol.reward_claim([0.95, 0.9], [0.6, 0.7], [0.5, 0.55], [0.4, 0.3])
    assert good.passed and good.numbers["positive_adv_frac"] == pytest.approx(0.35)
    assert not a_lol.reward_claim([0.8, 0.8], [0.7, 0.7], [0.5, 0.5], [0.4]).passed  # wBC gap only 0.1
    assert not a_lol.reward_claim([0.8, 0.8], [0.6, 0.6], [0.65, 0.65], [0.4]).passed  # NLL gap only 0.15


def test_divergence_names_the_model():
    ctx = SimpleNamespace(check=check_finite)
    a_lol.check_models(ctx, T([1.0, 2.0]), 3, ["NLL (seed 0)", "A-LoL (seed 0)"])
    with pytest.raises(DivergenceError, match=r"step 7 in 'A-LoL \(seed 0\)'"):
        a_lol.check_models(ctx, T([1.0, float("nan")]), 7, ["NLL (seed 0)", "A-LoL (seed 0)"])


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="preset"):
        a_lol.run(preset="huge")
    with pytest.raises(ValueError, match="sampling"):
        a_lol.run(sampling="best")
    with pytest.raises(ValueError, match="no room"):
        a_lol.run(expert_frac=0.9, random_frac=0.2, progress=False)


# --- runs -------------------------------------------------------------------------------------------------

TINY = dict(
    n_steps=6, sft_steps=10, n_seeds=2, n_train=300, n_val=40, n_test=30, eval_every=3, value_steps=10, progress=False
)


def test_a_tiny_run_is_seeded_and_consistent():
    a, b = a_lol.run(seed=3, **TINY), a_lol.run(seed=3, **TINY)
    assert a.history.equals(b.history)
    h = a.history[a.history["metric"] == "test_reward"]
    assert set(h["series"]) == {"NLL", "wBC", "A-LoL"} and set(h["seed"]) == {3, 4}
    assert sorted(set(h["step"])) == [0, 3, 6]
    start = h[h["step"] == 0].groupby("seed")["value"].agg(["min", "max"])
    assert (start["max"] - start["min"]).max() < 1e-7  # every arm starts at its seed's π_ref
    last = h[h["step"] == 6].groupby("series")["value"].mean()
    assert a.metrics["test_reward"] == pytest.approx(last["A-LoL"], abs=1e-6)
    assert a.claims[0].numbers["reward_wbc"] == pytest.approx(last["wBC"], abs=1e-6)
    adv = a.extras["adv_by_source"]
    assert sum(len(v) for v in adv.values()) == 300
    assert {"test_reward", "advantage", "styles", "ratios", "final"} <= set(a.figures)


def test_variants_and_priority_sampling_run():
    r = a_lol.run(variants=True, sampling="priority", **{**TINY, "n_seeds": 1})
    assert r.extras["arms"] == [
        "NLL",
        "wBC",
        "A-LoL",
        "A-LoL ref-free",
        "A-LoL seq",
        "A-LoL KL",
        "A-LoL uniform",
        "R-GOLD",
        "R-LoL",
        "DPO",
    ]
    assert all(math.isfinite(v) for v in r.metrics.values())


@pytest.mark.slow
def test_quick_run():
    result = a_lol.run(preset="quick", progress=False)
    m, x = result.metrics, result.extras
    assert set(result.history["seed"]) == {0, 1}
    # π_ref imitates the mediocre majority: its greedy outputs copy the prompt in the second half
    assert x["styles"]["π_ref"][1] > 0.8
    # the filter keeps (almost) all expert rows and drops (almost) all random ones
    assert x["positive_by_source"]["expert"] > 0.9 and x["positive_by_source"]["random"] < 0.05
    assert 0.0 < m["positive_adv_frac"] < 1.0
    assert result.claims_hold  # the card's check at the quick preset
