"""ALLoRA (28): the multiplier and the step against hand computations, the adapter's settings (and PEFT), the
teacher–student toy, validation-only lr choice, the claims three ways, divergence, bad knobs, one quick run."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from labkit.core import DivergenceError, History, Result, RunContext, Verdict, torch_threads
from labkit.methods import allora
from labkit.methods.allora.experiment import tanh_mlp
from labkit.models.adapters import LoRALinear

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def small_knobs(**kw):
    base = dict(n_seeds=3, n_train=64, n_val=64, n_test=200, width=16, n_steps=50)
    return allora.Knobs(**{**base, **kw})


def context(p):
    return RunContext(p, "quick", 0, torch.device("cpu"), History(), False)


# --- the multiplier c(θ) ----------------------------------------------------------------------------------------


def test_multiplier_is_eta_at_zero_and_one_over_norm_when_large():
    theta = T([[0.0, 0.0], [3.0, 4.0], [3e4, 4e4]])
    c = allora.allora_multiplier(theta, eta=2.0)
    assert c.shape == (3, 1)
    assert c[0].item() == pytest.approx(2.0)  # θ = 0 → η
    assert c[1].item() == pytest.approx(1 / math.sqrt(25 + 0.25))  # ‖θ‖ = 5, 1/η² = 0.25
    assert c[2].item() == pytest.approx(1 / 5e4, rel=1e-6)  # ‖θ‖ ≫ 1/η → 1/‖θ‖
    assert allora.allora_multiplier(torch.zeros(1, 3), eta=0.5).item() == pytest.approx(0.5)


def test_matrix_grouping_uses_the_frobenius_norm():
    theta = T([[3.0, 0.0], [0.0, 4.0]])
    per_row = allora.allora_multiplier(theta, eta=1.0, grouping="row")
    per_matrix = allora.allora_multiplier(theta, eta=1.0, grouping="matrix")
    assert per_row.flatten().tolist() == pytest.approx([1 / math.sqrt(10), 1 / math.sqrt(17)])
    assert per_matrix.shape == (1, 1) and per_matrix.item() == pytest.approx(1 / math.sqrt(26))
    with pytest.raises(ValueError, match="grouping"):
        allora.allora_multiplier(theta, eta=1.0, grouping="column")


# --- the ALLoRA step -------------------------------------------------------------------------------------------


def test_allora_step_with_sgd_is_theta_minus_lr_c_grad():
    theta = nn.Parameter(T([[3.0, 4.0], [0.0, 0.0]]))
    theta.grad = T([[1.0, 1.0], [2.0, -1.0]])
    opt = torch.optim.SGD([theta], lr=0.1)
    allora.allora_step(opt, [theta], eta=2.0)
    c0 = 1 / math.sqrt(25.25)
    expected = [[3 - 0.1 * c0, 4 - 0.1 * c0], [0 - 0.1 * 2 * 2.0, 0 + 0.1 * 2 * 1.0]]
    assert theta.detach().tolist() == [pytest.approx(row, abs=1e-7) for row in expected]


def test_allora_step_rescales_adams_step_and_only_the_factors():
    theta = nn.Parameter(T([[3.0, 4.0], [0.0, 0.0]]))
    other = nn.Parameter(T([1.0, -1.0]))  # e.g. DoRA's magnitude: plain Adam step
    g_theta, g_other = T([[0.5, -2.0], [1e-3, 3.0]]), T([4.0, -0.1])
    theta.grad, other.grad = g_theta.clone(), g_other.clone()
    lr, eta, eps = 0.01, 4.0, 1e-8
    opt = torch.optim.Adam([theta, other], lr=lr, eps=eps)
    allora.allora_step(opt, [theta], eta=eta)
    # Adam's first step: m̂ = g, v̂ = g², u = g/(|g| + ε); then θ ← θ − lr·c(θ)·u
    c = torch.stack([1 / torch.sqrt(T(25.0) + 1 / eta**2), T(eta)]).view(2, 1)
    expected = T([[3.0, 4.0], [0.0, 0.0]]) - lr * c * g_theta / (g_theta.abs() + eps)
    assert torch.allclose(theta.detach(), expected, atol=1e-7)
    assert torch.allclose(other.detach(), T([1.0, -1.0]) - lr * g_other / (g_other.abs() + eps), atol=1e-7)
    # Adam's moments are those of a plain step: only where θ lands changed
    assert torch.allclose(opt.state[theta]["exp_avg"], 0.1 * g_theta)


def test_scaling_the_gradient_before_adam_would_do_nothing():
    """Why c(θ) multiplies the step: Adam divides a constant gradient scale away (up to ε)."""
    results = []
    for scale in (1.0, 4.0):
        theta = nn.Parameter(T([[1.0, -2.0]]))
        opt = torch.optim.Adam([theta], lr=0.1)
        for g in (T([[0.3, -1.0]]), T([[0.2, 0.5]]), T([[-0.4, 0.1]])):
            theta.grad = scale * g
            opt.step()
        results.append(theta.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_first_allora_step_moves_b_eta_times_further_and_a_not_at_all():
    """B = 0 at the start, so A gets no gradient on step 1; B's Adam step (≈ lr·sign g) is multiplied by c(0) = η."""
    base = tanh_mlp((5, 6, 3))
    x, y = torch.randn(16, 5, generator=torch.Generator().manual_seed(0)), torch.randn(16, 3)
    runs = []
    for eta in (None, 3.0):
        model = tanh_mlp((5, 6, 3))
        model.load_state_dict(base.state_dict())
        torch.manual_seed(1)
        layers = allora.inject_allora(model, r"\d+", r=2)
        a0 = [layer.lora_A.detach().clone() for layer in layers]
        allora.finetune(model, layers, x, y, n_steps=1, lr=0.01, batch_size=16, generator=torch.Generator(), eta=eta)
        runs.append(
            ([layer.lora_B.detach() for layer in layers], [la.lora_A.detach() - a for la, a in zip(layers, a0)])
        )
    (b_plain, da_plain), (b_allora, da_allora) = runs
    last_plain, last_allora = b_plain[-1], b_allora[-1]  # the output layer's B gets a non-zero gradient
    assert last_plain.abs().max() > 0
    assert torch.allclose(last_allora, 3.0 * last_plain, atol=1e-7)
    assert all(float(d.abs().max()) == 0.0 for d in da_plain + da_allora)


# --- the adapters ------------------------------------------------------------------------------------------------


def test_allora_has_no_dropout_and_scale_one_and_lora_keeps_both():
    p = small_knobs(dropout=0.1, alpha=8.0, rank=4)
    arms = {s.arm.key: s for s in allora.make_arms(p)}
    al_layers = allora.attach(tanh_mlp((4, 16, 16, 2)), arms["allora"], p)
    assert all(la.scaling == 1.0 and isinstance(la.dropout, nn.Identity) and not la.use_dora for la in al_layers)
    lora_layers = allora.attach(tanh_mlp((4, 16, 16, 2)), arms["lora"], p)
    assert all(la.scaling == 2.0 and isinstance(la.dropout, nn.Dropout) and la.dropout.p == 0.1 for la in lora_layers)
    dora_layers = allora.attach(tanh_mlp((4, 16, 16, 2)), arms["dora"], p)
    assert all(la.use_dora and la.scaling == 2.0 for la in dora_layers)
    nodrop = allora.attach(tanh_mlp((4, 16, 16, 2)), arms["lora_nodrop"], p)
    assert all(isinstance(la.dropout, nn.Identity) and la.scaling == 2.0 for la in nodrop)
    assert len(al_layers) == 3 and all(isinstance(la, LoRALinear) for la in al_layers)


@pytest.mark.parametrize("key", ["lora", "lora_nodrop", "dora", "allora"])
def test_every_arm_starts_at_the_pretrained_net(key):
    p = small_knobs()
    problem = allora.make_problem(0, p)
    model = copy.deepcopy(problem.base)
    spec = {s.arm.key: s for s in allora.make_arms(p)}[key]
    allora.attach(model, spec, p)
    with torch.no_grad():
        for mode in (model.eval, model.train):  # B = 0: dropout on x changes nothing either
            mode()
            assert torch.allclose(model(problem.x_test), problem.base(problem.x_test), atol=1e-6)


def test_allora_forward_equals_peft_lora_with_alpha_equal_r_and_no_dropout():
    """ALLoRA's forward is PEFT's LoRA with scale α/r = 1 and dropout 0, on the same weights."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = tanh_mlp((6, 5, 5, 3))
    ours = copy.deepcopy(base)
    layers = allora.inject_allora(ours, r"\d+", r=2)
    for layer in layers:
        nn.init.normal_(layer.lora_B)  # a non-zero B, so the adapters matter
    config = peft.LoraConfig(r=2, lora_alpha=2, lora_dropout=0.0, target_modules=["0", "2", "4"])
    ref = peft.inject_adapter_in_model(config, copy.deepcopy(base))
    with torch.no_grad():
        for name, layer in zip(["0", "2", "4"], layers):
            ref.get_submodule(name).lora_A["default"].weight.copy_(layer.lora_A)
            ref.get_submodule(name).lora_B["default"].weight.copy_(layer.lora_B)
        x = torch.randn(7, 6)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
        assert not torch.allclose(ours(x), base(x), atol=1e-3)


# --- the toy, the schedule, the lr choice ---------------------------------------------------------------------------


def test_problem_is_reproducible_and_the_target_moved():
    p = small_knobs()
    a, b, c = allora.make_problem(3, p), allora.make_problem(3, p), allora.make_problem(4, p)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (64, 32) and a.y_val.shape == (64, 8) and a.x_test.shape == (200, 32)
    assert not any(q.requires_grad for q in a.base.parameters())
    with torch.no_grad():
        zero_shot = torch.mean((a.base(a.x_test) - a.y_test) ** 2).item()
    assert zero_shot > 0.05  # the pre-trained net does not already solve the target


def test_log_schedule_always_holds_the_claim_steps():
    assert allora.log_schedule(100, 10) == list(range(0, 101, 10))
    assert allora.log_schedule(60, 25) == [0, 10, 25, 50, 60]


def test_best_lr_is_chosen_on_validation_never_on_test():
    val = np.array([[0.1, 0.5], [0.2, 0.4]])  # (grid, seed): seed 0 prefers grid 0, seed 1 grid 1
    test = np.array([[0.9, 0.9], [0.1, 0.1]])  # the test set would prefer grid 1 for both
    best, pick = allora.select_by_validation(val, test)
    assert pick.tolist() == [0, 1] and best.tolist() == [0.9, 0.1]
    best, pick = allora.select_by_validation(np.array([[np.nan], [0.3]]), np.array([[0.0], [0.5]]))
    assert pick.tolist() == [1] and best.tolist() == [0.5]  # a diverged grid point is never chosen


def test_lr_grid_and_arm_keys():
    p = small_knobs(lr=0.003, lr_grid_factor=3.0)
    assert allora.lr_grid(p.lr, p.lr_grid_factor) == pytest.approx((0.001, 0.003, 0.009))
    arms = allora.make_arms(p)
    assert [s.arm.key for s in arms] == [
        "lora_lo",
        "allora_lo",
        "lora",
        "allora",
        "lora_hi",
        "allora_hi",
        "lora_nodrop",
        "dora",
    ]
    assert len({s.arm.label for s in arms}) == len(arms)


# --- the claims ----------------------------------------------------------------------------------------------------


def test_headline_claim_three_ways():
    lora = np.array([0.10, 0.12, 0.11, 0.09])
    holds = allora.short_budget_claim(0.7 * lora, lora)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == allora.SHORT_RATIO
    assert holds.values == pytest.approx((0.7, 0.7, 0.7, 0.7)) and not holds.higher_is_better
    assert allora.short_budget_claim(1.1 * lora, lora).verdict is Verdict.DOES_NOT_HOLD
    wide = allora.short_budget_claim(lora * np.array([0.3, 1.4, 0.5, 1.3]), lora)  # mean ≈ 0.88, wide interval
    assert wide.verdict is Verdict.INCONCLUSIVE
    nan = allora.short_budget_claim(np.array([0.07, 0.08, np.nan, 0.06]), lora)
    assert nan.verdict is Verdict.INCONCLUSIVE and "diverged" in nan.detail


@pytest.mark.parametrize(
    "make, margin", [(allora.escape_claim, 0.85), (allora.dora_claim, 1.0), (allora.tuned_claim, 0.95)]
)
def test_supporting_ratio_claims_three_ways(make, margin):
    base = np.array([0.2, 0.25, 0.22])
    assert make(base * (margin - 0.1), base).verdict is Verdict.HOLDS
    assert make(base * (margin + 0.1), base).verdict is Verdict.DOES_NOT_HOLD
    assert make(base * np.array([margin - 0.5, margin + 0.5, margin]), base).verdict is Verdict.INCONCLUSIVE
    assert make(np.array([0.1, np.inf, 0.1]), base).verdict is Verdict.INCONCLUSIVE
    assert not make(base, base).headline and make(base, base).margin == margin


def test_escape_norm_claim_three_ways():
    lora = np.array([3.0, 3.2, 2.9])
    assert allora.escape_norm_claim(lora + 0.5, lora).verdict is Verdict.HOLDS
    assert allora.escape_norm_claim(lora - 0.5, lora).verdict is Verdict.DOES_NOT_HOLD
    assert allora.escape_norm_claim(lora + np.array([2.0, -2.0, 0.1]), lora).verdict is Verdict.INCONCLUSIVE
    assert allora.escape_norm_claim([np.nan, 1.0, 1.0], lora).verdict is Verdict.INCONCLUSIVE


# --- divergence, bad knobs, a run -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["lora", "allora"])
def test_a_huge_learning_rate_diverges_and_names_the_series(key):
    p = small_knobs()
    spec = {s.arm.key: s for s in allora.make_arms(p)}[key]
    with pytest.raises(DivergenceError, match=rf"step \d+ in '{spec.arm.label}'"):
        allora.train_arm(context(p), spec, allora.make_problem(0, p), 0, p, lr=1e12)


def test_bad_knobs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="batch_size"):
        allora.run(n_train=16, batch_size=32)
    with pytest.raises(ValueError, match="shift_rank"):
        allora.run(width=4, shift_rank=8)
    with pytest.raises(ValueError, match="grouping"):
        allora.run(grouping="column")
    with pytest.raises(ValueError, match="n_steps"):
        allora.run(n_steps=20)  # the claims read step 50
    with pytest.raises(ValueError, match="unknown parameter"):
        allora.run(etaa=1.0)


def test_small_run_has_a_headline_and_consistent_numbers():
    small = dict(n_seeds=3, n_train=64, n_val=64, n_test=200, width=16, n_steps=50)
    result = allora.run(**small, progress=False)
    hist, m, arms = result.history, result.metrics, result.extras["arms"]
    assert isinstance(result, Result) and result.headline is not None
    assert [c.headline for c in result.claims] == [True, False, False, False, False]
    assert all(math.isfinite(v) for v in m.values())
    assert set(hist["seed"]) == {0, 1, 2} and len(set(hist["series"])) == 8
    start = hist[(hist["step"] == 0) & (hist["metric"] == "test_mse")].groupby("seed")["value"]
    assert float((start.max() - start.min()).max()) < 1e-6  # every arm starts at the pre-trained net
    ratio = arms["allora"].at("test_mse", 50) / arms["lora"].at("test_mse", 50)
    assert result.claims[0].values == pytest.approx(tuple(ratio), abs=1e-12)
    assert m["test_mse_allora_step50"] == pytest.approx(arms["allora"].at("test_mse", 50).mean(), abs=1e-12)
    assert set(result.extras["best_lr"]["lora"]) <= set(allora.lr_grid(0.003, 3.0))
    assert {"test_mse", "lr_grid", "adapter_norms", "delta_norm", "multiplier"} <= set(result.figures)
    # the notebook's lr probe trains the same problems: at the run's own lr it gives the run's numbers
    probe = allora.probe_lrs(allora.Knobs(**small), [0.003], [0, 1, 2])
    assert probe["allora", 0.003][1] == pytest.approx(arms["allora"].at("test_mse", 50), abs=1e-6)
    assert probe["lora", 0.003][0] == pytest.approx(arms["lora"].at("val_mse", 50), abs=1e-6)


def test_method_file_is_the_paper_only():
    source = (Path(allora.__file__).parent / "method.py").read_text()
    assert len(source.splitlines()) <= 450 and "2410.09692" in source
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment"):
        assert banned not in source
