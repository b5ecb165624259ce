"""FRUGAL (10): the optimizer against torch's AdamW and SGD and against galore-torch, hand cases of the projections,
the residual and the reset, the measured state against the formula, the Markov data, the claims, one quick run."""

import copy
import math
import re
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from labkit.core import DivergenceError, Result, Verdict, check_finite, check_weights, torch_threads
from labkit.data.markov import MarkovChain, make_markov_data, sample_sequences, true_nll
from labkit.methods import frugal
from labkit.models.tiny_lm import TinyLM

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def tiny_model(seed=0, d=16, layers=1, vocab=11, length=6):
    torch.manual_seed(seed)
    return TinyLM(vocab, length, d_model=d, n_layers=layers, n_heads=2)


def train_steps(model, opt, n, seed=0, vocab=11, length=6):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randint(vocab, (5, length), generator=gen)
        opt.zero_grad()
        frugal.next_token_loss(model, x).backward()
        opt.step()


# --- the optimizer at its two ends: ρ = 1 is AdamW, ρ = 0 with the SGD rule is SGD ------------------------------


def test_rho_one_with_blocks_reproduces_torch_adamw_bit_for_bit():
    a, b = tiny_model(), tiny_model()
    adamw = torch.optim.AdamW(a.parameters(), lr=0.01, weight_decay=0.1, foreach=False)
    opt = frugal.Frugal(
        frugal.frugal_param_groups(b), lr=0.01, weight_decay=0.1, rho=1.0, projection="blocks", update_gap=100
    )
    train_steps(a, adamw, 6)
    train_steps(b, opt, 6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.head.weight, tiny_model().head.weight)  # it did train


def test_rho_one_with_columns_reproduces_adamw_to_rounding():
    # every column in the subspace, in a random order: the same per-coordinate Adam through gather/scatter (one
    # matrix and a fixed gradient sequence, so rounding is not fed back through a model)
    gen = torch.Generator().manual_seed(2)
    W0 = torch.randn(6, 9, generator=gen)
    grads = [torch.randn(6, 9, generator=gen) for _ in range(6)]
    a, b = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    adamw = torch.optim.AdamW([a], lr=0.01, weight_decay=0.1, foreach=False)
    opt = frugal.Frugal(
        [{"params": [b], "projectable": True}], lr=0.01, weight_decay=0.1, rho=1.0, projection="columns", update_gap=4
    )
    for g in grads[:4]:  # no refresh inside these four steps (a refresh would reset the moments)
        a.grad, b.grad = g.clone(), g.clone()
        adamw.step()
        opt.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert sorted(opt.state[b]["proj"].tolist()) == list(range(9))


@pytest.mark.parametrize("projection", ["svd", "columns", "blocks"])
def test_rho_zero_with_the_sgd_rule_is_sgd_on_the_projectable_weights(projection):
    a, b = tiny_model(), tiny_model()
    proj_a = frugal.frugal_param_groups(a)[1]["params"]
    proj_b = frugal.frugal_param_groups(b)[1]["params"]
    for p in set(a.parameters()) - set(proj_a):  # only the projectable weights train in both
        p.requires_grad_(False)
    for p in set(b.parameters()) - set(proj_b):
        p.requires_grad_(False)
    sgd = torch.optim.SGD(proj_a, lr=0.05)
    opt = frugal.Frugal(
        [{"params": proj_b, "projectable": True}],
        lr=0.1,
        rho=0.0,
        projection=projection,
        state_free="sgd",
        state_free_scale=0.5,
        update_gap=2,
    )
    train_steps(a, sgd, 5)
    train_steps(b, opt, 5)
    assert all(torch.equal(p, q) for p, q in zip(proj_a, proj_b))
    assert frugal.state_bytes(opt) == 0  # empty moments and projectors: ρ = 0 keeps no state on these weights


# --- projections, residual, reset: hand cases ---------------------------------------------------------------------


def test_svd_projector_takes_the_smaller_side_and_the_top_directions():
    G = T([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # 2×3: left side, Q = ±e1 (2×1)
    Q = frugal.svd_projector(G, 1)
    assert Q.shape == (2, 1) and Q.abs().flatten().tolist() == pytest.approx([1.0, 0.0])
    torch.testing.assert_close(frugal.down(G, Q, "svd").abs(), T([[3.0, 0.0, 0.0]]))
    Qt = frugal.svd_projector(G.T, 1)  # 3×2: right side, Q is 1×2
    assert Qt.shape == (1, 2) and frugal.down(G.T, Qt, "svd").shape == (3, 1)
    assert frugal.subspace_rank(torch.Size([192, 64]), 0.25, "svd") == 16
    assert frugal.subspace_rank(torch.Size([64, 256]), 0.25, "columns") == 64


def test_residual_is_orthogonal_to_the_subspace_hand_case():
    G = T([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    Q = frugal.svd_projector(G, 1)
    kept = frugal.up(frugal.down(G, Q, "svd"), Q, "svd", G.shape)
    residual = G - kept
    torch.testing.assert_close(kept, T([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(residual, T([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert float((residual * kept).sum()) == pytest.approx(0.0)


@pytest.mark.parametrize("shape", [(5, 9), (9, 5)])
@pytest.mark.parametrize("projection", ["svd", "columns"])
def test_residual_has_nothing_left_in_the_subspace(shape, projection):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    r = frugal.subspace_rank(G.shape, 0.4, projection)
    Q = frugal.svd_projector(G, r) if projection == "svd" else frugal.column_projector(G, r, torch.Generator())
    residual = G - frugal.up(frugal.down(G, Q, projection), Q, projection, G.shape)
    assert frugal.down(residual, Q, projection).abs().max() < 1e-5
    # Pythagoras: ‖G‖² = ‖down(G)‖² + ‖residual‖² (Q has orthonormal columns/rows)
    total = frugal.down(G, Q, projection).square().sum() + residual.square().sum()
    assert float(total) == pytest.approx(float(G.square().sum()), rel=1e-5)


def test_one_frugal_step_by_hand():
    # W₀ = 0, G as above, η = 0.1, ρ = 0.5 (r = 1), c = 1: the first Adam step in the subspace is η·g/(|g| + ε)
    # = η·sign (where g ≠ 0), and the residual [[0,0,0],[0,1,0]] gets −c·η·sign: W₁ = −0.1·[[1,0,0],[0,1,0]]
    W = torch.nn.Parameter(torch.zeros(2, 3))
    opt = frugal.Frugal([{"params": [W], "projectable": True}], lr=0.1, rho=0.5, update_gap=10, track_share=True)
    W.grad = T([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    opt.step()
    torch.testing.assert_close(W.detach(), T([[-0.1, 0.0, 0.0], [0.0, -0.1, 0.0]]), rtol=0, atol=1e-7)
    assert float(opt.last_share) == pytest.approx(3 / math.sqrt(10))  # ‖down(G)‖/‖G‖
    galore = frugal.Frugal([{"params": [W], "projectable": True}], lr=0.1, rho=0.5, state_free="none", reset=False)
    W.data.zero_()
    galore.step()
    torch.testing.assert_close(W.detach(), T([[-0.1, 0.0, 0.0], [0.0, 0.0, 0.0]]), rtol=0, atol=1e-7)  # no residual


def test_bias_correction_restarts_after_each_reset():
    # T = 2: the moments are reset before steps 1, 3, 5; the step after a reset is a first Adam step again,
    # −η·up(g_s/(|g_s| + ε)), while without the reset it carries the earlier moments
    grads = [T([[1.0, 2.0, 0.5], [0.1, -0.3, 0.2]]), T([[-2.0, 0.5, 1.0], [0.4, 0.1, -0.2]])]
    grads.append(T([[0.5, -1.0, 3.0], [0.2, 0.2, 0.1]]))

    def run(reset):
        W = torch.nn.Parameter(torch.zeros(2, 3))
        opt = frugal.Frugal(
            [{"params": [W], "projectable": True}], lr=0.1, rho=0.5, update_gap=2, state_free="none", reset=reset
        )
        counts, before = [], None
        for g in grads:
            W.grad = g.clone()
            before = W.detach().clone()
            opt.step()
            counts.append(opt.state[W]["step"])
        return counts, W.detach() - before, opt.state[W]["proj"]

    counts, delta, Q = run(True)
    assert counts == [1, 2, 1]
    g_s = frugal.down(grads[2], Q, "svd")
    expected = -0.1 * frugal.up(g_s / (g_s.abs() + 1e-8), Q, "svd", grads[2].shape)
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-7)
    counts_kept, delta_kept, _ = run(False)
    assert counts_kept == [1, 2, 3]
    assert (delta_kept - expected).abs().max() > 1e-3  # without the reset the old moments still act


def test_blocks_activate_round_rho_times_the_tensors_and_the_rest_get_sign_sgd():
    model = tiny_model(layers=2)
    groups = frugal.frugal_param_groups(model)
    proj = groups[1]["params"]
    assert len(proj) == 8  # qkv, out, mlp.0, mlp.2 per block
    opt = frugal.Frugal(groups, lr=0.01, rho=0.25, projection="blocks", update_gap=3)
    train_steps(model, opt, 1)
    active = [p for p in proj if opt.state[p]["active"]]
    assert len(active) == 2
    ids = {id(p) for p in active}
    assert all("exp_avg" not in opt.state[p] for p in proj if id(p) not in ids)


# --- against galore-torch (test-only reference) --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(24, 10), (10, 24)])
def test_galore_style_arm_matches_galore_torch(shape):
    """Our GaLore-style arm (state_free="none", reset=False) against galore_torch.GaLoreAdamW on one matrix and the
    same 7 gradients, refreshing every 3 steps. They coincide where their definitions do: the same side rule
    (project the smaller side; a square matrix on the right), r = round(ρ·min(m, n)), refresh at steps 0, T, 2T of
    the same step count, moments and bias correction kept across refreshes, galore's ``scale`` = our
    ``proj_lr_scale``. Two differences remain, so the comparison sets them aside: galore-torch adds ε to √v before
    the bias correction (ε/√(1−β₂ᵏ) in torch's convention) — so ε = 0 here — and applies weight decay after the
    update (W ← (W + ΔW)(1 − ηλ), ours and torch's W ← W(1 − ηλ) + ΔW) — so λ = 0."""
    galore_torch = pytest.importorskip("galore_torch")
    gen = torch.Generator().manual_seed(1)
    W0 = torch.randn(*shape, generator=gen)
    grads = [torch.randn(*shape, generator=gen) for _ in range(7)]
    ref, ours = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = {"params": [ref], "rank": 3, "update_proj_gap": 3, "scale": 0.25, "proj_type": "std"}
        reference = galore_torch.GaLoreAdamW([group], lr=0.1, eps=0.0, weight_decay=0.0)
    opt = frugal.Frugal(
        [{"params": [ours], "projectable": True}],
        lr=0.1,
        eps=0.0,
        rho=0.3,
        update_gap=3,
        state_free="none",
        reset=False,
        proj_lr_scale=0.25,
    )
    for g in grads:
        ref.grad, ours.grad = g.clone(), g.clone()
        reference.step()
        opt.step()
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert (ours - W0).abs().max() > 0.05  # it moved
    # and FRUGAL's reset really changes the trajectory against galore's convention
    W = torch.nn.Parameter(W0.clone())
    reset = frugal.Frugal(
        [{"params": [W], "projectable": True}], lr=0.1, eps=0.0, rho=0.3, update_gap=3, state_free="none"
    )
    for g in grads:
        W.grad = g.clone()
        reset.step()
    assert (W - ref).abs().max() > 1e-3


# --- memory: measured against the formula ---------------------------------------------------------------------------


def test_formula_reproduces_the_cards_moment_counts():
    # the card's model: 2 blocks, d = 64, V = 32, length 32 → AdamW 212,544 moment floats, ρ = 0.25 65,088, ρ = 0 15,936
    groups = frugal.frugal_param_groups(TinyLM(32, 32, d_model=64, n_layers=2, n_heads=4))
    n_regular = sum(p.numel() for p in groups[0]["params"])
    shapes = [tuple(p.shape) for p in groups[1]["params"]]
    assert frugal.state_formula(shapes, n_regular, None).moments == 212_544
    svd = frugal.state_formula(shapes, n_regular, 0.25)
    assert (svd.moments, svd.projector) == (65_088, 8 * 16 * 64)
    assert frugal.state_formula(shapes, n_regular, 0.0).moments == 15_936
    assert frugal.state_formula(shapes, n_regular, 0.25, "blocks").moments == 2 * n_regular + 2 * 98_304 // 4


@pytest.mark.parametrize(
    "spec",
    [
        frugal.ArmSpec("f", "FRUGAL svd", "frugal", 0.25, "svd"),
        frugal.ArmSpec("g", "GaLore svd", "frugal", 0.25, "svd", "none", reset=False),
        frugal.ArmSpec("c", "FRUGAL columns", "frugal", 0.25, "columns"),
        frugal.ArmSpec("z", "FRUGAL rho=0", "frugal", 0.0, "svd"),
        frugal.ArmSpec("s", "signSGD", "sign_sgd", 0.0),
    ],
    ids=lambda s: s.key,
)
def test_measured_state_equals_the_formula(spec):
    p = frugal.Knobs(n_layers=2, d_model=32, seq_len=8)
    model = frugal.make_model(p, 0, "cpu")
    opt = frugal.make_optimizer(spec, model, p, 0)
    train_steps(model, opt, 2, vocab=32, length=8)
    assert frugal.state_bytes(opt) == frugal.formula_of(spec, model).bytes
    assert (frugal.state_bytes(opt) > 0) == (spec.kind != "sign_sgd")


def test_measured_adamw_state_is_the_formula_plus_torchs_step_counters():
    p = frugal.Knobs(d_model=32, seq_len=8)
    model = frugal.make_model(p, 0, "cpu")
    spec = frugal.ArmSpec("adamw", "AdamW", "adamw")
    opt = frugal.make_optimizer(spec, model, p, 0)
    train_steps(model, opt, 1, vocab=32, length=8)
    n_tensors = len(list(model.parameters()))
    assert frugal.state_bytes(opt) == frugal.formula_of(spec, model).bytes + 4 * n_tensors  # 0-d float32 steps


def test_measured_block_state_follows_the_active_tensors():
    p = frugal.Knobs(n_layers=2, d_model=32, seq_len=8)
    model = frugal.make_model(p, 0, "cpu")
    opt = frugal.make_optimizer(frugal.ArmSpec("b", "blocks", "frugal", 0.25, "blocks"), model, p, 0)
    train_steps(model, opt, 1, vocab=32, length=8)
    groups = frugal.frugal_param_groups(model)
    active = sum(q.numel() for q in groups[1]["params"] if opt.state[q]["active"])
    assert frugal.state_bytes(opt) == 8 * (sum(q.numel() for q in groups[0]["params"]) + active)


# --- the data -------------------------------------------------------------------------------------------------------


def test_markov_data_is_seeded_and_split():
    a, b = make_markov_data(20, 7, 9, vocab_size=5, seed=3), make_markov_data(20, 7, 9, vocab_size=5, seed=3)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert a.train.shape == (20, 9) and a.val.shape == (7, 9) and int(a.train.max()) < 5
    assert not torch.equal(a.train, make_markov_data(20, 7, 9, vocab_size=5, seed=4).train)
    assert torch.equal(a.train, make_markov_data(20, 50, 9, vocab_size=5, seed=3).train)  # n_val leaves train alone


def test_a_deterministic_chain_is_followed_and_its_floor_is_the_first_symbol():
    # logits 50 on c = (a + b) mod 3: x_t = x_{t−2} + x_{t−1} mod 3; the floor is log 3 / (L − 1) (x_1 is uniform)
    logits = torch.zeros(3, 3, 3)
    for a in range(3):
        for b in range(3):
            logits[a, b, (a + b) % 3] = 50.0
    chain = MarkovChain(logits)
    seqs = sample_sequences(chain, 40, 6, torch.Generator().manual_seed(0))
    assert torch.equal(seqs[:, 2:], (seqs[:, :-2] + seqs[:, 1:-1]) % 3)
    assert true_nll(chain, seqs).tolist() == pytest.approx([math.log(3) / 5] * 40, abs=1e-6)


def test_the_floor_is_below_uniform_and_is_the_mean_true_nll():
    data = make_markov_data(300, 200, 8, vocab_size=6, seed=0)
    uniform = math.log(6)
    assert data.floor < uniform
    empirical = true_nll(data.chain, data.val).mean()
    assert float(empirical) == pytest.approx(data.floor)


# --- the claims -----------------------------------------------------------------------------------------------------


def test_headline_claim_holds_fails_and_is_inconclusive_with_nan():
    adamw, galore = [2.30, 2.32, 2.31], [3.00, 3.05, 3.02]
    good = frugal.headline_claim([2.32, 2.33, 2.33], adamw, galore, 0.25)
    assert good.verdict is Verdict.HOLDS and good.headline
    near_but_not_below = frugal.headline_claim([2.80, 2.82, 2.81], adamw, galore, 0.25)
    assert near_but_not_below.verdict is Verdict.DOES_NOT_HOLD  # 0.5 above AdamW
    assert frugal.headline_claim([2.32, float("nan"), 2.33], adamw, galore, 0.25).verdict is Verdict.INCONCLUSIVE


def test_supporting_claims_pass_and_fail():
    assert frugal.near_adamw_claim([2.33, 2.34, 2.33], [2.30, 2.31, 2.30], 0.25).holds
    assert frugal.near_adamw_claim([2.50, 2.52, 2.51], [2.30, 2.31, 2.30], 0.25).verdict is Verdict.DOES_NOT_HOLD
    assert frugal.beats_galore_claim([2.3, 2.31, 2.3], [3.0, 3.02, 3.01], 0.25).holds
    assert frugal.beats_galore_claim([2.9, 2.91, 2.9], [3.0, 3.02, 3.01], 0.25).verdict is Verdict.DOES_NOT_HOLD
    assert frugal.state_claim([30, 30, 30], [100, 100, 100]).holds
    assert frugal.state_claim([50, 50, 50], [100, 100, 100]).verdict is Verdict.DOES_NOT_HOLD
    assert frugal.rho0_claim([2.4, 2.41, 2.4], [3.0, 3.0, 3.1], 0.25).holds
    assert frugal.rho0_claim([3.4, 3.41, 3.4], [3.0, 3.0, 3.1], 0.25).verdict is Verdict.DOES_NOT_HOLD
    bad = frugal.beats_galore_claim([2.3, float("inf"), 2.3], [3.0, 3.0, 3.0], 0.25)
    assert bad.verdict is Verdict.INCONCLUSIVE and "not finite" in bad.detail


# --- the experiment ---------------------------------------------------------------------------------------------------


def test_arms_are_typed_and_labels_distinct():
    quick = frugal.make_arms(frugal.Knobs())
    assert [a.key for a in quick] == ["adamw", "galore", "frugal"]
    galore = quick[1]
    assert (galore.state_free, galore.reset, galore.rho, galore.lr_scale) == ("none", False, 0.25, 1.0)
    scaled = frugal.make_arms(frugal.Knobs(galore_lr_scale=0.25))[1]
    model = frugal.make_model(frugal.Knobs(d_model=16), 0, "cpu")
    assert frugal.make_optimizer(scaled, model, frugal.Knobs(), 0).proj_lr_scale == 0.25
    swept = frugal.make_arms(frugal.Knobs(sweep=True))
    assert len({a.key for a in swept}) == len({a.label for a in swept}) == len(swept) == 10
    assert sum(a.main for a in swept) == 3
    assert sorted(a.rho for a in swept if a.curve == "frugal") == [0.0, 0.25, 0.5]
    at_half = frugal.make_arms(frugal.Knobs(sweep=True, rho=0.5))  # ρ = 0.5 is not trained twice
    assert len(at_half) == len({a.label for a in at_half}) == 8


@pytest.mark.parametrize("key", ["frugal", "adamw"])
def test_a_huge_learning_rate_diverges_and_names_the_arm(key):
    p = replace(frugal.Knobs(d_model=16, seq_len=8, n_train=64, n_val=16), lr=1e12, n_steps=20, log_every=5)
    data = make_markov_data(p.n_train, p.n_val, p.seq_len, seed=0)
    spec = {a.key: a for a in frugal.make_arms(p)}[key]
    with pytest.raises(DivergenceError, match=rf"step \d+ in '{re.escape(spec.label)}'"):
        frugal.train_arm(spec, data, frugal.make_model(p, 0, "cpu"), p, check=check_finite, check_weights=check_weights)


def test_bad_knobs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="divisible"):
        frugal.run(n_heads=3)
    with pytest.raises(ValueError, match="log_every"):
        frugal.run(n_steps=10, log_every=20)
    with pytest.raises(ValueError, match="projection"):
        frugal.run(projection="qr")
    with pytest.raises(ValueError, match="rho"):
        frugal.run(rho=1.5)
    with pytest.raises(ValueError, match="unknown parameter"):
        frugal.run(rhoo=0.5)


def test_a_short_run_logs_every_arm_and_measures_its_state():
    result = frugal.run(n_steps=30, log_every=10, n_val=50, n_train=200, d_model=16, progress=False)
    hist, m = result.history, result.metrics
    assert [c.headline for c in result.claims] == [True, False, False, False]
    assert all(math.isfinite(v) for v in m.values())
    assert set(hist["series"]) == {"AdamW", "GaLore-style ρ=0.25", "FRUGAL ρ=0.25"} and set(hist["seed"]) == {0, 1, 2}
    runs = {r.arm.key: r for r in result.extras["arms"]}
    assert runs["frugal"].state_bytes == (runs["frugal"].formula.bytes,) * 3
    assert runs["frugal"].state_bytes == runs["galore"].state_bytes  # equal state: the residual step keeps nothing
    assert runs["frugal"].share.shape == (3, 30) and runs["adamw"].share is None
    assert m["state_share_frugal"] == pytest.approx(runs["frugal"].state_bytes[0] / runs["adamw"].state_bytes[0])
    assert result.claims[0].values == pytest.approx(
        tuple(
            np.maximum(
                np.subtract(runs["frugal"].val_loss, runs["adamw"].val_loss) - frugal.NEAR_ADAMW,
                np.subtract(runs["frugal"].val_loss, runs["galore"].val_loss) + frugal.BELOW_GALORE,
            )
        )
    )
    assert {"val_loss", "state_memory", "subspace_share"} <= set(result.figures)


def test_the_sweep_adds_the_pareto_and_the_rho_zero_claim():
    result = frugal.run(sweep=True, n_steps=10, log_every=5, n_val=20, n_train=100, d_model=16, progress=False)
    assert len(result.extras["arms"]) == 10 and len(result.claims) == 5
    assert result.claims[-1].claim.startswith("FRUGAL ρ=0 beats")
    assert {"pareto", "val_loss_all"} <= set(result.figures)
    pareto = result.figures["pareto"]
    frugal_curve = next(t for t in pareto.data if t.name.startswith("FRUGAL"))
    assert list(frugal_curve.text) == ["ρ=0", "ρ=0.25", "ρ=0.5"]
    runs = {r.arm.key: r for r in result.extras["arms"]}
    assert runs["sign_sgd"].state_bytes == (0, 0, 0)
    assert runs["frugal_rho0"].state_bytes[0] < runs["frugal"].state_bytes[0] < runs["frugal_rho0.5"].state_bytes[0]


def test_the_arms_start_from_the_same_model():
    p = frugal.Knobs(d_model=16, seq_len=8)
    a, b = frugal.make_model(p, 5, "cpu"), frugal.make_model(p, 5, "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    c = copy.deepcopy(a)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


@pytest.mark.slow
def test_quick_preset_runs_with_three_seeds_and_a_headline():
    result = frugal.run(preset="quick", progress=False)
    assert isinstance(result, Result) and result.headline is not None
    assert result.headline.interval.n == 3
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert result.metrics["state_share_frugal"] < frugal.STATE_SHARE
    assert {"val_loss", "state_memory", "subspace_share"} <= set(result.figures)
