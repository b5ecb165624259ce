"""SuperHF: the top-K filter, the loss with the KL prior and one iteration against hand-computed cases;
METEOR by hand; the PPO baseline's bookkeeping; the claims three ways; small seeded runs."""

import copy
import math

import pytest
import torch
from torch import nn

from labkit.core import Arm, DivergenceError, Verdict, torch_threads
from labkit.data import language as lang
from labkit.methods import superhf
from labkit.methods.superhf import method as superhf_method
from labkit.models import tiny_lm as lm

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


class TableLM(nn.Module):
    """Next-token logits that depend only on the position: row t of ``table`` at position t, for every batch row."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float32).clone())

    def forward(self, tokens):
        return self.table[: tokens.shape[1]].unsqueeze(0).expand(tokens.shape[0], -1, -1)


# --- the filter -------------------------------------------------------------------------------------------------


def test_filter_keeps_the_best_per_prompt_and_breaks_ties_by_order():
    samples = torch.arange(2 * 4 * 3).view(2, 4, 3)
    scores = T([[1.0, 3.0, 3.0, 0.0], [2.0, 0.0, 5.0, 1.0]])
    kept, kept_scores, idx = superhf.filter_top_k(samples, scores, 1)
    assert idx.tolist() == [[1], [2]]  # the tie 3 = 3 goes to the earlier sample
    assert kept.tolist() == [samples[0, 1].tolist(), samples[1, 2].tolist()] and kept_scores.tolist() == [3.0, 5.0]
    kept, kept_scores, idx = superhf.filter_top_k(samples, scores, 2)
    assert idx.tolist() == [[1, 2], [2, 0]] and kept_scores.tolist() == [3.0, 3.0, 5.0, 2.0]
    assert kept.shape == (4, 3) and kept[3].tolist() == samples[1, 0].tolist()
    with pytest.raises(ValueError, match="top_k"):
        superhf.filter_top_k(samples, scores, 5)


# --- the loss with the KL prior -------------------------------------------------------------------------------

POLICY = [[0.0, math.log(3.0)], [0.0, 0.0]]  # position 0: (1/4, 3/4); position 1: (1/2, 1/2)
REF = [[0.0, 0.0], [0.0, math.log(3.0)]]  # position 0: (1/2, 1/2); position 1: (1/4, 3/4)


def test_ce_and_kl_prior_by_hand():
    policy, ref = TableLM(POLICY), TableLM(REF)
    x, y = T([[0]]), T([[1, 0]])
    ce_hand = -(math.log(3 / 4) + math.log(1 / 2)) / 2
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(π_0‖π_θ) at position 0
    kl1 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # … at position 1
    loss, ce, kl = superhf.superhf_loss(policy, ref, x, y, beta_kl=0.35)
    assert ce.item() == pytest.approx(ce_hand, abs=1e-6)
    assert kl.item() == pytest.approx((kl0 + kl1) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(ce_hand + 0.35 * (kl0 + kl1) / 2, abs=1e-6)
    # the direction matters: KL(π_θ‖π_0) is a different number
    rev = (
        0.25 * math.log(0.25 / 0.5)
        + 0.75 * math.log(0.75 / 0.5)
        + 0.5 * math.log(0.5 / 0.25)
        + 0.5 * math.log(0.5 / 0.75)
    ) / 2
    assert superhf.kl_prior(ref, policy, x, y).item() == pytest.approx(rev, abs=1e-6)
    assert superhf.kl_prior(policy, policy, x, y).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_prior_gradient_pulls_towards_the_reference():
    """d/dz KL(π_0‖softmax(z)) = softmax(z) − π_0 at each position, divided by L (the mean over positions)."""
    policy, ref = TableLM(POLICY), TableLM(REF)
    superhf.kl_prior(policy, ref, T([[0]]), T([[1, 0]])).sum().backward()
    expect = (torch.softmax(T(POLICY), -1) - torch.softmax(T(REF), -1)) / 2
    assert torch.allclose(policy.table.grad[:2], expect, atol=1e-6)


def test_one_iteration_keeps_the_argmax_and_takes_the_hand_step():
    """SGD lr 1 from π_θ = π_0 = uniform: the KL prior has zero gradient there, so the step is −∇CE:
    z_t ← z_t − mean_kept (softmax(z_t) − onehot(y*_t)) / L."""
    torch.manual_seed(0)
    table = torch.zeros(4, 3)
    policy, ref = TableLM(table), TableLM(table)
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)
    reward = lambda x, y: (y == 2).sum(1).float() + 0.1 * y[:, 0]  # noqa: E731
    gen = torch.Generator().manual_seed(3)
    out = superhf.superhf_iteration(
        policy,
        ref,
        opt,
        T([[0], [0]]),
        reward,
        beta_kl=0.35,
        superbatch=8,
        top_k=1,
        epochs=1,
        top_p=1.0,
        length=3,
        generator=gen,
    )
    assert out["scores"].shape == (2, 8) and out["kept"].shape == (2, 3)
    assert torch.equal(out["kept_scores"], out["scores"].max(1).values)
    assert torch.equal(reward(out["prompts"], out["kept"]), out["kept_scores"])
    onehot = torch.nn.functional.one_hot(out["kept"], 3).float().mean(0)  # (L, V)
    expect = -(torch.full((3, 3), 1 / 3) - onehot) / 3
    assert torch.allclose(policy.table.detach()[:3], expect, atol=1e-6)
    assert out["kl"] == pytest.approx(0.0, abs=1e-7) and out["loss"].item() == pytest.approx(math.log(3), abs=1e-6)


def test_superhf_raises_the_kept_log_prob_and_the_prior_limits_the_drift():
    task = lang.TopicTask()
    x = task.topic_token(torch.zeros(2, 1, dtype=torch.long))
    drift = {}
    for beta in (0.0, 10.0):
        torch.manual_seed(1)
        init = lm.TinyGRULM(task.vocab_size)
        ref, policy = lm.frozen_copy(init), copy.deepcopy(init)
        opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
        reward = lambda p, y: lang.topic_proxy_reward(task, p, y)  # noqa: E731
        out = superhf.superhf_iteration(
            policy, ref, opt, x, reward, beta, 8, 1, epochs=20, generator=torch.Generator().manual_seed(0)
        )
        gain = (
            lm.sequence_logprobs(policy, out["prompts"], out["kept"])
            - lm.sequence_logprobs(init, out["prompts"], out["kept"])
        ).detach()
        assert (gain > 0).all()
        drift[beta] = superhf.kl_prior(policy, ref, out["prompts"], out["kept"]).mean().item()
    assert drift[10.0] < 0.5 * drift[0.0]


# --- PPO bookkeeping --------------------------------------------------------------------------------------------


def test_ppo_baseline_is_a_running_mean():
    task = lang.TopicTask()
    torch.manual_seed(0)
    init = lm.TinyGRULM(task.vocab_size)
    policy, ref = copy.deepcopy(init), lm.frozen_copy(init)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    x = task.topic_token(torch.arange(4)).unsqueeze(1).repeat_interleave(4, 0)
    reward = lambda p, y: lang.topic_proxy_reward(task, p, y)  # noqa: E731
    out = superhf.ppo_iteration(policy, ref, opt, x, reward, 0.0, None, generator=torch.Generator().manual_seed(0))
    assert out["baseline"] == pytest.approx(out["reward"].mean().item(), abs=1e-6)  # c = 0: R̃ = R
    out2 = superhf.ppo_iteration(policy, ref, opt, x, reward, 0.0, 1.0, generator=torch.Generator().manual_seed(1))
    assert out2["baseline"] == pytest.approx(0.9 + 0.1 * out2["reward"].mean().item(), abs=1e-6)


# --- METEOR ----------------------------------------------------------------------------------------------------


def test_meteor_by_hand():
    assert superhf.meteor(list(range(8)), list(range(8))) == pytest.approx(1 - 0.5 / 512)
    assert superhf.meteor([1, 2], [3, 4]) == 0.0
    # two chunks of two: F = 1, penalty = 0.5·(2/4)³
    assert superhf.align_exact([1, 2, 3, 4], [3, 4, 1, 2]) == [(0, 2), (1, 3), (2, 0), (3, 1)]
    assert superhf.meteor([1, 2, 3, 4], [3, 4, 1, 2]) == pytest.approx(0.9375)
    # one match: P = 1/3, R = 1/2, F = (1/6)/(0.9/3 + 0.1/2), penalty 0.5
    assert superhf.meteor([1, 1, 2], [1, 5]) == pytest.approx((1 / 6) / 0.35 * 0.5)


def test_cross_prompt_meteor_only_pairs_different_prompts():
    prompts = T([[0], [0], [1], [1]])
    same = torch.arange(8).repeat(4, 1)
    assert superhf.cross_prompt_meteor(prompts, same, 20, torch.Generator().manual_seed(0)) == pytest.approx(
        1 - 0.5 / 512
    )
    by_topic = torch.stack([torch.arange(8), torch.arange(8), torch.arange(8, 16), torch.arange(8, 16)])
    assert superhf.cross_prompt_meteor(prompts, by_topic, 20, torch.Generator().manual_seed(0)) == 0.0


# --- claims: holds, does not hold, inconclusive (hand-made per-seed numbers) -----------------------------------


def test_beats_ppo_claim_three_ways():
    c = superhf.beats_ppo_claim([4.6, 4.7, 4.65], [4.3, 4.4, 4.35])
    assert c.verdict is Verdict.HOLDS and c.headline and c.margin == 0.0
    assert superhf.beats_ppo_claim([4.2, 4.3, 4.25], [4.6, 4.7, 4.65]).verdict is Verdict.DOES_NOT_HOLD
    # differences −0.05, −0.5, +0.3: the interval straddles 0
    assert superhf.beats_ppo_claim([4.34, 4.21, 4.7], [4.39, 4.71, 4.4]).verdict is Verdict.INCONCLUSIVE
    assert superhf.beats_ppo_claim([float("inf"), 4.0, 4.0], [4.0, 4.0, 4.0]).verdict is Verdict.INCONCLUSIVE


def test_improves_claim_three_ways():
    assert superhf.improves_claim([4.3, 4.2, 4.4], [2.9, 2.8, 3.0]).verdict is Verdict.HOLDS
    assert superhf.improves_claim([2.0, 2.1, 2.05], [2.9, 2.8, 3.0]).verdict is Verdict.DOES_NOT_HOLD
    assert superhf.improves_claim([3.5, 2.5, 3.2], [2.9, 2.8, 3.0]).verdict is Verdict.INCONCLUSIVE
    assert not superhf.improves_claim([3.0], [2.9]).headline


def test_meteor_claim_lower_is_better_three_ways():
    c = superhf.meteor_claim([0.10, 0.11, 0.09], [0.20, 0.21, 0.22])
    assert c.verdict is Verdict.HOLDS and not c.higher_is_better and "≤" in c.bar()
    assert superhf.meteor_claim([0.17, 0.16, 0.18], [0.06, 0.08, 0.07]).verdict is Verdict.DOES_NOT_HOLD
    assert superhf.meteor_claim([0.17, 0.15, 0.12], [0.06, 0.22, 0.14]).verdict is Verdict.INCONCLUSIVE


def test_gold_claim_three_ways():
    assert superhf.gold_claim([2.0, 2.1, 2.05], [1.4, 1.5, 1.45]).verdict is Verdict.HOLDS
    assert superhf.gold_claim([1.0, 1.1, 1.05], [1.4, 1.5, 1.45]).verdict is Verdict.DOES_NOT_HOLD
    assert superhf.gold_claim([1.6, 1.2, 1.9], [1.4, 1.5, 1.45]).verdict is Verdict.INCONCLUSIVE


def test_arm_plan_branches_on_kind_and_keys():
    plans = superhf.arm_plan(0.35, 0.05, sweep=False)
    assert [pl.arm for pl in plans] == [superhf.shf_arm(0.0), superhf.shf_arm(0.35), superhf.ppo_arm(0.05)]
    assert [pl.kind for pl in plans] == ["superhf", "superhf", "ppo"] and plans[1].coef == 0.35
    assert superhf.shf_arm(0.35) == Arm("superhf_0.35", "SuperHF β_KL=0.35")
    assert len(superhf.arm_plan(0.35, 0.05, sweep=True)) == 4 + 3


def test_decode_marks_relevant_words_and_the_exploit():
    task = lang.TopicTask()
    assert superhf.decode(task, int(task.topic_token(1)), [3, 0, task.bang]) == "W3 w0 !"


# --- the experiment (small overrides; the notebook runs the quick preset) --------------------------------------

TINY = dict(n_iters=2, eval_every=1, n_seeds=1, sft_steps=10, eval_per_topic=2, meteor_pairs=10, progress=False)


def test_a_tiny_run_is_seeded_and_consistent():
    a, b = superhf.run(seed=3, **TINY), superhf.run(seed=3, **TINY)
    assert a.history.equals(b.history)
    h = a.history
    assert set(h["series"]) == {"SuperHF β_KL=0", "SuperHF β_KL=0.35", "PPO c=0.05"}
    assert sorted(set(h["step"])) == [0, 32, 64] and set(h["seed"]) == {3}
    start = h[(h["step"] == 0) & (h["metric"] == "kl_from_init")]
    assert (start["value"].abs() < 1e-6).all()  # every arm starts at π_0
    end = h[(h["step"] == 64)].set_index(["series", "metric"])["value"]
    assert a.metrics["gold_reward"] == pytest.approx(end[("SuperHF β_KL=0.35", "gold_reward")])
    head = a.headline
    assert head is a.claims[0] and head.numbers["PPO"] == pytest.approx(end[("PPO c=0.05", "proxy_reward")])
    assert a.claims[2].numbers["without"] == pytest.approx(end[("SuperHF β_KL=0", "meteor")])
    assert "1 seed, no interval" in str(head)
    assert all(math.isfinite(v) for v in a.metrics.values())
    assert len(a.extras["init"].examples) == 8
    assert {"proxy", "gold", "kl", "bang", "meteor", "hacking", "tradeoff", "gold_vs_kl", "examples"} <= set(a.figures)


def test_two_seeds_give_an_interval():
    r = superhf.run(**{**TINY, "n_seeds": 2, "n_iters": 1})
    assert set(r.history["seed"]) == {0, 1}
    assert all(len(c.values) == 2 and c.interval.has_spread for c in r.claims)


def test_divergence_names_the_arm_and_step(monkeypatch):
    def nan_loss(policy, ref, x, y, beta_kl):
        z = lm.nll_loss(policy, x, y)
        return z * float("nan"), z, z

    monkeypatch.setattr(superhf_method, "superhf_loss", nan_loss)
    with pytest.raises(DivergenceError, match=r"step 0 in 'SuperHF β_KL=0'"):
        superhf.run(**TINY)


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        superhf.run(top_k=20, superbatch=16, progress=False)
    with pytest.raises(ValueError, match="unknown parameter"):
        superhf.run(beta=1.0)
