"""ArCHer (13): the dialogue game on hand cases, the critic/actor losses by hand, the claims, divergence, one run."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.core import Result, Verdict, torch_threads
from labkit.core.training import DivergenceError
from labkit.methods import archer
from labkit.substrates import dialogue as dlg

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def utter(op, n):
    return T([[op, int(dlg.number_token(n))]])


# --- the environment ----------------------------------------------------------------------------------------


def test_answers_rewards_and_termination_by_hand():
    env = dlg.GuessMyNumber(1, n_secrets=16, max_turns=8)
    obs, info = env.reset(secrets=T([5]))
    assert obs.shape == (1, 25) and obs[0, -1].item() == dlg.BOS and int(info["secret"]) == 5
    obs, r, term, trunc, _ = env.step(utter(dlg.LT, 9))  # 5 < 9: yes
    assert obs[0, -3:].tolist() == [dlg.LT, int(dlg.number_token(9)), dlg.YES]
    assert r.tolist() == [-1.0] and not term.item() and not trunc.item()
    obs, r, *_ = env.step(utter(dlg.LT, 5))  # 5 < 5: no
    assert obs[0, -1].item() == dlg.NO and r.item() == -1.0
    obs, r, *_ = env.step(utter(dlg.EQ, 4))  # wrong guess: no, −1
    assert obs[0, -1].item() == dlg.NO and r.item() == -1.0
    obs, r, term, trunc, info = env.step(utter(dlg.EQ, 5))  # the win: yes, 0, terminated
    assert obs[0, -1].item() == dlg.YES and r.item() == 0.0 and term.item() and not trunc.item()
    assert bool(info["won"].item()) and dlg.render(obs[0]) == ["< 9 yes", "< 5 no", "= 4 no", "= 5 yes"]
    _, r, term, _, info = env.step(utter(dlg.EQ, 5))  # a finished game ignores actions
    assert r.item() == 0.0 and not term.item() and not info["active"].item()


def test_max_turns_truncates_and_malformed_utterance_is_a_wasted_turn():
    env = dlg.GuessMyNumber(2, n_secrets=4, max_turns=3)
    env.reset(secrets=T([2, 3]))
    malformed = T([[int(dlg.number_token(2)), dlg.EQ], [dlg.LT, dlg.YES]])
    _, r, term, trunc, _ = env.step(malformed)
    assert r.tolist() == [-1.0, -1.0] and not term.any() and not trunc.any()
    assert env.history[:, -1].tolist() == [dlg.NO, dlg.NO]
    total = r.clone()
    for _ in range(2):
        _, r, term, trunc, _ = env.step(T([[dlg.EQ, int(dlg.number_token(1))]] * 2))
        total += r
    assert trunc.tolist() == [True, True] and not term.any() and total.tolist() == [-3.0, -3.0]
    assert env.done.all()


def test_rollout_marks_wins_and_the_turn_limit_as_done():
    # always "= 1": secret 1 wins on turn 1 (d = 1); secret 3 is never found, truncated at turn 2 (d = 1 too)
    env = dlg.GuessMyNumber(2, n_secrets=4, max_turns=2)
    env.reset = lambda seed=None, secrets=None, f=env.reset: f(secrets=T([1, 3]))
    out = dlg.rollout(AlwaysSays(utter(dlg.EQ, 1)[0], state_len=7), env, seed=0)
    t = out.transitions
    assert t.episode.tolist() == [0, 1, 1] and t.rewards.tolist() == [0.0, -1.0, -1.0]
    assert t.dones.tolist() == [1.0, 0.0, 1.0] and out.returns.tolist() == [0.0, -2.0]


def test_binary_search_reaches_the_optimal_return():
    # by hand: f(2) = 1.5 turns ("= lo", then "= hi"), so 16 secrets take 3 + 1.5 turns → return −3.5
    assert dlg.optimal_return(2) == pytest.approx(-0.5)
    assert dlg.optimal_return(16) == pytest.approx(-3.5)
    for n in (4, 8, 16):
        env = dlg.GuessMyNumber(n, n_secrets=n, max_turns=8)
        obs, _ = env.reset(secrets=torch.arange(1, n + 1))
        total = torch.zeros(n)
        for _ in range(8):
            obs, r, *_ = env.step(dlg.binary_search(obs, n))
            total += r
        assert env.won.all() and total.mean().item() == pytest.approx(dlg.optimal_return(n))


def test_policy_sampling_matches_its_logprobs():
    torch.manual_seed(0)
    policy = archer.experiment.TinyGRULM(dlg.vocab_size(4))
    states = dlg.GuessMyNumber(3, 4, 2).reset(seed=0)[0]
    a = dlg.sample_utterances(policy, states, greedy=True)
    full = policy(torch.cat([states, a], 1)).log_softmax(-1)
    assert a[:, 0].tolist() == full[:, -3].argmax(-1).tolist() and a[:, 1].tolist() == full[:, -2].argmax(-1).tolist()
    by_hand = full[:, -3].gather(1, a[:, :1]).squeeze(1) + full[:, -2].gather(1, a[:, 1:]).squeeze(1)
    assert dlg.utterance_logprobs(policy, states, a).tolist() == pytest.approx(by_hand.tolist(), abs=1e-5)


# --- the losses and update rules by hand -------------------------------------------------------------------


def test_q_loss_by_hand():
    # y = r + γ(1 − d)V̄_k(s'): row 1: −1 + 0.5·(−2, −4) = (−2, −3); row 2 (d = 1): (0, 0)
    q = T([[-1.0, -3.0], [1.0, 0.0]])
    loss = archer.q_loss(q, T([-1.0, 0.0]), T([0.0, 1.0]), T([[-2.0, -4.0], [5.0, 5.0]]), gamma=0.5)
    # head 1: ((−1+2)² + 1²)/2 = 1; head 2: ((−3+3)² + 0²)/2 = 0
    assert loss.item() == pytest.approx(1.0)


def test_v_loss_and_advantage_by_hand():
    v = T([[0.0, 1.0]], requires_grad=True)
    loss = archer.v_loss(v, T([[2.0, 1.0]]))
    assert loss.item() == pytest.approx(4.0)
    loss.backward()
    assert v.grad.tolist() == [[-4.0, 0.0]]
    # A = min(3, 1) − min(0, −2) = 3
    assert archer.advantage(T([[3.0, 1.0]]), T([[0.0, -2.0]])).tolist() == [3.0]


def test_actor_loss_by_hand_and_its_gradient():
    logp = T([-1.0, -2.0], requires_grad=True)
    loss = archer.actor_loss(T([2.0, -1.0]), logp)
    assert loss.item() == pytest.approx(-(2 * -1 + -1 * -2) / 2)
    loss.backward()
    assert logp.grad.tolist() == [-1.0, 0.5]  # −A/B: pushes up a positive-advantage utterance


def test_soft_update_is_polyak():
    online, target = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        online.weight.fill_(1.0), target.weight.fill_(0.0)
    archer.soft_update(target, online, tau=0.1)
    assert target.weight.item() == pytest.approx(0.1)


def test_reinforce_loss_by_hand():
    logp = T([-3.0, -1.0], requires_grad=True)
    loss = archer.reinforce_loss(T([-8.0, -4.0]), logp)  # G − mean G = (−2, 2)
    assert loss.item() == pytest.approx(-(-2 * -3 + 2 * -1) / 2)


class AlwaysSays(torch.nn.Module):
    """A deterministic policy that always speaks the utterance ``a (2,)`` (any causal LM's interface)."""

    def __init__(self, a, state_len: int = 25):
        super().__init__()
        self.a, self.vocab, self.state_len = a, int(a.max()) + 1, state_len

    def forward(self, seq):
        logits = torch.zeros(len(seq), seq.shape[1], self.vocab)
        logits[:, -1, self.a[0 if seq.shape[1] == self.state_len else 1]] = 50.0  # the state, then op, then n
        return logits


def test_critic_learns_a_two_state_chain():
    # s0 --a--> s1 (r = −1) --a--> end (r = 0, d = 1): Q(s0) = −1 + γ·0 = −1, Q(s1) = 0 under any policy
    torch.manual_seed(0)
    n, gamma = 4, 0.9
    s0 = dlg.GuessMyNumber(1, n, 8).reset(secrets=T([1]))[0]
    env = dlg.GuessMyNumber(1, n, 8)
    env.reset(secrets=T([1]))
    s1, *_ = env.step(utter(dlg.LT, 2))
    a = utter(dlg.LT, 2)
    batch = dlg.Transitions(torch.cat([s0, s1]), torch.cat([a, a]), T([-1.0, 0.0]), torch.cat([s1, s1]),
                            T([0.0, 1.0]), T([0, 0]))  # fmt: skip
    critic = archer.UtteranceCritic(dlg.vocab_size(n))
    target = archer.experiment.copy.deepcopy(critic)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        archer.critic_step(critic, target, opt, batch, AlwaysSays(a[0]), gamma, 0.1, 1.0, gen)
    q = critic.q(batch.states, batch.actions).detach().flatten().tolist()
    v = critic.v(batch.states).detach().flatten().tolist()
    assert q == pytest.approx([-1, -1, 0, 0], abs=0.05) and v == pytest.approx([-1, -1, 0, 0], abs=0.05)


def test_replay_buffer_keeps_the_latest_rows():
    buf = archer.ReplayBuffer(capacity=3)
    for k in range(2):
        rows = T([float(2 * k), float(2 * k + 1)])
        buf.add(dlg.Transitions(torch.zeros(2, 1), torch.zeros(2, 2), rows, torch.zeros(2, 1), rows, rows))
    assert len(buf) == 3 and buf.rows[2].tolist() == [1.0, 2.0, 3.0]


# --- claims, knobs, divergence and a run --------------------------------------------------------------------


def test_sample_efficiency_claim_three_ways():
    base = np.array([-7.0, -7.2, -6.8])
    holds = archer.sample_efficiency_claim(base + [1.0, 1.1, 0.9], base)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == archer.AUC_MARGIN
    assert archer.sample_efficiency_claim(base + 0.1, base).verdict is Verdict.DOES_NOT_HOLD
    assert archer.sample_efficiency_claim(base + [3.0, -2.0, 0.5], base).verdict is Verdict.INCONCLUSIVE
    nan = archer.sample_efficiency_claim(base + [1.0, 1.0, float("nan")], base)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_final_return_and_filtered_bc_claims_three_ways():
    assert archer.final_return_claim([-5.0, -4.5, -5.2]).verdict is Verdict.HOLDS
    assert archer.final_return_claim([-7.5, -7.7, -7.6]).verdict is Verdict.DOES_NOT_HOLD
    assert archer.final_return_claim([-7.5, float("nan"), -7.6]).verdict is Verdict.INCONCLUSIVE
    base = np.array([-7.0, -7.2, -6.8])
    assert archer.filtered_bc_claim(base + 1.0, base).verdict is Verdict.HOLDS
    assert archer.filtered_bc_claim(base - 1.0, base).verdict is Verdict.DOES_NOT_HOLD


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="warmup"):
        archer.run(iterations=5, warmup=5)
    with pytest.raises(ValueError, match="eval_every"):
        archer.run(iterations=4, eval_every=5, warmup=1)
    with pytest.raises(ValueError, match="unknown parameter"):
        archer.run(critic_stepz=3)


def test_huge_learning_rate_raises_divergence_naming_the_arm():
    p = archer.Knobs(iterations=6, warmup=1, bc_steps=0, eval_every=1)
    policy = archer.warm_start(p, seed=0)
    env = dlg.GuessMyNumber(8, p.n_secrets, p.max_turns)
    monitor = archer.divergence_monitor("ArCHer", every=1)
    cfg = archer.archer_config(p, critic_lr=1e12, actor_lr=1e12)
    with pytest.raises(DivergenceError, match="ArCHer (q|v|actor|critic|policy)"):
        archer.train_archer(policy, env, cfg, seed=0, monitor=monitor)


@pytest.mark.slow
def test_quick_run_has_a_headline_and_consistent_metrics():
    result = archer.run(iterations=6, warmup=2, eval_every=3, bc_steps=20, eval_games=32, progress=False)
    m = result.metrics
    assert isinstance(result, Result) and [c.headline for c in result.claims] == [True, False, False]
    assert all(math.isfinite(v) for v in m.values())
    hist = result.history
    assert set(hist["series"]) == {a.label for a in archer.ARMS} and set(hist["seed"]) == {0, 1, 2}
    arms = {a.arm.key: a for a in result.extras["arms"]}
    gap = [c1.auc - c2.auc for c1, c2 in zip(arms["archer"].curves, arms["reinforce"].curves)]
    assert result.claims[0].values == pytest.approx(tuple(gap))
    assert arms["archer"].curves[0].episodes == (0, 96, 192)
    assert {"return", "success", "critic_values", "advantage_map"} <= set(result.figures)


def test_method_file_is_the_paper_only():
    source = (Path(archer.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2402.19446" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment"):
        assert banned not in source
