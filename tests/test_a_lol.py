"""A-LoL (02): every loss against a hand computation, the advantage filter, the algorithm's step alone and stacked,
the arm dispatch by key, the claims three ways, and small seeded runs."""

import math

import pytest
import torch

from labkit.core import Arm, Verdict, torch_threads
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


KW = dict(eps=0.9, kl_beta=0.1, dpo_beta=0.1)


def test_arm_loss_dispatch_branches_on_the_arm_key():
    tok, ref = T([[-1.0, -1.0], [-0.5, -0.5]]), T([[-1.2, -1.0], [-0.5, -0.6]])
    R, A = T([0.9, 0.5]), T([0.3, 0.0])
    got = a_lol.arm_loss(a_lol.A_LOL, tok, ref, R, A, **KW)
    assert torch.allclose(got, a_lol.a_lol_loss(tok.sum(-1), ref.sum(-1), A, 0.9))
    # the same loss whatever the display label: the code branches on Arm.key
    assert torch.allclose(a_lol.arm_loss(Arm("a_lol", "anything"), tok, ref, R, A, **KW), got)
    assert torch.allclose(a_lol.arm_loss(Arm("a_lol_priority", "A-LoL priority"), tok, ref, R, A, **KW), got)
    assert torch.allclose(a_lol.arm_loss(a_lol.WBC, tok, ref, R, A, **KW), T([1.8, 0.5]))
    dpo = a_lol.arm_loss(a_lol.DPO, tok, ref, R, A, **KW)  # pair: chosen row 0, rejected row 1
    assert dpo.shape == (1,) and dpo.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1 * (0.2 - 0.1)))))
    # leading (seed) dimensions pass through: (S, B, L) → (S, B)
    stacked = a_lol.arm_loss(
        a_lol.A_LOL, tok.expand(3, 2, 2), ref.expand(3, 2, 2), R.expand(3, 2), A.expand(3, 2), **KW
    )
    assert stacked.shape == (3, 2) and torch.allclose(stacked[2], got)
    with pytest.raises(ValueError, match="unknown arm"):
        a_lol.arm_loss(Arm("ppo", "A-LoL"), tok, ref, R, A, **KW)


def test_arm_plan_and_sampling():
    assert a_lol.arm_plan(False, "uniform") == [a_lol.NLL, a_lol.WBC, a_lol.A_LOL]
    arms = a_lol.arm_plan(True, "priority")
    assert [a.key for a in arms][-4:] == ["a_lol_uniform", "r_gold", "r_lol", "dpo"]
    kinds = {a.key: a_lol.arm_sampling(a, "priority") for a in arms}
    assert kinds["a_lol"] == kinds["a_lol_kl"] == "priority" and kinds["a_lol_uniform"] == "uniform"
    assert kinds["nll"] == kinds["wbc"] == kinds["r_lol"] == "uniform" and kinds["dpo"] == "pairs"
    assert a_lol.arm_sampling(Arm("a_lol_priority", "x"), "uniform") == "priority"


def test_priority_probs_follow_the_positive_advantage():
    assert a_lol.priority_probs(T([0.3, 0.0, 0.1])).tolist() == pytest.approx([0.75, 0.0, 0.25])
    assert a_lol.priority_probs(T([0.0, 0.0])).tolist() == [0.5, 0.5]
    rows = a_lol.draw_rows(3, 200, torch.Generator().manual_seed(0), a_lol.priority_probs(T([0.3, 0.0, 0.1])))
    assert 1 not in rows.tolist()


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


# --- the algorithm's step, alone and stacked ---------------------------------------------------------------


def test_stacked_a_lol_step_equals_the_single_model_step():
    """The experiment trains every (arm, seed) in one vmapped stack; one A-LoL step there must equal
    :func:`a_lol_step` on a plain TinyLM with the same batch (same loss, same gradient clip, same AdamW)."""
    st = a_lol.Stack.fresh(1, 16, 5)
    ref = st.model(0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(12, (8, 4), generator=gen), torch.randint(12, (8, 6), generator=gen)
    adv = T([0.4, 0.0, 0.1, 0.3, 0.0, 0.2, 0.5, 0.05])
    with torch.no_grad():
        ref_tok = tiny_lm.token_logprobs(ref, x, y)
    policy = a_lol.Stack.fresh(1, 16, 5).model(0).train().requires_grad_(True)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2, weight_decay=0.0)
    loss, ratios = a_lol.a_lol_step(policy, opt, x, y, ref_tok, adv, eps=0.9, grad_clip=0.5)
    assert torch.allclose(ratios, torch.ones(8), atol=1e-5)  # π_θ = π_ref before the step
    stack = st.select([0])
    opt2 = torch.optim.AdamW(stack.params.values(), lr=1e-2, weight_decay=0.0)
    tok = stack.token_logprobs(x.unsqueeze(0), y.unsqueeze(0))
    loss2 = a_lol.arm_loss(a_lol.A_LOL, tok[0], ref_tok, adv, adv, eps=0.9, kl_beta=0.0, dpo_beta=0.1).mean()
    opt2.zero_grad()
    loss2.backward()
    a_lol.clip_per_model(stack.params, 0.5)
    opt2.step()
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-6)
    after = stack.model(0).state_dict()
    for k, v in policy.state_dict().items():
        assert torch.allclose(after[k], v, atol=1e-5), k


def test_a_lol_train_learns_the_positive_rows_only():
    """A tiny offline set: rows with A⁺ > 0 get likelier under π_θ, rows with A⁺ = 0 add nothing."""
    torch.manual_seed(0)
    ref = tiny_lm.TinyLM(12, 10, d_model=16).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(12, (16, 4), generator=gen), torch.randint(12, (16, 6), generator=gen)
    adv = torch.zeros(16)
    adv[:4] = 0.5
    policy = a_lol.a_lol_train(
        ref, x, y, adv, eps=0.9, lr=1e-2, n_steps=30, batch_size=8, grad_clip=1.0, priority=True, generator=gen
    )
    gain = (tiny_lm.sequence_logprobs(policy, x, y) - tiny_lm.sequence_logprobs(ref, x, y)).detach()
    assert (gain[:4] > 1.0).all()
    assert gain[:4].mean() > gain[4:].mean() + 1.0


# --- claims: holds, does not hold, inconclusive (hand-made per-seed numbers) --------------------------------


def test_beats_wbc_claim_three_ways():
    holds = a_lol.beats_wbc_claim([0.99, 1.0, 0.98], [0.52, 0.51, 0.50])
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.15
    assert holds.values == pytest.approx((0.47, 0.49, 0.48))
    fails = a_lol.beats_wbc_claim([0.50, 0.51, 0.50], [0.60, 0.62, 0.61])
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    unsure = a_lol.beats_wbc_claim([0.60, 0.50, 0.70], [0.55, 0.60, 0.58])  # differences +0.05, −0.10, +0.12
    assert unsure.verdict is Verdict.INCONCLUSIVE
    diverged = a_lol.beats_wbc_claim([float("nan"), 1.0, 1.0], [0.5, 0.5, 0.5])
    assert diverged.verdict is Verdict.INCONCLUSIVE
    # the card's margin: better by a sure +0.10 is not the +0.15 the card asks for
    assert a_lol.beats_wbc_claim([0.60, 0.61, 0.62], [0.50, 0.51, 0.52]).verdict is Verdict.DOES_NOT_HOLD


def test_beats_nll_claim_three_ways():
    c = a_lol.beats_nll_claim([0.99, 1.0, 0.98], [0.50, 0.50, 0.51])
    assert c.verdict is Verdict.HOLDS and not c.headline
    assert a_lol.beats_nll_claim([0.4, 0.42, 0.41], [0.5, 0.5, 0.5]).verdict is Verdict.DOES_NOT_HOLD
    assert a_lol.beats_nll_claim([0.45, 0.6, 0.55], [0.5, 0.5, 0.5]).verdict is Verdict.INCONCLUSIVE
    one = a_lol.beats_nll_claim([0.9], [0.5])
    assert one.verdict is Verdict.HOLDS and "1 seed, no interval" in str(one)
    assert c.margin == 0.20  # the card's: +0.15 sure over NLL is not enough
    assert a_lol.beats_nll_claim([0.65, 0.66, 0.67], [0.50, 0.51, 0.52]).verdict is Verdict.DOES_NOT_HOLD


def test_knobs_keep_the_params():
    names = [p.name for p in a_lol.PARAMS]
    assert names[:6] == ["lr", "eps", "sampling", "expert_frac", "n_steps", "variants"]
    k = a_lol.Knobs()
    assert (k.n_steps, k.sft_steps, k.batch_size, k.n_seeds) == (150, 300, 32, 3)


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="preset"):
        a_lol.run(preset="huge")
    with pytest.raises(ValueError, match="sampling"):
        a_lol.run(sampling="best")
    with pytest.raises(ValueError, match="no room"):
        a_lol.run(expert_frac=0.9, random_frac=0.2, progress=False)


# --- runs (small overrides; the notebook runs the quick preset) ----------------------------------------------

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
    assert a.metrics["test_reward_wbc"] == pytest.approx(last["wBC"], abs=1e-6)
    assert a.headline is a.claims[0] and a.headline.headline and len(a.headline.values) == 2
    assert a.headline.numbers["wBC"] == pytest.approx(last["wBC"], abs=1e-6)
    assert all(math.isfinite(v) for v in a.metrics.values())
    assert [o.arm for o in a.extras["arms"]] == [a_lol.NLL, a_lol.WBC, a_lol.A_LOL]
    assert sum(len(v) for v in a.extras["advantage"].by_source.values()) == 300
    assert {"test_reward", "advantage", "styles", "ratios", "final"} <= set(a.figures)


def test_variants_and_priority_sampling_run():
    r = a_lol.run(variants=True, sampling="priority", **{**TINY, "n_seeds": 1})
    assert [o.arm.label for o in r.extras["arms"]] == [
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
    assert "test_reward_a_lol_uniform" in r.metrics and "test_reward_dpo" in r.metrics


@pytest.mark.slow
def test_the_mechanism_at_a_small_scale():
    """One seed, fewer test prompts: π_ref imitates the mediocre majority, the filter keeps the expert rows and
    drops the random ones, and A-LoL's greedy outputs follow the rule."""
    r = a_lol.run(n_seeds=1, n_test=100, n_val=200, eval_every=100, progress=False)
    x = r.extras
    assert x["reference"].styles[1] > 0.8  # π_ref copies the prompt in the second half
    stats = x["advantage"]
    assert stats.positive_by_source["expert"] > 0.9 and stats.positive_by_source["random"] < 0.05
    assert stats.mass_by_source["expert"] > 0.9
    assert 0.0 < r.metrics["positive_adv_frac"] < 1.0
    assert x["arms"][2].styles[0] > 0.9 and r.metrics["test_reward_a_lol"] > r.metrics["test_reward_wbc"] + 0.2
