"""Regret-loss (24): regret and the baselines on hand-made sequences, the regret-loss by hand, causality, the
environments, the claims three ways, divergence, bad knobs, one quick run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.data import online_learning as ol
from labkit.methods import regret_loss as rl

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def alternating_two(horizon: int) -> torch.Tensor:
    """ℓ_1 = (½, 0), then (0, 1), (1, 0), …: the FTL killer on two actions, ``(1, T, 2)``."""
    rows = [[0.5, 0.0]] + [[0.0, 1.0] if t % 2 == 1 else [1.0, 0.0] for t in range(1, horizon)]
    return T([rows])


# --- regret and the reference algorithms ----------------------------------------------------------------


def test_regret_by_hand():
    losses = T([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    policy = T([[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]])
    # paid 0.5, 0.5 + 0 = 0.5, 0.5 + 0 = 0.5; best in hindsight: cumulative (1, 0) → 0, (1, 1) → 1, (2, 1) → 1
    assert rl.cumulative_regret(policy, losses)[0].tolist() == pytest.approx([0.5, -0.5, -0.5])
    assert rl.regret(policy, losses).item() == pytest.approx(-0.5)


def test_ftl_has_linear_regret_on_alternating_losses():
    for horizon in (10, 20, 40):
        losses = alternating_two(horizon)
        pi = rl.follow_the_leader(losses)
        # FTL plays uniform at t = 1 (pays ¼), then always the action about to lose (pays 1): regret T − 1 + ¼ − best
        best = min(losses[0].sum(0).tolist())
        assert rl.regret(pi, losses).item() == pytest.approx(0.25 + (horizon - 1) - best)
        assert rl.regret(pi, losses).item() >= horizon / 2 - 1  # linear in T


def test_hedge_by_hand_and_within_its_bound():
    losses = T([[[1.0, 0.0], [0.0, 0.0]]])
    pi = rl.hedge(losses, eta=math.log(3.0))
    # t = 1 uniform; t = 2: ∝ (e^{−η·1}, e^0) = (1/3, 1) → (¼, ¾)
    assert pi[0].tolist() == [pytest.approx([0.5, 0.5]), pytest.approx([0.25, 0.75])]
    gen = torch.Generator().manual_seed(0)
    for name in ol.FAMILIES:
        seqs = ol.sample_family(name, 200, 30, 3, gen)
        worst = rl.regret(rl.hedge(seqs, rl.hedge_eta(30, 3)), seqs).max().item()
        assert worst <= math.sqrt(30 * math.log(3) / 2) + 1e-5  # √(T ln d / 2) for losses in [0, 1]
    alt = alternating_two(40)
    assert rl.regret(rl.hedge(alt, rl.hedge_eta(40, 2)), alt).item() < 0.25 * rl.regret(rl.follow_the_leader(alt), alt)


def test_hedge_with_huge_eta_is_ftl_and_ftpl_plays_leaders():
    gen = torch.Generator().manual_seed(1)
    seqs = torch.rand(50, 12, 3, generator=gen)  # continuous losses: no ties between leaders
    assert torch.allclose(rl.hedge(seqs, 1e6), rl.follow_the_leader(seqs), atol=1e-4)
    ftpl = rl.follow_the_perturbed_leader(seqs, 1e6, gen)  # tiny noise: FTPL = FTL
    assert torch.equal(ftpl[:, 1:], rl.follow_the_leader(seqs)[:, 1:])
    assert torch.equal(ftpl.sum(-1), torch.ones(50, 12))


# --- the losses -----------------------------------------------------------------------------------------


def test_regret_loss_by_hand():
    regrets = T([[1.0, 0.0], [2.0, 2.0]])
    # group 1: w = softmax(2·(1, 0)) = (e²/(e²+1), 1/(e²+1)) → Σ w R = e²/(e²+1); group 2: 2
    w = math.exp(2) / (math.exp(2) + 1)
    assert rl.regret_loss(regrets, k=2.0).item() == pytest.approx((w + 2.0) / 2)
    assert rl.regret_loss(regrets, k=0.0).item() == pytest.approx((0.5 + 2.0) / 2)  # k = 0: the mean
    assert rl.regret_loss(regrets, k=200.0).item() == pytest.approx((1.0 + 2.0) / 2)  # k → ∞: the max
    # h = max(R, 0)²: a negative regret gives nothing
    assert rl.regret_loss(T([[-1.0, -1.0]]), k=1.0, h="relu_sq").item() == 0.0
    # the weights stay in the graph: d/dR_1 of w·R_1 + (1 − w)·R_2 at R = (1, 0), k = 2 is w + 2w(1 − w)
    r = T([[1.0, 0.0]], requires_grad=True)
    rl.regret_loss(r, k=2.0).backward()
    assert r.grad[0, 0].item() == pytest.approx(w + 2 * w * (1 - w), abs=1e-6)


def test_supervised_loss_by_hand():
    losses = T([[[1.0, 0.0], [1.0, 0.0]]])  # best in hindsight: action 1
    policy = T([[[0.5, 0.5], [0.2, 0.8]]])
    assert rl.supervised_loss(policy, losses).item() == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)


# --- the agents -----------------------------------------------------------------------------------------


def test_causal_mask_and_shift():
    assert rl.causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    losses = T([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    assert rl.shift_right(losses)[0].tolist() == [[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("make", [lambda: rl.TransformerAgent(3, 8, 16, 4, 2), lambda: rl.LinearSelfAttentionAgent(3)])
def test_agents_are_causal(make):
    torch.manual_seed(0)
    agent = make()
    if isinstance(agent, rl.LinearSelfAttentionAgent):
        torch.nn.init.normal_(agent.value)
    losses = torch.rand(2, 8, 3)
    base = agent(losses)
    for t in range(8):
        changed = losses.clone()
        changed[:, t:] = torch.rand(2, 8 - t, 3)
        out = agent(changed)
        # π_1..π_t use ℓ_1..ℓ_{t−1} only: changing ℓ_t onwards leaves them untouched, and changes π_{t+1}
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6)
        if t < 7:
            assert not torch.allclose(out[:, t + 1], base[:, t + 1], atol=1e-6)
    assert torch.allclose(base.sum(-1), torch.ones(2, 8), atol=1e-6)


def test_linear_attention_with_minus_eta_identity_is_hedge():
    agent = rl.LinearSelfAttentionAgent(3)
    with torch.no_grad():
        agent.value[:, :3] = -0.7 * torch.eye(3)
    losses = torch.rand(4, 10, 3)
    assert torch.allclose(agent(losses), rl.hedge(losses, 0.7), atol=1e-6)


# --- environments and games -----------------------------------------------------------------------------


def test_families_shapes_ranges_and_the_alternating_pattern():
    gen = torch.Generator().manual_seed(0)
    for name in ol.FAMILIES:
        seqs = ol.sample_family(name, 16, 10, 4, gen)
        assert seqs.shape == (16, 10, 4) and seqs.min() >= 0 and seqs.max() <= 1
    alt = ol.sample_family("alternating", 5, 6, 3, gen)
    for seq in alt:
        i = int(torch.isclose(seq[0], T(0.5)).logical_and(seq[1] == 0).nonzero()[0])
        j = int(((seq[0] == 0) & (seq[1] == 1)).nonzero()[0])
        assert seq[:, i].tolist() == [0.5, 0.0, 1.0, 0.0, 1.0, 0.0] and seq[:, j].tolist() == [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="unknown family"):
        ol.sample_family("chaos", 1, 2, 2, gen)


def test_biased_rps_nash_and_self_play():
    game = ol.biased_rps()
    # at Nash every action has the same expected loss (½) for both players
    assert game.row_losses(game.nash).tolist() == pytest.approx([0.5] * 3)
    assert game.col_losses(game.nash).tolist() == pytest.approx([0.5] * 3)
    uniform = lambda x: torch.full_like(x, 1 / 3)  # noqa: E731
    row, col = rl.self_play(uniform, uniform, game, 5)
    assert row.shape == (5, 3) and torch.allclose(row, torch.full((5, 3), 1 / 3))


# --- claims ---------------------------------------------------------------------------------------------


def test_claims_three_ways():
    hedge = [1.6, 1.5, 1.7]
    assert rl.hedge_claim([0.7, 0.6, 0.8], hedge).verdict is Verdict.HOLDS
    assert rl.hedge_claim([1.6, 1.5, 1.7], hedge).verdict is Verdict.DOES_NOT_HOLD
    assert rl.hedge_claim([0.2, 2.5, 1.2], hedge).verdict is Verdict.INCONCLUSIVE
    nan = rl.hedge_claim([0.7, float("nan"), 0.8], hedge)
    assert nan.verdict is Verdict.INCONCLUSIVE and "diverged" in nan.detail and nan.headline
    assert rl.ftl_claim([0.7, 0.6, 0.8], [9.0, 9.5, 10.0]).verdict is Verdict.HOLDS
    assert rl.ftl_claim([5.0, 5.5, 6.0], [9.0, 9.5, 10.0]).verdict is Verdict.DOES_NOT_HOLD
    assert rl.stochastic_claim([0.7, 0.75, 0.7], [0.6, 0.6, 0.6]).verdict is Verdict.HOLDS
    assert rl.stochastic_claim([1.7, 1.75, 1.7], [0.6, 0.6, 0.6]).verdict is Verdict.DOES_NOT_HOLD
    assert rl.sublinear_claim([0.1, 0.1, 0.1], [0.05, 0.06, 0.04], 20).verdict is Verdict.HOLDS
    assert rl.sublinear_claim([0.1, 0.1, 0.1], [0.2, 0.21, 0.22], 20).verdict is Verdict.DOES_NOT_HOLD
    assert rl.sublinear_claim([0.1, 0.1, float("nan")], [0.2, 0.21, 0.22], 20).verdict is Verdict.INCONCLUSIVE
    assert rl.supervised_claim([0.7, 0.6, 0.8], [1.0, 0.9, 1.1]).verdict is Verdict.HOLDS
    assert rl.supervised_claim([1.7, 1.6, 1.8], [1.0, 0.9, 1.1]).verdict is Verdict.DOES_NOT_HOLD


# --- training, divergence, knobs, the run -----------------------------------------------------------------


def test_regret_loss_training_beats_the_untrained_model():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    agent = rl.LinearSelfAttentionAgent(3)
    evals = ol.sample_mixture(400, 20, 3, torch.Generator().manual_seed(9))
    before = rl.regret(agent(evals), evals).mean().item()  # V = 0: uniform play
    rl.train_agent(agent, lambda n: ol.sample_mixture(n, 20, 3, gen), objective="regret", n_steps=150, lr=0.02,
                   n_groups=8, n_per_group=8, k=2.0)  # fmt: skip
    assert rl.regret(agent(evals), evals).mean().item() < 0.5 * before


def test_huge_learning_rate_diverges_naming_the_series():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(DivergenceError, match="transformer · regret-loss, seed 0"):
        rl.fit(rl.TransformerAgent(3, 10, 16, 4, 1), lambda n: ol.sample_mixture(n, 10, 3, gen),
               series="transformer · regret-loss, seed 0", objective="regret", n_steps=20, lr=1e12, n_groups=2,
               n_per_group=4, k=2.0, h="linear", log_every=1)  # fmt: skip


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="n_heads"):
        rl.run(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="n_actions"):
        rl.run(n_actions=4)  # self-play is rock-paper-scissors
    with pytest.raises(ValueError, match="unknown parameter"):
        rl.run(kk=1.0)
    with pytest.raises(ValueError, match="preset"):
        rl.run(preset="huge")


@pytest.mark.slow
def test_quick_preset_run():
    result = rl.run(progress=False)
    assert isinstance(result, Result) and result.claims[0].headline and len(result.claims) == 5
    m = result.metrics
    assert all(math.isfinite(v) for v in m.values())
    assert m["regret_ftl_alternating"] > 8  # ≈ T/2 on the FTL killer, T = 20
    regrets = result.extras["regrets"]
    ratio = regrets["regret"].worst() / regrets["hedge"].worst()
    assert result.claims[0].values == pytest.approx(tuple(ratio))
    assert set(result.history["seed"]) == {0, 1, 2}
    assert {"regret_stochastic", "regret_alternating", "alternating_policy", "self_play"} <= set(result.figures)


def test_method_file_is_the_paper_only():
    source = (Path(rl.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2403.16843" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment", "figures"):
        assert banned not in source
    assert np.isclose(rl.hedge_eta(20, 3), math.sqrt(8 * math.log(3) / 20))
