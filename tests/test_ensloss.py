"""EnsLoss: the random derivatives, the surrogate, the fixed margin losses, the claim logic, the data, a run."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from labkit.core import History, RunContext
from labkit.data import tabular
from labkit.methods import ensloss as E


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- ensloss_derivatives --------------------------------------------------------------------------------------


def test_derivatives_hand_computed_with_a_fixed_draw():
    xi = torch.randn(4, generator=gen(0))  # the draw the function will make from the same generator state
    assert xi.tolist() == pytest.approx([1.5410, -0.2934, -2.1788, 0.5684], abs=1e-4)
    margins = torch.tensor([2.0, -1.0, 0.5, 4.0])
    g = E.ensloss_derivatives(margins, gen(0))
    # u = −e^ξ = [−4.67, −0.746, −0.113, −1.77]; sorted and clipped at −1: [−1, −1, −e^{−0.2934}, −e^{−2.1788}].
    # Margins ranked: −1.0 (#1) < 0.5 (#2) < 2.0 (#0) < 4.0 (#3); z = 2 and z = 4 are divided by z; then −1e-6.
    expected = [-math.exp(-0.293428897857666) / 2.0, -1.0, -1.0, -math.exp(-2.1787893772125244) / 4.0]
    assert g.tolist() == pytest.approx([e - 1e-6 for e in expected], abs=1e-6)


def test_derivatives_negative_monotone_clipped_and_detached():
    z = torch.linspace(-3, 5, 257)[torch.randperm(257, generator=gen(1))].requires_grad_()
    for lam in (0.0, 0.5, -0.5):
        g = E.ensloss_derivatives(z, gen(2), boxcox_lambda=lam)
        assert not g.requires_grad
        assert (g < 0).all() and (g >= -1 - 1e-6).all()
        g_by_margin = g[torch.argsort(z.detach())]
        assert (torch.diff(g_by_margin) >= 0).all()  # sorted consistently with margins ⇒ convex implied loss


def test_clip_value_is_the_lower_bound():
    z = torch.linspace(-2, 0.9, 200)
    g = E.ensloss_derivatives(z, gen(3), clip=-0.3)
    assert g.min() == pytest.approx(-0.3 - 1e-6, abs=1e-7)  # many draws exceed 0.3 in size, all clipped


def test_tail_is_divided_by_the_margin_above_one():
    z = torch.tensor([-0.5, 0.2, 1.5, 3.0, 0.9, 6.0])
    z_squeezed = torch.where(z > 1, 1 + 0.5 * (z - 1), z)  # same ranking, so the same sorted draw is assigned
    g, g2 = E.ensloss_derivatives(z, gen(4)), E.ensloss_derivatives(z_squeezed, gen(4))
    tail = z > 1
    assert torch.allclose(g[~tail], g2[~tail])
    assert torch.allclose((g[tail] + 1e-6) * z[tail], (g2[tail] + 1e-6) * z_squeezed[tail], atol=1e-6)
    assert (g[tail].abs() <= 1 / z[tail] + 1e-6).all()


def test_boxcox_inverse_hand_values():
    xi = torch.tensor([1.0, -3.0, 0.0])
    assert E.boxcox_inverse(xi, 0.5).tolist() == pytest.approx([2.25, 0.0, 1.0])  # (1 + ξ/2)², floored at 0
    assert E.boxcox_inverse(torch.tensor([1.0]), -0.5).item() == pytest.approx(4.0)  # (1 − 1/2)^(−2)
    assert E.boxcox_inverse(torch.tensor([1.0]), 0.0).item() == pytest.approx(math.e)


# --- the surrogate ---------------------------------------------------------------------------------------------


def test_surrogate_gradient_is_mean_of_g_times_margin_gradient():
    X = torch.tensor([[1.0, 2.0], [0.5, -1.0], [-2.0, 0.0]])
    y = torch.tensor([1.0, -1.0, 1.0])
    w = torch.tensor([0.3, -0.2], requires_grad=True)
    margins = y * (X @ w)
    g = torch.tensor([-0.9, -0.5, -0.1])
    E.ensloss_surrogate(margins, g).backward()
    # ∇_w (1/3) Σ g_b y_b x_b·w = (1/3) Σ g_b y_b x_b, worked out by hand:
    # −0.9·[1, 2] + 0.5·[0.5, −1] − 0.1·[−2, 0] = [−0.45, −2.3]; divided by 3
    assert w.grad.tolist() == pytest.approx([-0.45 / 3, -2.3 / 3])


def test_surrogate_does_not_backprop_through_g():
    z = torch.tensor([0.5, -1.0], requires_grad=True)
    E.ensloss_surrogate(z, 2 * z).backward()  # g depends on z, but is detached
    assert z.grad.tolist() == pytest.approx([0.5, -1.0])  # (1/B)·g, not (1/B)·(g + 2z)


def test_implied_loss_integrates_the_derivative():
    z = np.array([0.0, 1.0, 2.0])
    assert E.implied_loss(z, np.array([-1.0, -1.0, -1.0])) == pytest.approx([2.0, 1.0, 0.0])
    assert E.implied_loss(z, np.array([-2.0, -1.0, 0.0])) == pytest.approx([2.0, 0.5, 0.0])


# --- fixed margin losses -----------------------------------------------------------------------------------------


def test_bce_on_margins_matches_torch_bce_with_logits():
    logits = torch.tensor([2.0, -0.5, 0.0, 3.0, -4.0])
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    reference = torch.nn.BCEWithLogitsLoss()(logits, t)
    assert E.bce_margin_loss((2 * t - 1) * logits).item() == pytest.approx(reference.item(), rel=1e-6)
    assert E.bce_margin_loss(torch.tensor([0.0])).item() == pytest.approx(math.log(2))


def test_hinge_and_exponential_hand_values():
    assert E.hinge_loss(torch.tensor([-1.0, 0.5, 2.0])).item() == pytest.approx((2.0 + 0.5 + 0.0) / 3)
    assert E.exponential_loss(torch.tensor([0.0, math.log(2)])).item() == pytest.approx((1.0 + 0.5) / 2)


def test_focal_hand_values():
    # z = 0: p_t = 1/2, (1/2)²·log 2;  z = ln 3: p_t = 3/4, (1/4)²·(−log 3/4)
    assert E.focal_loss(torch.tensor([0.0])).item() == pytest.approx(0.25 * math.log(2))
    assert E.focal_loss(torch.tensor([math.log(3)])).item() == pytest.approx(0.0625 * -math.log(0.75), rel=1e-6)
    z = torch.tensor([-1.0, 0.3])
    assert E.focal_loss(z, gamma=0.0).item() == pytest.approx(E.bce_margin_loss(z).item())


# --- the claim -------------------------------------------------------------------------------------------------


def test_claim_holds_on_made_up_numbers():
    final = {"ensloss": [0.70, 0.72], "bce": [0.70, 0.71], "hinge": [0.69, 0.70]}  # +1.5 vs hinge, +0.5 vs bce
    best = {"ensloss": [0.73, 0.73], "bce": [0.72, 0.72], "hinge": [0.7, 0.7]}  # exactly +1.0 vs bce
    c = E.ensloss_claim(final, best)
    assert c.passed and c.numbers["final ensloss"] == pytest.approx(0.71)
    assert c.numbers["best ensloss − bce (pts)"] == pytest.approx(1.0)
    assert "0.720" in c.detail  # per-seed values are reported


@pytest.mark.parametrize(
    "which, key, value",
    [
        ("final", "hinge", [0.70, 0.715]),  # ensloss only +0.75 pt over hinge
        ("final", "bce", [0.72, 0.72]),  # ensloss 1 pt below bce
        ("best", "bce", [0.725, 0.725]),  # best only +0.5 pt
    ],
)
def test_claim_fails_when_any_condition_fails(which, key, value):
    final = {"ensloss": [0.70, 0.72], "bce": [0.70, 0.71], "hinge": [0.69, 0.70]}
    best = {"ensloss": [0.73, 0.73], "bce": [0.72, 0.72], "hinge": [0.7, 0.7]}
    {"final": final, "best": best}[which][key] = value
    assert not E.ensloss_claim(final, best).passed


def test_paired_verdicts_count_better_tie_worse():
    import pandas as pd

    rows = []
    for task, ens, bce in (
        ("a", [0.8, 0.81, 0.82], [0.7, 0.705, 0.71]),
        ("b", [0.7, 0.7, 0.7], [0.7, 0.7, 0.7]),
        ("c", [0.6, 0.61, 0.6], [0.7, 0.7, 0.72]),
    ):
        rows += [
            {"task": task, "arm": arm, "seed": s, "final_test_acc": v}
            for arm, vals in (("ensloss", ens), ("bce", bce))
            for s, v in enumerate(vals)
        ]
    assert E.paired_verdicts(pd.DataFrame(rows)) == {"bce": {"better": 1, "tie": 1, "worse": 1}}


# --- data ------------------------------------------------------------------------------------------------------


def test_simulator_is_seeded_noisy_and_splits_70_30():
    X, y, p = tabular.relu_sum_classification(20000, 20, seed=0)
    X2, y2, _ = tabular.relu_sum_classification(20000, 20, seed=0)
    assert X.shape == (20000, 20) and X.dtype == np.float32 and np.array_equal(y, y2) and np.array_equal(X, X2)
    assert 0.75 < tabular.bayes_accuracy(p) < 0.85  # the card: Bayes accuracy ≈ 0.8 at scale 2
    assert tabular.bayes_accuracy(tabular.relu_sum_classification(20000, 20, 0, scale=0.5)[2]) < 0.65
    split = tabular.standardize_split(X[:1000], y[:1000], seed=0)
    assert len(split.y_train) == 700 and len(split.y_test) == 300
    assert np.allclose(split.X_train.mean(0), 0, atol=1e-5) and np.allclose(split.X_train.std(0), 1, atol=1e-3)


def test_flip_labels_flips_exactly_the_rate():
    y = np.zeros(100, dtype=np.int64)
    assert tabular.flip_labels(y, 0.2, seed=0).sum() == 20 and y.sum() == 0


# --- training and the run --------------------------------------------------------------------------------------


def tiny_ctx(**over):
    p = dict(lr=0.01, epochs=2, momentum=0.9, weight_decay=0.0, batch_size=8, boxcox_lambda=0.0, clip=-1.0)
    return RunContext(SimpleNamespace(**{**p, **over}), "quick", 0, torch.device("cpu"), History(), False)


def test_a_diverging_arm_is_stopped_and_reported():
    X = torch.full((32, 2), 1e30)  # margins of ±inf ⇒ e^{−z} = inf at the first step
    task = E.Task(
        "t", X, (torch.arange(32) % 2).float(), X[:8], (torch.arange(8) % 2).float(), lambda: torch.nn.Linear(2, 1)
    )
    out = E.train_arm(tiny_ctx(), task, "exponential", 0, "exponential", bar=SimpleNamespace(update=lambda k: None))
    assert out["diverged_at"]["step"] == 1 and "exponential" in out["diverged_at"]["message"]


def test_invalid_arguments_raise_value_error():
    for kwargs in ({"preset": "huge"}, {"losses": "bce"}, {"clip": 0.5}, {"epochs": 1.5}, {"nope": 1}):
        with pytest.raises(ValueError):
            E.run(progress=False, **kwargs)


def test_tiny_run_with_extra_tasks_and_every_loss():
    r = E.run("standard", progress=False, n=200, d=5, n_large=150, epochs=2, n_seeds=2, width=8, depth=1)
    table = r.extras["per_seed"]
    assert set(table["task"]) == {"sim", "sim n=150", "breast_cancer"}
    assert set(table["arm"]) == {"bce", "hinge", "exponential", "focal", "ensloss"} and len(table) == 3 * 5 * 2
    assert set(r.history["metric"]) == {"train_acc", "test_acc"} and r.history["step"].max() == 2
    assert {"accuracy", "final_test_acc", "derivatives", "implied_loss", "tasks"} <= set(r.figures)
    assert [c.asserted for c in r.claims] == [True, False]


def test_digits_pairs_become_32x32_images_with_flipped_training_labels():
    p = SimpleNamespace(
        n=100, d=3, n_large=0, signal_scale=2.0, breast_cancer=False, flip=0.2, digits_pairs=2, width=4, depth=1
    )
    tasks = E.build_tasks(p, seed=0, device=torch.device("cpu"))
    assert [t.name for t in tasks] == ["sim", "digits 0v1", "digits 8v9"]
    digits = tasks[1]
    assert digits.X_train.shape[1:] == (1, 32, 32) and len(digits.y_test) == round(0.3 * 360)
    assert digits.make_model()(digits.X_test[:4]).shape == (4, 1)


@pytest.mark.slow
def test_quick_preset_smoke():
    r = E.run("quick", progress=False)
    table = r.extras["per_seed"]
    assert len(table) == 9 and r.history["step"].max() == 60 and set(r.history["seed"]) == {0, 1, 2}
    assert (table["final_train_acc"] > 0.99).all()  # the over-parameterised regime of the card
    final = {
        a: table[table.arm == a].sort_values("seed")["final_test_acc"].to_numpy() for a in ("ensloss", "bce", "hinge")
    }
    best = {
        a: table[table.arm == a].sort_values("seed")["best_test_acc"].to_numpy() for a in ("ensloss", "bce", "hinge")
    }
    assert r.claims[0].passed == E.ensloss_claim(final, best).passed
    assert r.claims[0].numbers["final ensloss"] == pytest.approx(r.metrics["final_test_acc_ensloss"], abs=1e-4)
    hist_final = r.history.query("metric == 'test_acc' and step == 60 and series == 'ensloss'")["value"].mean()
    assert hist_final == pytest.approx(r.metrics["final_test_acc_ensloss"])
