"""LaMo (05): the DT token layout and causal mask, the losses by hand, returns-to-go, what trains, the claims, runs."""

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.core import params as params_module
from labkit.methods import lamo
from labkit.models.tiny_lm import TinyLM
from labkit.substrates import gridworld as gw
from labkit.substrates.pretrained_lm import QUICK_CONFIG, pretrained_lm


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def small_dt(mlp=True, context=3, lora=True):
    torch.manual_seed(0)
    lm = TinyLM(vocab_size=14, max_len=4, d_model=8, n_layers=1, n_heads=2)
    if lora:
        lm = lamo.lamo_backbone(lm, r=2, alpha=4.0, dropout=0.0)
    return lamo.DecisionTransformer(lm, state_dim=2, n_actions=4, context=context, max_timestep=10, mlp=mlp).eval()


def window(B=2, T=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(B, T, generator=g),
        torch.rand(B, T, 2, generator=g),
        torch.randint(4, (B, T), generator=g),
        torch.arange(T).expand(B, T),
    )


# --- the model ------------------------------------------------------------------------------------------------


def test_token_layout_interleaves_return_state_action():
    dt = small_dt()
    R, S, A, t = window()
    x = dt.tokens(R, S, A, t)
    assert x.shape == (2, 9, 8)
    # token 3t + slot is LN(e_slot(input_t)) + e_time(t) + e_pos(3t + slot), by hand for step t = 1
    d = dt.embed_ln
    time, pos = dt.embed_timestep.weight, dt.embed_position.weight
    r1 = d(dt.embed_return(R[:, 1:2].unsqueeze(-1)))[:, 0] + time[1] + pos[3]
    s1 = d(dt.embed_state(S[:, 1]))[:, :] + time[1] + pos[4]
    a1 = d(dt.embed_action(F.one_hot(A[:, 1], 4).float())) + time[1] + pos[5]
    for got, want in ((x[:, 3], r1), (x[:, 4], s1), (x[:, 5], a1)):
        assert torch.allclose(got, want, atol=1e-6)


def test_causal_mask_action_prediction_never_sees_its_own_action_or_the_future():
    dt = small_dt()
    R, S, A, t = window()
    base = dt(R, S, A, t)
    A2 = A.clone()
    A2[:, 1] = (A[:, 1] + 1) % 4  # change a_1: â_0 and â_1 must not move, â_2 may
    S2, R2 = S.clone(), R.clone()
    S2[:, 2] += 1.0  # and s_2, R̂_2: only â_2 may move
    R2[:, 2] += 1.0
    out = dt(R2, S2, A2, t)
    assert torch.allclose(out[:, :2], base[:, :2], atol=1e-6)
    assert not torch.allclose(out[:, 2], base[:, 2], atol=1e-4)
    # and â_1 does depend on s_1 and R̂_1 (what it reads)
    S3 = S.clone()
    S3[:, 1] += 1.0
    assert not torch.allclose(dt(R, S3, A, t)[:, 1], base[:, 1], atol=1e-4)


def test_residual_mlp_embedding_and_head_by_hand():
    emb = lamo.ResidualMLP(2, 3)
    x = torch.tensor([[0.5, -1.0]])
    h = x @ emb.w1.weight.T + emb.w1.bias
    want = F.gelu(h) @ emb.w2.weight.T + emb.w2.bias + h
    assert torch.allclose(emb(x), want, atol=1e-6)
    head = lamo.MLPHead(3, 4)
    z = torch.tensor([[1.0, 0.0, -2.0]])
    want = F.gelu(z @ head.w3.weight.T + head.w3.bias) @ head.w4.weight.T + head.w4.bias
    assert torch.allclose(head(z), want, atol=1e-6)


def test_position_table_starts_with_the_lms_pretrained_positions():
    lm = pretrained_lm(QUICK_CONFIG, progress=False)
    dt = lamo.DecisionTransformer(lamo.lamo_backbone(lm, 4, 8.0, 0.0), 2, 4, context=10, max_timestep=30)
    assert dt.embed_position.weight.shape == (30, 64)
    assert torch.equal(dt.embed_position.weight[:12], lm.pos.weight)


def test_only_lora_embeddings_and_head_train_in_lamo():
    lm = pretrained_lm(QUICK_CONFIG, progress=False)
    dt = lamo.DecisionTransformer(lamo.lamo_backbone(lm, 8, 16.0, 0.1), 2, 4, context=5, max_timestep=30)
    trainable = [n for n, p in dt.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n) or n.startswith(("embed_", "predict_")) for n in trainable)
    assert sum("lora_" in n for n in trainable) == 2 * 2  # A and B on the qkv of each of the 2 blocks
    frozen = [n for n, p in dt.named_parameters() if not p.requires_grad]
    assert any("ln1" in n for n in frozen) and any(n.startswith("lm.tok") for n in frozen)  # LNs, embeddings frozen
    # the DT from scratch trains everything
    scratch = small_dt(mlp=False, lora=False)
    assert all(p.requires_grad for p in scratch.parameters())
    # training moves LoRA and the new modules only
    before = {n: p.detach().clone() for n, p in dt.named_parameters()}
    mdp = lamo.make_world()
    data = lamo.offline_data(mdp, 4, 0.5, seed=0)
    text = torch.zeros(0)
    lamo.train_dt(dt, lamo.trajectories(mdp, data, 5), text, steps=3, batch_size=4, text_batch=2, lam=0.0, lr=1e-2,
                  lm_lr=1e-2, weight_decay=0.0, warmup=0, clip=1.0, generator=torch.Generator().manual_seed(0),
                  text_generator=torch.Generator().manual_seed(1))  # fmt: skip
    for n, p in dt.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), n  # the LM's weights never move
    moved = {n for n, p in dt.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in moved) and any(n.startswith("embed_state") for n in moved)


def test_lora_matches_peft_on_the_merged_qkv():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    lm = TinyLM(vocab_size=14, max_len=6, d_model=8, n_layers=1, n_heads=2)
    ours = lamo.lamo_backbone(lm, r=2, alpha=4.0, dropout=0.0)
    cfg = peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["qkv"])
    theirs = peft.get_peft_model(copy.deepcopy(lm), cfg)  # the same base weights
    layer = theirs.base_model.model.blocks[0].attn.qkv
    mine = ours.blocks[0].attn.qkv
    with torch.no_grad():
        mine.lora_B.normal_()
        layer.lora_A["default"].weight.copy_(mine.lora_A)
        layer.lora_B["default"].weight.copy_(mine.lora_B)
    x = torch.randn(3, 5, 8)
    assert torch.allclose(mine(x), layer(x), atol=1e-5)


# --- the losses -----------------------------------------------------------------------------------------------


def test_action_loss_by_hand_ignores_padding():
    logits = torch.tensor([[[math.log(3.0), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # (1, 2, 4)
    actions = torch.tensor([[0, 2]])
    # step 0: p(a=0) = 3/6 → −log 0.5; step 1 padded
    loss = lamo.action_loss(logits, actions, torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    both = lamo.action_loss(logits, actions, torch.tensor([[True, True]]))
    assert both.item() == pytest.approx((math.log(2.0) + math.log(4.0)) / 2, abs=1e-6)


def test_language_loss_by_hand_and_the_total():
    class Fixed(torch.nn.Module):  # logits that ignore the input: p = softmax([log 1, log 3]) = (1/4, 3/4)
        def forward(self, tokens):
            return torch.log(torch.tensor([1.0, 3.0])).expand(*tokens.shape, 2)

    prompts, answers = torch.tensor([[0, 1]]), torch.tensor([[1, 0, 0]])
    mask = torch.tensor([[True, True, False]])
    # answer tokens 1 then 0 (the third is padding): −(log 3/4 + log 1/4)/2
    lm = lamo.language_loss(Fixed(), prompts, answers, mask)
    assert lm.item() == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2, abs=1e-6)
    assert lamo.lamo_loss(torch.tensor(1.0), lm, 0.1).item() == pytest.approx(1.0 + 0.1 * lm.item(), abs=1e-6)
    assert lamo.lamo_loss(torch.tensor(1.0), lm, 0.0).item() == 1.0


# --- data and rollouts ----------------------------------------------------------------------------------------


def test_returns_to_go_and_windows_by_hand():
    mdp = lamo.make_world()
    data = lamo.offline_data(mdp, 6, 0.5, seed=3)
    rtg = data.returns_to_go()
    for i in range(data.n_episodes):
        ep = data.episode(i)
        # R̂_t = Σ_{t' ≥ t} r_t' (γ = 1): the episode's return at every step when the only reward is the last one
        assert rtg[data.episode_offsets[i] : data.episode_offsets[i + 1]] == pytest.approx(
            np.cumsum(ep.rewards[::-1])[::-1], abs=1e-6
        )
    traj = lamo.Trajectories.from_episodes(
        np.array([3.0, 2.0, 1.0, 5.0]), np.arange(8.0).reshape(4, 2), np.array([1, 2, 3, 0]), [3, 1], context=2
    )
    assert traj.returns.tolist() == [[3.0, 2.0, 1.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0, 0.0]]
    R, S, A, t, mask = traj.sample(64, 2, torch.Generator().manual_seed(0))
    assert mask[:, 0].all()  # windows start on a real step
    starts = {(r, m) for r, m in zip(R[:, 0].tolist(), mask[:, 1].tolist())}
    assert starts == {(3.0, True), (2.0, True), (1.0, False), (5.0, False)}  # padded at the end past each episode
    assert (t[~mask] == 0).all()


def test_rollout_lowers_the_return_to_go_and_stops_at_terminals():
    class Always(torch.nn.Module):  # goes right, and records the R̂ it is shown
        context = 2

        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, returns, states, actions, timesteps):
            self.seen.append(returns[:, -1].clone())
            logits = torch.full((*returns.shape, 4), -1e9)
            logits[..., gw.RIGHT] = 0.0
            return logits

    mdp = gw.GridWorld.from_holes(3, [], slip=0.0, horizon=5)  # S . . / . . . / . . G
    model = Always()

    def step(s, a):  # deterministic: right, then down at the right wall
        nxt = np.array([mdp._move(int(x), gw.RIGHT if int(x) % 3 < 2 else gw.DOWN) for x in s])
        return nxt, (nxt == mdp.goal).astype(float), mdp.terminal[nxt]

    out = lamo.rollout(model, np.array([0, 0]), step, mdp.coordinates, target_return=1.0, horizon=5)
    assert out.returns.tolist() == [1.0, 1.0] and out.lengths.tolist() == [4, 4]
    assert out.states[0].tolist() == [0, 1, 2, 5, 8]
    assert [float(r[0]) for r in model.seen] == [1.0, 1.0, 1.0, 1.0]  # no reward until G is entered


# --- the claims -----------------------------------------------------------------------------------------------


def test_headline_claim_three_ways():
    dt = np.full(4, 50.0)
    holds = lamo.beats_dt_claim(dt + np.array([5.0, 6.0, 4.0, 5.5]), dt)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == 0.0
    assert lamo.beats_dt_claim(dt - np.array([5.0, 6.0, 4.0, 5.5]), dt).verdict is Verdict.DOES_NOT_HOLD
    assert lamo.beats_dt_claim(dt + np.array([9.0, -9.0, 5.0, -4.0]), dt).verdict is Verdict.INCONCLUSIVE
    nan = lamo.beats_dt_claim([60.0, float("nan"), 55.0], [50.0] * 3)
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail


def test_non_inferiority_claim_three_ways():
    dt = np.full(3, 50.0)
    assert lamo.non_inferiority_claim(dt - np.array([1.0, 2.0, 1.5]), dt).verdict is Verdict.HOLDS  # −1.5 ≥ −5
    assert lamo.non_inferiority_claim(dt - np.array([9.0, 10.0, 11.0]), dt).verdict is Verdict.DOES_NOT_HOLD
    assert lamo.non_inferiority_claim(dt + np.array([8.0, -20.0, 1.0]), dt).verdict is Verdict.INCONCLUSIVE
    assert lamo.non_inferiority_claim([float("inf")] * 3, dt).verdict is Verdict.INCONCLUSIVE


def test_language_claims_three_ways():
    assert lamo.retention_claim([0.01, 0.02, 0.0], 0.1).verdict is Verdict.HOLDS
    assert lamo.retention_claim([0.5, 0.6, 0.55], 0.1).verdict is Verdict.DOES_NOT_HOLD
    assert lamo.retention_claim([0.0, 0.4, -0.2], 0.1).verdict is Verdict.INCONCLUSIVE
    assert lamo.retention_claim([0.0, float("nan"), 0.0], 0.1).verdict is Verdict.INCONCLUSIVE
    forget = lamo.forgetting_claim([0.5, 0.4, 0.45], [0.01, 0.02, 0.0])
    assert forget.verdict is Verdict.HOLDS and forget.numbers["rise λ=0"] == pytest.approx(0.45)
    assert lamo.forgetting_claim([0.01, 0.02, 0.0], [0.05, 0.06, 0.04]).verdict is Verdict.DOES_NOT_HOLD
    assert lamo.forgetting_claim([0.9, -0.5, 0.1], [0.0, 0.0, 0.0]).verdict is Verdict.INCONCLUSIVE
    assert lamo.forgetting_claim([float("nan")] * 3, [0.0] * 3).verdict is Verdict.INCONCLUSIVE


def test_pretraining_claim_three_ways():
    rand = np.full(3, 40.0)
    assert lamo.pretraining_claim(rand + np.array([3.0, 4.0, 5.0]), rand).verdict is Verdict.HOLDS
    assert lamo.pretraining_claim(rand - np.array([3.0, 4.0, 5.0]), rand).verdict is Verdict.DOES_NOT_HOLD
    assert lamo.pretraining_claim(rand + np.array([10.0, -10.0, 1.0]), rand).verdict is Verdict.INCONCLUSIVE
    assert lamo.pretraining_claim([float("nan")] * 3, rand).verdict is Verdict.INCONCLUSIVE


# --- knobs, divergence and runs -------------------------------------------------------------------------------


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="warmup"):
        lamo.run(n_steps=5, warmup=10, log_every=5)
    with pytest.raises(ValueError, match="log_every"):
        lamo.run(n_steps=5, warmup=0, log_every=10)
    with pytest.raises(ValueError, match="lam"):
        lamo.run(lam=-1.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        lamo.run(lamda=0.1)


def test_a_huge_learning_rate_raises_divergence_naming_the_arm(monkeypatch):
    """Through run() (the front end refuses lr=1e12, so only the range check is lifted)."""
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    with pytest.raises(DivergenceError, match=re.escape("'LaMo seed 0")):
        lamo.run(lr=1e12, lm_lr=1e12, n_steps=4, warmup=0, log_every=1, n_seeds=1, eval_episodes=2, progress=False,
                 record=False)  # fmt: skip


def test_small_run_has_a_headline_and_consistent_numbers():
    result = lamo.run(n_steps=6, warmup=2, log_every=3, n_episodes=4, eval_episodes=8, progress=False, record=False)
    assert isinstance(result, Result) and result.claims[0].headline
    assert [c.headline for c in result.claims] == [True, False, False, False, False]
    arms = {o.arm.key: o for o in result.extras["arms"]}
    assert set(arms) == {"lamo", "lamo_lam0", "dt", "lamo_random"}
    gap = np.array(arms["lamo"].normalised_return) - np.array(arms["dt"].normalised_return)
    assert result.claims[0].values == pytest.approx(tuple(gap), abs=1e-9)
    assert result.metrics["gain_lamo_minus_dt"] == pytest.approx(gap.mean(), abs=1e-9)
    assert arms["lamo"].trainable < arms["dt"].trainable
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert set(result.history["metric"]) == {"action_loss", "lm_held_out"}
    assert {"return", "action_loss", "lm_loss", "rollout", "trainable"} <= set(result.figures)


@pytest.mark.slow
def test_quick_preset_run():
    result = lamo.run(preset="quick", progress=False, record=False)
    assert len(result.claims) == 5 and result.claims[0].interval.n == 3
    assert all(math.isfinite(v) for v in result.metrics.values())


def test_method_file_is_the_paper_only():
    source = (Path(lamo.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2310.20587" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment", "figures"):
        assert banned not in source
