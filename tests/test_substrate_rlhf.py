"""The alignment substrate, part 2: DPO-family losses, best-of-n, PPO pieces, preference data and oracles.

References:
- by hand: every loss on small numbers, the best-of-n KL (also against an exact discrete computation),
  the unbiased best-of-n estimator (against brute force over all subsets), GAE, the PPO step;
- against TRL 1.16 (test-only), with stand-in trainers as in ``test_rpo_trl.py``: IPO and hinge (and DPO through
  ``daa_loss``) via ``DPOTrainer._compute_loss``; the Bradley–Terry loss via ``RewardTrainer.compute_loss``;
  the sequence-level clipped surrogate via ``RLOOTrainer._compute_loss``. TRL 1.16 has no PPO trainer, so the
  value loss, KL-penalised reward and GAE are checked by hand only.
"""

import itertools
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from labkit.core import torch_threads
from labkit.data import preferences as prefs
from labkit.models import tiny_lm as lm
from labkit.substrates import preference as pref
from labkit.substrates import rlhf

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def softplus(z):
    return math.log1p(math.exp(z))


# --- DPO-family losses by hand ----------------------------------------------------------------------------

ARGS = (T([-1.0, -5.0]), T([-3.0, -7.0]), T([-2.0, -5.0]), T([-2.0, -7.0]))  # h = 2 and h = 0


def test_dpo_loss_moved_to_core_and_still_importable_from_rpo():
    from labkit.methods.rpo import dpo_loss

    assert dpo_loss is pref.dpo_loss
    assert pref.dpo_loss(*ARGS, beta=0.1).tolist() == pytest.approx([softplus(-0.2), math.log(2)], abs=1e-6)


def test_margin_and_implicit_reward():
    assert pref.logratio_margin(*ARGS).tolist() == [2.0, 0.0]
    assert pref.implicit_reward(T([-1.0]), T([-3.0]), 0.5).item() == 1.0


def test_slic_hinge_hand_case():
    # β·h = 0.2 → 0.8; h = 0 → 1; β = 1, h = 2 → 0 (past the margin: no gradient)
    assert pref.slic_loss(*ARGS, beta=0.1).tolist() == pytest.approx([0.8, 1.0])
    assert pref.slic_loss(*ARGS, beta=1.0).tolist() == pytest.approx([0.0, 1.0])


def test_ipo_hand_case_summed_and_per_token():
    # β = 0.25 → target 1/(2β) = 2: h = 2 → 0; h = 0 → 4
    assert pref.ipo_loss(*ARGS, beta=0.25).tolist() == pytest.approx([0.0, 4.0])
    # per-token: Δ_w = 1 over 2 tokens, Δ_l = −1 over 4 tokens → h = 0.5 + 0.25 = 0.75; β = 0.5 → (0.75 − 1)²
    loss = pref.ipo_loss(
        T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), 0.5, chosen_lengths=T([2.0]), rejected_lengths=T([4.0])
    )
    assert loss.item() == pytest.approx(0.0625)


def test_daa_loss_dispatch():
    for kind, fn in pref.DAA_LOSSES.items():
        assert torch.equal(pref.daa_loss(kind, *ARGS, 0.3), fn(*ARGS, beta=0.3))
    with pytest.raises(ValueError, match="dpo"):
        pref.daa_loss("kto", *ARGS, 0.3)


def test_bradley_terry_loss_hand_case():
    assert pref.bradley_terry_loss(T([2.0, 0.0]), T([1.0, 0.0])).tolist() == pytest.approx([softplus(-1), math.log(2)])
    assert pref.bradley_terry_loss(T([2.0]), T([1.0]), margin=T([1.0])).item() == pytest.approx(math.log(2))


# --- against TRL ------------------------------------------------------------------------------------------

PAIRS, TOKENS = 4, 6


def identity(x, **_):
    return x


def trl_module(name):
    return pytest.importorskip(name, reason="TRL is the reference; `pip install -e .[dev]`")


def dpo_stand_in(beta, loss_type):
    """The attributes ``DPOTrainer._compute_loss`` reads, with a one-process accelerator."""
    return SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device="cpu", gather=identity, gather_for_metrics=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        label_smoothing=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )


def dpo_batch(lengths_chosen, lengths_rejected, seed=0):
    """Per-token log-probs (zero outside each completion), TRL's inputs for [chosen; rejected], and the lengths."""
    gen = torch.Generator().manual_seed(seed)
    lengths = T(lengths_chosen + lengths_rejected)
    shift_mask = (torch.arange(TOKENS).expand(2 * PAIRS, TOKENS) < lengths[:, None]).long()
    per_token = -torch.rand(2 * PAIRS, TOKENS, generator=gen) * 3 * shift_mask
    completion_mask = torch.cat([torch.zeros(2 * PAIRS, 1, dtype=torch.long), shift_mask], dim=1)  # a prompt token
    ref = -torch.rand(2 * PAIRS, generator=gen) * 10
    inputs = {
        "input_ids": torch.ones(2 * PAIRS, TOKENS + 1, dtype=torch.long),
        "attention_mask": completion_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref[:PAIRS],
        "ref_rejected_logps": ref[PAIRS:],
    }
    return per_token, inputs, ref, lengths.float()


def trl_dpo_loss(beta, loss_type, per_token, inputs):
    dpo = trl_module("trl.trainer.dpo_trainer")
    zeros = torch.zeros_like(per_token)
    model = lambda **kw: SimpleNamespace(
        log_probs=per_token,
        entropy=zeros,
        mean_logits=zeros,  # noqa: E731
        is_top1=zeros.bool(),
    )
    return dpo.DPOTrainer._compute_loss(dpo_stand_in(beta, loss_type), model, inputs, return_outputs=False)


def split(x):
    return x[:PAIRS], x[PAIRS:]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_ipo_equals_trl_ipo_with_per_token_normalisation(beta):
    per_token, inputs, ref, lengths = dpo_batch([6, 4, 5, 2], [3, 6, 1, 5])
    expected = trl_dpo_loss(beta, "ipo", per_token, inputs)
    (pc, pr), (rc, rr), (lc, lr) = split(per_token.sum(1)), split(ref), split(lengths)
    ours = pref.ipo_loss(pc, pr, rc, rr, beta, chosen_lengths=lc, rejected_lengths=lr).mean()
    torch.testing.assert_close(ours, expected)
    summed = pref.ipo_loss(pc, pr, rc, rr, beta).mean()
    assert not torch.allclose(summed, expected)  # without the lengths it is the summed (paper) form


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("kind,trl_name", [("slic", "hinge"), ("dpo", "sigmoid")])
def test_slic_and_dpo_equal_trl_hinge_and_sigmoid(beta, kind, trl_name):
    per_token, inputs, ref, _ = dpo_batch([6, 4, 5, 2], [3, 6, 1, 5], seed=2)
    expected = trl_dpo_loss(beta, trl_name, per_token, inputs)
    (pc, pr), (rc, rr) = split(per_token.sum(1)), split(ref)
    torch.testing.assert_close(pref.daa_loss(kind, pc, pr, rc, rr, beta).mean(), expected)


@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_loss_equals_trl_reward_trainer(with_margin):
    reward = trl_module("trl.trainer.reward_trainer")
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2 * PAIRS, 1, generator=gen) * 2
    inputs = {"input_ids": torch.ones(2 * PAIRS, 3, dtype=torch.long), "attention_mask": torch.ones(2 * PAIRS, 3)}
    margin = torch.rand(PAIRS, generator=gen) if with_margin else None
    if with_margin:
        inputs["margin"] = margin
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(center_rewards_coefficient=None),
        accelerator=SimpleNamespace(gather=identity, gather_for_metrics=identity),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    model = lambda **kw: SimpleNamespace(logits=scores)  # noqa: E731
    expected = reward.RewardTrainer.compute_loss(trainer, model, inputs)
    chosen, rejected = split(scores.squeeze(-1))
    torch.testing.assert_close(pref.bradley_terry_loss(chosen, rejected, margin).mean(), expected)


@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_clipped_surrogate_equals_trl_rloo_sequence_loss(eps):
    """RLOO's loss is the PPO clip on sequence-level ratios (summed token log-probs): our sequence-level PPO."""
    rloo = trl_module("trl.trainer.rloo_trainer")
    gen = torch.Generator().manual_seed(0)
    B = 8
    mask = (torch.arange(TOKENS).expand(B, TOKENS) < torch.randint(1, TOKENS + 1, (B, 1), generator=gen)).long()
    per_token = -torch.rand(B, TOKENS, generator=gen) * mask
    old = per_token.sum(1) + torch.randn(B, generator=gen) * 0.3  # ratios on both sides of the clip band
    adv = torch.randn(B, generator=gen)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        aux_loss_enabled=False,
        epsilon_low=eps,
        epsilon_high=eps,
        _get_per_token_logps_and_entropies=lambda *a, **k: (per_token, torch.zeros_like(per_token), None),
        accelerator=SimpleNamespace(reduce=identity, gather=identity),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.ones(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.ones(B, TOKENS, dtype=torch.long),
        "completion_mask": mask,
        "old_logps": old,
        "advantages": adv,
    }
    expected = rloo.RLOOTrainer._compute_loss(trainer, None, inputs)
    ours = rlhf.clipped_surrogate_loss((per_token * mask).sum(1), old, adv, eps).mean()
    torch.testing.assert_close(ours, expected)


# --- PPO pieces by hand -----------------------------------------------------------------------------------


def test_clipped_surrogate_hand_cases_and_zero_gradient_when_clipped():
    ratio = T([1.5, 1.5, 0.5, 0.5, 1.0])
    adv = T([1.0, -1.0, 1.0, -1.0, 2.0])
    logps = torch.log(ratio).requires_grad_(True)
    loss = rlhf.clipped_surrogate_loss(logps, torch.zeros(5), adv, clip_eps=0.2)
    # A>0, ρ=1.5: min(1.5, 1.2) → −1.2 (clipped); A<0, ρ=1.5: min(−1.5, −1.2) = −1.5 → 1.5 (not clipped);
    # A>0, ρ=0.5: min(0.5, 0.8) → −0.5; A<0, ρ=0.5: min(−0.5, −0.8) → 0.8 (clipped); ρ=1: −A
    assert loss.tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8, -2.0])
    loss.sum().backward()
    # d/dlogπ of −ρA is −ρA where unclipped, 0 where clipped; at ρ = 1 it is the policy gradient −A
    assert logps.grad.tolist() == pytest.approx([0.0, 1.5, -0.5, 0.0, -2.0])


def test_kl_penalised_reward_advantages_value_loss():
    shaped = rlhf.kl_penalised_reward(T([1.0, 0.0]), T([-2.0, -5.0]), T([-3.0, -4.0]), kl_coef=0.5)
    assert shaped.tolist() == [0.5, 0.5]  # 1 − 0.5·1 and 0 − 0.5·(−1)
    assert rlhf.sequence_advantages(T([1.0, 3.0]), T([0.5, 0.5])).tolist() == [0.5, 2.5]
    assert rlhf.sequence_advantages(T([1.0, 3.0]), T([0.5, 0.5]), normalise=True).tolist() == pytest.approx(
        [-1 / math.sqrt(2), 1 / math.sqrt(2)], abs=1e-6
    )
    assert rlhf.value_loss(T([1.0, 0.0]), T([3.0, 0.0])).tolist() == [2.0, 0.0]


def test_gae_hand_cases():
    r, v = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.5, 0.5]])
    assert rlhf.gae_advantages(r, v, gamma=1.0, lam=1.0).tolist()[0] == pytest.approx([0.5, 0.5, 0.5])  # G − V
    assert rlhf.gae_advantages(r, v, gamma=1.0, lam=0.0).tolist()[0] == pytest.approx([0.0, 0.0, 0.5])  # TD errors
    # γ = 0.9, λ = 0.5: δ = (−0.05, −0.05, 0.5); A₂ = 0.5, A₁ = −0.05 + 0.45·0.5, A₀ = −0.05 + 0.45·A₁
    a1 = -0.05 + 0.45 * 0.5
    assert rlhf.gae_advantages(r, v, gamma=0.9, lam=0.5).tolist()[0] == pytest.approx([-0.05 + 0.45 * a1, a1, 0.5])


def test_ppo_step_raises_the_reward_of_a_tiny_lm():
    torch.manual_seed(0)
    policy = lm.TinyLM(6, 8, d_model=32)
    ref = lm.frozen_copy(policy)
    value = rlhf.ValueHead(32, hidden=16)
    opt = torch.optim.Adam(list(policy.parameters()) + list(value.parameters()), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(6, (64, 2), generator=gen)

    def reward(x, y):
        return (y == 3).float().mean(1)  # fraction of token 3

    stats = []
    for _ in range(12):
        rollout = rlhf.collect_rollout(policy, ref, prompts, 5, reward, kl_coef=0.05, generator=gen)
        stats.append(rlhf.ppo_step(policy, value, opt, rollout, clip_eps=0.2, epochs=4))
    assert stats[0]["kl"] == 0.0  # the first rollout comes from π = π_ref
    assert stats[0]["reward"] < 0.3 and stats[-1]["reward"] > 0.6
    assert stats[-1]["kl"] > 0.1 and 0.0 <= stats[-1]["clip_frac"] <= 1.0


# --- best-of-n --------------------------------------------------------------------------------------------


def test_best_of_n_picks_the_top_of_the_first_n():
    scores = T([[0.1, 0.9, 0.5, 2.0], [0.7, 0.2, 0.8, 0.0]])
    samples = torch.arange(16.0).view(2, 4, 2)
    picked, best, idx = rlhf.best_of_n(samples, scores, 3)
    assert idx.tolist() == [1, 2] and best.tolist() == pytest.approx([0.9, 0.8])
    assert picked.tolist() == [[2.0, 3.0], [12.0, 13.0]]
    assert rlhf.best_of_n(samples, scores, 1)[2].tolist() == [0, 0]
    with pytest.raises(ValueError, match="pool"):
        rlhf.best_of_n(samples, scores, 5)


def test_best_of_n_kl_formula_and_exact_discrete_check():
    assert rlhf.best_of_n_kl(1) == 0.0
    assert rlhf.best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert rlhf.best_of_n_kl(T([1, 4])).tolist() == pytest.approx([0.0, math.log(4) - 0.75])
    # π_ref uniform over M responses with distinct scores: best-of-n puts (k/M)^n − ((k−1)/M)^n on the k-th lowest
    M = 100_000
    k = torch.arange(1, M + 1, dtype=torch.float64)
    for n in (2, 16, 256):
        p = (k / M) ** n - ((k - 1) / M) ** n
        exact = (p * torch.log(p * M).nan_to_num(0.0)).sum().item()
        assert exact == pytest.approx(rlhf.best_of_n_kl(n), abs=1e-3)


def test_unbiased_best_of_n_matches_brute_force_over_subsets():
    gen = torch.Generator().manual_seed(0)
    N = 7
    gold, proxy = torch.randn(N, generator=gen), torch.randn(N, generator=gen)
    ns = list(range(1, N + 1))
    est = rlhf.unbiased_best_of_n(gold, proxy, ns)
    for n, e in zip(ns, est.tolist()):
        subsets = list(itertools.combinations(range(N), n))
        brute = sum(gold[max(s, key=lambda i: proxy[i])].item() for s in subsets) / len(subsets)
        assert e == pytest.approx(brute, abs=1e-9)
    assert est[0].item() == pytest.approx(gold.mean().item()) and est[-1].item() == pytest.approx(
        gold[proxy.argmax()].item()
    )
    batched = rlhf.unbiased_best_of_n(torch.stack([gold, -gold]), torch.stack([proxy, proxy]), [3])
    assert batched.shape == (1, 2) and batched[0, 0].item() == pytest.approx(est[2].item())
    big = rlhf.unbiased_best_of_n(torch.randn(20_000, generator=gen), torch.randn(20_000, generator=gen), [2048])
    assert torch.isfinite(big).all()  # log-space binomials do not overflow


# --- preference data and the general oracle ---------------------------------------------------------------


def test_quadratic_gold_and_bt_labels():
    w = T([1.0, 0.0])
    assert prefs.quadratic_gold_reward(T([[1.0, 2.0], [0.0, 0.0]]), w, 0.15).tolist() == pytest.approx([1 - 0.75, 0.0])
    gen = torch.Generator().manual_seed(0)
    labels = prefs.bt_labels(torch.full((20_000,), 1.0), torch.zeros(20_000), gen)
    assert labels.float().mean().item() == pytest.approx(1 / (1 + math.exp(-1)), abs=0.01)
    a, b = T([[1.0, 1.0], [2.0, 2.0]]), T([[0.0, 0.0], [3.0, 3.0]])
    chosen, rejected = prefs.order_pairs(a, b, T([True, False]))
    assert chosen.tolist() == [[1.0, 1.0], [3.0, 3.0]] and rejected.tolist() == [[0.0, 0.0], [2.0, 2.0]]
    assert prefs.unit_direction(5, gen).norm().item() == pytest.approx(1.0)


def test_length_candidates_reference_is_short_and_gold_peaks_at_five():
    cand = prefs.make_length_candidates(32, 40, torch.Generator().manual_seed(0))
    assert cand.features.shape == (32, 40, 2) and cand.ref_logp.exp().sum(-1).allclose(torch.ones(32))
    mean_len = (cand.ref_logp.exp() * cand.length).sum(-1).mean().item()
    assert 1.8 < mean_len < 3.0  # the card's ≈ 2.4
    ell = torch.arange(1.0, 21.0)
    assert (0.6 * ell - 0.06 * ell**2).argmax().item() + 1 == 5
    assert torch.allclose(cand.gold - cand.quality, 0.6 * cand.length - 0.06 * cand.length**2, atol=1e-5)


def test_preference_matrices_and_oracle_labels():
    P = prefs.cyclic_preference_matrix((0.9, 0.6, 0.7), n_extra=2, extra_lose=0.75)
    assert P[0, 1] == 0.9 and P[1, 2] == 0.6 and P[2, 0] == 0.7 and P[3, 4] == 0.5 and P[0, 3] == 0.75
    perm = T([2, 0, 1, 4, 3])
    assert prefs.cyclic_preference_matrix(permutation=perm)[1, 2] == P[0, 1]
    bt = prefs.bt_preference_matrix(T([0.0, 1.0, 3.0]))
    assert bt[2, 0].item() == pytest.approx(1 / (1 + math.exp(-3)))
    prefs.check_preference_matrix(bt)
    with pytest.raises(ValueError, match="P\\[j, i\\]"):
        prefs.check_preference_matrix(T([[0.5, 0.9], [0.9, 0.5]]))
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    wins = prefs.sample_preference_labels(
        P.expand(2, 5, 5), torch.zeros(2, n, dtype=torch.long), torch.ones(2, n, dtype=torch.long) * T([[1], [3]]), gen
    )
    assert wins.float().mean(1).tolist() == pytest.approx([0.9, 0.75], abs=0.01)


def test_win_rates_exploitability_and_nash():
    P = prefs.cyclic_preference_matrix((0.9, 0.6, 0.7))
    third = T([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0])
    vs = prefs.win_rate_vs_policy(P, third)
    assert vs[:3].tolist() == pytest.approx([(0.5 + 0.9 + 0.3) / 3, (0.1 + 0.5 + 0.6) / 3, (0.7 + 0.4 + 0.5) / 3])
    assert prefs.exploitability(P, third).item() == pytest.approx(1.7 / 3 - 0.5)
    pure = T([1.0, 0.0, 0.0, 0.0, 0.0])
    assert prefs.policy_win_rate(P, pure, third).item() == pytest.approx(1.7 / 3)
    assert prefs.exploitability(P, pure).item() == pytest.approx(0.2)  # 2 beats 0 with 0.7
    nash = prefs.nash_policy(P)
    # cycle margins a = 0.4 (0≻1), b = 0.1 (1≻2), c = 0.2 (2≻0): π* ∝ (b, c, a) = (1, 2, 4)/7
    assert nash.tolist() == pytest.approx([1 / 7, 2 / 7, 4 / 7, 0.0, 0.0], abs=1e-6)
    assert prefs.exploitability(P, nash).item() == pytest.approx(0.0, abs=1e-6)
    bt_nash = prefs.nash_policy(prefs.bt_preference_matrix(T([0.0, 2.0, 1.0])))
    assert bt_nash.tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)  # transitive: the Condorcet winner
