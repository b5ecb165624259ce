"""NetLLM (09) and the ABR substrate: the simulator's download/stall/buffer/QoE on hand cases, each classic rule's
decision on a hand case, MPC against a brute-force oracle, the losses and returns-to-go by hand, which parameters
DD-LRNA trains, one forward pass per decision, the claims three ways, divergence, bad knobs, and runs."""

import itertools
import math

import numpy as np
import pytest
import torch

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.core.store import RunStore
from labkit.methods import netllm
from labkit.methods.netllm import method as M
from labkit.substrates import abr
from labkit.substrates.pretrained_lm import QUICK_CONFIG, new_model, pretrained_lm

RATES = np.array([0.3, 0.75, 1.2, 1.85, 2.85, 4.3])


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def exact_video(n_chunks: int = 3) -> abr.Video:
    """Chunk sizes exactly R·4 s (no noise)."""
    return abr.Video(np.tile(RATES * 4.0, (n_chunks, 1)))


# --- the simulator -------------------------------------------------------------------------------------------


def test_three_chunks_on_a_constant_trace_by_hand():
    # 2 Mbit/s; levels 0, 2, 5; sizes 1.2, 4.8, 17.2 Mbit; d = S/2 + 0.08
    player = abr.Player(exact_video(), abr.constant_traces([2.0]))
    s0, s1, s2 = (player.step([lv]) for lv in (0, 2, 5))
    # chunk 0: d = 0.68 s (startup, no stall), b = 4, q = 0.3 (no smoothness term)
    assert (s0.download_s[0], s0.rebuffer_s[0], s0.buffer_s[0], s0.qoe[0]) == pytest.approx((0.68, 0.0, 4.0, 0.3))
    # chunk 1: d = 2.48 < b = 4: no stall, b = 4 − 2.48 + 4 = 5.52, q = 1.2 − |1.2 − 0.3| = 0.3
    assert (s1.download_s[0], s1.rebuffer_s[0], s1.buffer_s[0], s1.qoe[0]) == pytest.approx((2.48, 0.0, 5.52, 0.3))
    # chunk 2: d = 8.68 > b = 5.52: stall 3.16 s, b = 0 + 4, q = 4.3 − 4.3·3.16 − 3.1 = −12.388
    assert (s2.download_s[0], s2.rebuffer_s[0], s2.buffer_s[0]) == pytest.approx((8.68, 3.16, 4.0))
    assert s2.qoe[0] == pytest.approx(4.3 - 4.3 * 3.16 - 3.1)
    assert s2.smooth_mbps[0] == pytest.approx(3.1)
    assert player.t[0] == pytest.approx(0.68 + 2.48 + 8.68)  # the clock ran through every download
    with pytest.raises(RuntimeError, match="over"):
        player.step([0])


def test_a_full_buffer_makes_the_player_wait():
    player = abr.Player(exact_video(), abr.constant_traces([100.0]))
    player.step([0])
    player.buffer[:] = 58.0
    t0 = player.t.copy()
    step = player.step([0])  # d = 1.2/100 + 0.08 = 0.092; b = 58 − 0.092 + 4 = 61.908 → wait 1.908 s
    assert step.wait_s[0] == pytest.approx(1.908)
    assert step.buffer_s[0] == pytest.approx(60.0)
    assert player.t[0] - t0[0] == pytest.approx(2.0)


def test_downloads_integrate_a_varying_trace_and_wrap_around():
    # slots of 1 s at 1 then 3 Mbit/s, repeated: 4 Mbit per 2-s period
    traces = abr.Traces(np.array([[1.0, 3.0]]), np.zeros(1))
    player = abr.Player(abr.Video(np.full((2, 6), 4.0)), traces)
    assert player.delivered(np.array([1.5]))[0] == pytest.approx(2.5)
    assert player.delivered(np.array([2.5]))[0] == pytest.approx(4.5)
    assert player.time_when_delivered(np.array([2.5]))[0] == pytest.approx(1.5)
    assert player.time_when_delivered(np.array([8.0 + 1.0]))[0] == pytest.approx(5.0)
    # 4 Mbit requested at t = 0: bits flow from 0.08 s, so they are complete at 2.08 s (one period later)
    step = player.step([0])
    assert step.download_s[0] == pytest.approx(2.08)


def test_pensieve_state_after_one_chunk():
    video = exact_video()
    player = abr.Player(video, abr.constant_traces([2.0]))
    player.step([2])  # 4.8 Mbit in 2.48 s
    s = player.observe().state[0]
    assert s[0, -1] == pytest.approx(1.2 / 4.3)  # last bitrate / 4.3
    assert s[1, -1] == pytest.approx(0.4)  # buffer 4 s / 10
    assert s[2, -1] == pytest.approx(4.8 / 2.48 / 8)  # MB/s
    assert s[3, -1] == pytest.approx(0.248)  # download time / 10 s
    assert s[4] == pytest.approx(video.sizes_mb[1] / 8)  # next chunk's sizes in MB
    assert s[5, -1] == pytest.approx(2 / 48)
    assert (s[:, :-1][[0, 1, 2, 3, 5]] == 0).all()  # history starts empty


def test_unseen_traces_have_twice_the_variance_of_log_throughput():
    seen = abr.make_traces(np.random.default_rng(0), 200)
    unseen = abr.make_traces(np.random.default_rng(0), 200, variance_scale=2.0)
    ratio = np.log(unseen.mbps).var(axis=1).mean() / np.log(seen.mbps).var(axis=1).mean()
    assert 1.6 < ratio < 2.4
    assert 1.5 < seen.mbps.mean() < 2.5  # per-trace means U(1, 3) Mbit/s


# --- the classic rules -------------------------------------------------------------------------------------------


def test_bba_reservoir_and_cushion():
    buffers = [0.0, 4.9, 5.0, 10.0, 14.9, 15.0, 30.0]
    # ⌊5·(b − 5)/10⌋ between the reservoir (5 s) and reservoir + cushion (15 s)
    assert abr.bba_level(buffers).tolist() == [0, 0, 0, 2, 4, 5, 5]


def test_rate_based_uses_the_harmonic_mean_of_the_last_five():
    history = np.array([[100.0, 1.0, 2.0, 4.0, 4.0, 4.0]])  # the 100 is the sixth-last: left out
    est = abr.harmonic_mean(history)
    assert est[0] == pytest.approx(5 / (1 + 0.5 + 0.25 * 3))
    assert abr.rate_level(est).tolist() == [3]  # 2.22 Mbit/s: 1.85 fits, 2.85 does not
    assert abr.rate_level(abr.harmonic_mean(np.zeros((2, 0)))).tolist() == [0, 0]  # no history: lowest
    assert abr.rate_level(np.array([0.1])).tolist() == [0]


def test_mpc_scores_a_plan_by_hand():
    sizes = np.tile(RATES * 4.0, (2, 1))
    # buffer 2 s, last level 0, estimate 1 Mbit/s, plan (1, 0): chunk 1 takes 3 s → stall 1 s, b = 4;
    # chunk 2 takes 1.2 s, b = 6.8. q = (0.75 − 4.3 − 0.45) + (0.3 − 0 − 0.45) = −4.15
    score = abr.plan_scores(np.array([2.0]), np.array([0]), np.array([1.0]), sizes, np.array([[1, 0]]))
    assert score[0, 0] == pytest.approx(-4.15)


def test_mpc_picks_the_best_of_all_enumerated_plans():
    rng = np.random.default_rng(3)
    sizes = RATES * 4.0 * rng.uniform(0.9, 1.1, size=(2, 6))
    buffers, lasts, ests = np.array([1.0, 6.0, 20.0]), np.array([0, 3, 5]), np.array([0.8, 2.5, 6.0])

    def oracle(b0, last, est):  # plain-Python enumeration of the 36 plans
        best, first = -math.inf, None
        for plan in itertools.product(range(6), repeat=2):
            b, prev, total = b0, RATES[last], 0.0
            for j, lv in enumerate(plan):
                d = sizes[j, lv] / est
                total += RATES[lv] - 4.3 * max(d - b, 0) - abs(RATES[lv] - prev)
                b, prev = max(b - d, 0) + 4, RATES[lv]
            if total > best + 1e-12:
                best, first = total, plan[0]
        return first

    scores = abr.plan_scores(buffers, lasts, ests, sizes, abr.all_plans(2))
    chosen = abr.all_plans(2)[scores.argmax(axis=1), 0]
    assert chosen.tolist() == [oracle(*args) for args in zip(buffers, lasts, ests)]
    assert len(abr.all_plans(3)) == 216


def test_robust_mpc_discounts_by_its_past_error():
    video = exact_video(4)

    def decisions(robust: bool) -> list[int]:
        mpc = abr.RobustMPC(horizon=1, robust=robust)
        mpc.reset(1)
        out = []
        for chunk, thr in enumerate([[], [4.0], [4.0, 2.0], [4.0, 2.0, 2.0]]):
            obs = abr.Observation(np.zeros((1, 6, 6)), np.array([2.0]), np.array([2]), np.array([thr]), chunk, video)
            out.append(int(mpc.act(obs)[0]))
        # estimates 4, 2.67, 2.4 (harmonic means); errors |4 − 2|/2 = 1, |2.67 − 2|/2 = 0.33
        assert mpc.last_estimate[0] == pytest.approx(3 / (1 / 4 + 1 / 2 + 1 / 2))
        assert [e[0] for e in mpc.errors] == pytest.approx([1.0, 1 / 3])
        return out

    # last chunk, buffer 2 s, last level 2 (1.2 Mbit/s). Robust: Ĉ = 2.4 / (1 + 1) = 1.2, so level 2 downloads in
    # 4 s (2-s stall) and level 0 in 1 s: q = 0.3 − 0.9 = −0.6 beats every other level. Plain: Ĉ = 2.4, level 2
    # downloads in exactly 2 s (no stall), q = 1.2, the best.
    assert decisions(robust=True) == [0, 2, 0, 0]  # chunk 1: no error yet, Ĉ = 4: level 2 fits
    assert decisions(robust=False)[-1] == 2


def test_epsilon_greedy_and_the_pool():
    video = abr.make_video(np.random.default_rng(0), n_chunks=6)
    traces = abr.make_traces(np.random.default_rng(1), 5)
    noisy = abr.EpsilonGreedy(abr.BBA(), 1.0, np.random.default_rng(2))
    assert len(set(abr.rollout(noisy, video, traces).levels.ravel().tolist())) > 3
    plain = abr.rollout(abr.EpsilonGreedy(abr.BBA(), 0.0, np.random.default_rng(2)), video, traces)
    assert (plain.levels == abr.rollout(abr.BBA(), video, traces).levels).all()
    pool = abr.collect_pool({"bba": abr.BBA(), "rate": abr.RateBased()}, video, traces)
    assert pool.states.shape == (5, 6, 6, 6) and pool.source.tolist() == [0, 1, 0, 1, 0]
    bba = abr.rollout(abr.BBA(), video, traces.take([0, 2, 4]))
    assert pool.actions[[0, 2, 4]].tolist() == bba.levels.tolist()
    assert pool.rewards[[0, 2, 4]] == pytest.approx(bba.qoe)


# --- the method ------------------------------------------------------------------------------------------------


def test_losses_by_hand():
    assert M.netllm_loss(torch.zeros(2, 3, 6), torch.zeros(2, 3, dtype=torch.long)).item() == pytest.approx(math.log(6))
    logits = torch.tensor([[[2.0, 0, 0, 0, 0, 0]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 5))
    assert M.netllm_loss(logits, torch.tensor([[0]])).item() == pytest.approx(expected, rel=1e-6)
    # the token answer: digit then ";" over the 14-token vocabulary; uniform logits → log 14
    assert M.token_answer_loss(torch.zeros(1, 2, 2, 14), torch.tensor([[3, 5]])).item() == pytest.approx(math.log(14))
    logits = torch.zeros(1, 1, 2, 14)
    logits[0, 0, 0, 3], logits[0, 0, 1, M.END_TOKEN] = 2.0, 2.0
    loss = M.token_answer_loss(logits, torch.tensor([[3]])).item()
    assert loss == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 13)), rel=1e-6)  # both tokens right


def test_returns_to_go_by_hand():
    # r = [1, −1, 3], min −1, max 3 → r̃ = [0.5, 0, 1], Σ_{t' ≥ t} = [1.5, 1, 1], / scale 0.5
    assert M.returns_to_go(np.array([[1.0, -1.0, 3.0]]), -1.0, 3.0, 0.5).tolist() == [[3.0, 2.0, 2.0]]
    assert M.normalised_rewards(np.array([5.0, -9.0]), -1.0, 3.0).tolist() == [1.0, 0.0]  # clipped


def test_the_backbone_runs_on_embeddings_and_lora_starts_as_the_identity():
    lm = new_model(QUICK_CONFIG)
    tokens = torch.randint(0, 14, (2, 7))
    embeds = lm.tok(tokens) + lm.pos(torch.arange(7))
    assert torch.allclose(M.run_backbone(lm, embeds), lm.hidden(tokens), atol=1e-6)
    adapted = M.low_rank_backbone(lm, r=4, alpha=32, dropout=0.0)
    assert torch.allclose(M.run_backbone(adapted, embeds), lm.hidden(tokens), atol=1e-6)  # B = 0 at the start
    assert all(p.requires_grad for p in lm.parameters())  # the original is untouched (a deep copy was adapted)
    names = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert names and all(n.endswith(("lora_A", "lora_B")) and ".attn.qkv." in n for n in names)


def tiny_pool(n_episodes: int = 6, seed: int = 0):
    video = abr.make_video(np.random.default_rng(seed))
    traces = abr.make_traces(np.random.default_rng(seed + 1), n_episodes)
    pool = abr.collect_pool({"bba": abr.BBA(), "rate": abr.RateBased()}, video, traces)
    r_min, r_max = float(pool.rewards.min()), float(pool.rewards.max())
    data = M.Trajectories(
        torch.as_tensor(pool.states), torch.as_tensor(pool.actions), M.returns_to_go(pool.rewards, r_min, r_max, 10)
    )
    return video, traces, data, r_min, r_max


def make_policy(answer=M.NETWORKING_HEAD, lm=None):
    torch.manual_seed(0)
    lm = pretrained_lm(progress=False) if lm is None else lm
    return M.NetLLMPolicy(M.low_rank_backbone(lm, r=4, alpha=32, dropout=0.05), feature_dim=8, answer=answer)


def train(policy, data, lr=1e-2, steps=3, on_step=None):
    return M.dd_lrna(
        policy, data, steps=steps, batch_size=4, window=3, lr=lr, weight_decay=1e-4, warmup=1, clip=0.25,
        generator=torch.Generator().manual_seed(0), on_step=on_step,
    )  # fmt: skip


def test_dd_lrna_trains_only_lora_encoder_embeddings_and_head():
    _, _, data, _, _ = tiny_pool()
    policy = make_policy()
    frozen = {n: p.detach().clone() for n, p in policy.backbone.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    assert all(n.startswith(("encoder.", "embed_", "head.")) or n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert "backbone.head.weight" not in trainable and "backbone.blocks.0.mlp.0.weight" not in trainable
    losses = train(policy, data)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert all(torch.equal(p, frozen[n]) for n, p in policy.backbone.named_parameters() if n in frozen)
    moved = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert any(n.endswith("lora_B") for n in moved) and any(n.startswith("encoder.") for n in moved)
    assert any(n.startswith("head.") for n in moved)


def test_the_state_token_answers_and_the_action_token_of_the_same_step_is_not_seen():
    _, _, data, _, _ = tiny_pool()
    policy = make_policy().eval()
    states, actions, returns, t = data.windows(torch.tensor([0]), torch.tensor([2]), 3)
    other = actions.clone()
    other[0, -1] = (actions[0, -1] + 3) % 6  # change the LAST step's action only
    with torch.no_grad():
        a, b = policy(states, actions, returns, t), policy(states, other, returns, t)
    assert a.shape == (1, 3, 6)
    assert torch.equal(a[0, -1], b[0, -1])  # a_t cannot leak into its own prediction (offset 6 of 8)


def test_networking_head_one_forward_per_chunk_and_token_answer_two():
    video, traces, data, r_min, r_max = tiny_pool()
    head = M.NetLLMAgent(make_policy().eval(), 3, 4.0, r_min, r_max, 10)
    episodes = abr.rollout(head, video, traces)
    assert head.forwards == video.n_chunks and head.decisions == video.n_chunks * traces.n
    assert episodes.levels.min() >= 0 and episodes.levels.max() < 6  # every answer is a bitrate
    tokens = M.NetLLMAgent(make_policy(M.TOKEN_ANSWER).eval(), 3, 4.0, r_min, r_max, 10)
    abr.rollout(tokens, video, traces)
    assert tokens.forwards == 2 * video.n_chunks
    assert 0 <= tokens.invalid <= tokens.decisions
    # untrained, the LM writes what arithmetic taught it, not "ℓ;": most answers are invalid
    assert tokens.invalid > 0


def test_a_huge_learning_rate_diverges_in_the_loop():
    from labkit.core import check_finite, check_weights

    _, _, data, _, _ = tiny_pool()
    policy = make_policy()

    def on_step(step, loss):
        check_finite(loss, step, "NetLLM")
        check_weights(policy, step, "NetLLM")

    with pytest.raises(DivergenceError, match=r"at step \d+ in 'NetLLM'"):
        train(policy, data, lr=1e12, steps=5, on_step=on_step)


# --- the claims ----------------------------------------------------------------------------------------------


def test_claims_pass_fail_and_nan():
    holds = netllm.beats_rules_claim([1.5, 1.6, 1.55], [1.4, 1.45, 1.42])
    assert holds.verdict is Verdict.HOLDS and holds.headline
    assert netllm.beats_rules_claim([1.0, 1.1, 1.05], [1.4, 1.45, 1.42]).verdict is Verdict.DOES_NOT_HOLD
    nan = netllm.beats_rules_claim([1.0, float("nan"), 1.05], [1.4, 1.45, 1.42])
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail
    # rate-based: the card's −0.05 tolerance
    assert netllm.rate_claim([1.0, 1.01, 0.99], [1.03, 1.04, 1.02]).verdict is Verdict.HOLDS
    assert netllm.rate_claim([1.0, 1.01, 0.99], [1.1, 1.11, 1.09]).verdict is Verdict.DOES_NOT_HOLD
    for claim in (netllm.generalises_claim, netllm.pool_claim, netllm.pretraining_claim, netllm.scratch_claim):
        assert claim([1.2, 1.3, 1.25], [1.0, 1.1, 1.05]).verdict is Verdict.HOLDS
        assert claim([0.8, 0.9, 0.85], [1.0, 1.1, 1.05]).verdict is Verdict.DOES_NOT_HOLD
        assert claim([1.0, 1.1, float("nan")], [1.0, 1.1, 1.05]).verdict is Verdict.INCONCLUSIVE
        assert not claim([1.2, 1.3, 1.25], [1.0, 1.1, 1.05]).headline


# --- the experiment ------------------------------------------------------------------------------------------

TINY = dict(
    n_seeds=3, pool_episodes=12, train_steps=4, warmup=1, scratch_steps=4, n_val=2, n_test=3, n_unseen=2,
    window=2, batch_size=4, feature_dim=8, log_every=2, progress=False,
)  # fmt: skip


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="warmup"):
        netllm.run(train_steps=10, warmup=20)
    with pytest.raises(ValueError, match="unknown parameter"):
        netllm.run(windw=3)
    with pytest.raises(ValueError, match="backbone"):
        netllm.run(backbone="gpt2")
    with pytest.raises(ValueError, match="lr"):
        netllm.run(lr=1e12)


def test_a_tiny_run_with_every_arm():
    result = netllm.run(**TINY, no_pretrain=True, token_answer=True, return_sweep=True)
    assert isinstance(result, Result) and result.claims[0].headline
    assert [c.headline for c in result.claims] == [True] + [False] * 5
    m = result.metrics
    assert all(math.isfinite(v) for v in m.values())
    assert m["forwards_per_chunk_netllm"] == 1.0 and m["forwards_per_chunk_token_answer"] == 2.0
    assert 0.0 <= m["invalid_rate_token_answer"] <= 1.0
    assert m["trainable_netllm"] < m["total_params_netllm"]
    outcomes = result.extras["outcomes"]
    assert [o.seed for o in outcomes] == [0, 1, 2]
    for o in outcomes:  # the best rule is chosen on validation traces
        assert o.best_rule == max(("bba", "rate", "mpc"), key=lambda k: o.scores[k].val.mean())
        assert len(o.scores["netllm"].test) == 3 and len(o.scores["netllm"].unseen) == 2
    head = result.claims[0]
    gaps = [o.scores["netllm"].test.mean() - o.scores[o.best_rule].test.mean() for o in outcomes]
    assert head.values == pytest.approx(tuple(gaps), abs=1e-12)
    hist = result.history
    assert set(hist["metric"]) == {"train_loss"} and set(hist["seed"]) == {0, 1, 2}
    assert {"qoe", "qoe_terms", "episode", "loss", "parameters", "return_sweep"} <= set(result.figures)


def test_the_rules_do_not_depend_on_the_learned_arms():
    a = netllm.run(**TINY)
    b = netllm.run(**{**TINY, "train_steps": 6})
    for o, p in zip(a.extras["outcomes"], b.extras["outcomes"]):
        for key in ("bba", "rate", "mpc", "pool"):
            assert np.array_equal(o.scores[key].test, p.scores[key].test)


@pytest.mark.slow
def test_a_huge_learning_rate_stops_the_run_and_records_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'NetLLM \(pre-trained LM \+ LoRA\) \(seed 0\)'"):
        netllm.run("quick", progress=False, record=True, lr=1e12)
    assert len(store.runs()) == 0


@pytest.mark.slow
def test_quick_preset_run():
    result = netllm.run(preset="quick", progress=False)
    assert result.headline is not None and len(result.claims[0].values) == 3
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert result.metrics["forwards_per_chunk_netllm"] == 1.0
