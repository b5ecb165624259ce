"""EnsLoss: the random derivatives, the surrogate, the fixed margin losses, the claim logic, the data, a run."""

import math

import numpy as np
import pytest
import torch

from labkit.core import Arm, History, Result, RunContext, Verdict, accuracy, resolve_params
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


# --- the claims ----------------------------------------------------------------------------------------------


def test_claim_holds_when_every_seed_gains():
    c = E.beats_claim([0.72, 0.725, 0.715], [0.70, 0.70, 0.70], baseline_label="BCE", headline=True)
    assert c.values == pytest.approx((2.0, 2.5, 1.5))  # points per seed; 95% CI 2.0 ± 1.24
    assert c.verdict is Verdict.HOLDS and c.headline and c.margin == 0.0


def test_claim_does_not_hold_when_every_seed_loses():
    c = E.beats_claim([0.68, 0.675, 0.685], [0.70, 0.70, 0.70], baseline_label="hinge")
    assert c.verdict is Verdict.DOES_NOT_HOLD


def test_claim_is_inconclusive_when_seeds_disagree():
    # the committed notebook's per-seed finals: +2.0, +1.3, −0.2 points over BCE (a paired test calls it a tie)
    c = E.beats_claim([0.720, 0.720, 0.656], [0.700, 0.707, 0.658], baseline_label="BCE")
    assert c.verdict is Verdict.INCONCLUSIVE and c.interval.mean > 0


def test_a_diverged_baseline_makes_the_claim_inconclusive_and_says_so():
    c = E.beats_claim([0.72, 0.73], [0.70, float("nan")], baseline_label="exponential", diverged_seeds=[1])
    assert c.verdict is Verdict.INCONCLUSIVE
    assert "exponential DIVERGED" in c.detail and "seed(s) 1" in c.detail and "DIVERGED" in str(c)


def test_paired_counts_better_tie_worse():
    import pandas as pd

    rows = []
    for task, ens, bce in (
        ("a", [0.8, 0.81, 0.82], [0.7, 0.705, 0.71]),
        ("b", [0.7, 0.7, 0.7], [0.7, 0.7, 0.7]),
        ("c", [0.6, 0.61, 0.6], [0.7, 0.7, 0.72]),
        ("d", [0.6, 0.61, 0.6], [0.7, float("nan"), 0.72]),  # a diverged run: not tested, a tie
    ):
        rows += [
            {"task": task, "arm": arm, "seed": s, "final_test_acc": v}
            for arm, vals in (("ensloss", ens), ("bce", bce))
            for s, v in enumerate(vals)
        ]
    assert E.paired_counts(pd.DataFrame(rows)) == {"bce": {"better": 1, "tie": 2, "worse": 1}}


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


TRAIN = dict(lr=0.01, epochs=2, momentum=0.9, weight_decay=0.0, batch_size=8, boxcox_lambda=0.0, clip=-1.0)


def tiny_ctx():
    return RunContext(E.Knobs(), "quick", 0, torch.device("cpu"), History(), False)


def toy_task(X):
    y = (torch.arange(len(X)) % 2).float()
    return E.Task("t", X, y, X[:8], y[:8], X[:8], y[:8], lambda: torch.nn.Linear(X.shape[1], 1))


def test_a_diverging_arm_is_stopped_and_marked():
    X = torch.full((32, 2), 1e30)  # margins of ±inf ⇒ e^{−z} = inf at the first step
    run, _ = E.train_arm(tiny_ctx(), toy_task(X), Arm("exponential", "exponential"), 0, "exponential", **TRAIN)
    assert run.diverged and run.diverged_epoch == 1 and run.diverged_step == 1
    assert math.isnan(run.final_test_acc) and math.isnan(run.early_stop_test_acc)


def test_sgd_epoch_draws_derivatives_sorted_with_the_margins():
    torch.manual_seed(0)
    X, y = torch.randn(40, 3), (torch.arange(40) % 2).float()
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = E.sgd_epoch(model, opt, X, y, loss="ensloss", batch_size=16, order=gen(0), draws=gen(1))
    assert stats.steps == 2 and not stats.diverged and 0 <= stats.train_acc <= 1  # 40 // 16, last batch dropped
    z, g = stats.first_draw
    assert (np.diff(g[np.argsort(z)]) >= 0).all() and (g < 0).all()
    fixed = E.sgd_epoch(model, opt, X, y, loss="bce", batch_size=16, order=gen(0), draws=gen(1))
    assert fixed.first_draw is None


def test_early_stopping_reads_the_test_accuracy_at_the_best_validation_epoch():
    ctx = tiny_ctx()
    torch.manual_seed(1)
    X = torch.randn(64, 4)
    run, _ = E.train_arm(ctx, toy_task(X), Arm("bce", "BCE"), 0, "bce", **{**TRAIN, "epochs": 5})
    h = ctx.history.frame()
    val = h[h.metric == "val_acc"].sort_values("step")["value"].to_numpy()
    test = h[h.metric == "test_acc"].sort_values("step")["value"].to_numpy()
    k = int(np.argmax(val))  # chosen on validation only (ties: the first)
    assert run.early_stop_epoch == k + 1 and run.early_stop_test_acc == test[k] and run.final_test_acc == test[-1]


def test_two_class_logits_give_labkit_accuracy_the_sign_rule():
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0), model.bias.fill_(0.0)
    X = torch.tensor([[-2.0], [0.0], [3.0], [1.0]])
    y = torch.tensor([0.0, 0.0, 1.0, 0.0])  # f = (−2, 0, 3, 1): predicted (0, 0, 1, 1)
    assert accuracy(E.TwoClassLogits(model), X, y) == pytest.approx(0.75)


def test_validation_split_is_carved_from_training_and_flips_leave_test_clean():
    X, y, _ = tabular.relu_sum_classification(1000, 5, seed=0)
    s = tabular.standardize_split(X, y, seed=0, val_size=0.2)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (560, 140, 300)
    f = E.flipped(s, 0.2, seed=0)
    assert (f.y_train != s.y_train).sum() == 112 and (f.y_val != s.y_val).sum() == 28
    assert np.array_equal(f.y_test, s.y_test)


def test_invalid_arguments_raise_value_error():
    for kwargs in ({"preset": "huge"}, {"losses": "bce"}, {"clip": 0.5}, {"epochs": 1.5}, {"nope": 1}):
        with pytest.raises(ValueError):
            E.run(progress=False, **kwargs)


def test_knobs_keep_the_preset_values():
    assert E.Knobs() == E.Knobs(**resolve_params(E.PARAMS, "quick", {}))
    std = resolve_params(E.PARAMS, "standard", {})
    assert std["n_seeds"] == 10 and std["losses"] == E.LOSS_SETS[1] and std["n_large"] == 5000


def test_small_run_returns_a_headline_claim_and_finite_metrics():
    r = E.run(progress=False, n=200, d=5, epochs=2, n_seeds=2, width=8, depth=1)
    assert isinstance(r, Result) and r.headline is not None and "BCE" in r.headline.claim
    assert [c.headline for c in r.claims] == [True, False, False]
    assert all(math.isfinite(v) for v in r.metrics.values())
    assert set(r.history["metric"]) == {"train_acc", "val_acc", "test_acc"} and r.history["step"].max() == 2
    assert len(r.headline.values) == 2


def test_tiny_run_with_extra_tasks_and_every_loss():
    r = E.run("standard", progress=False, n=200, d=5, n_large=150, epochs=2, n_seeds=2, width=8, depth=1)
    table = r.extras["per_seed"]
    assert set(table["task"]) == {"sim", "sim n=150", "breast_cancer"}
    assert set(table["arm"]) == {"bce", "hinge", "exponential", "focal", "ensloss"} and len(table) == 3 * 5 * 2
    assert {"accuracy", "final_test_acc", "early_stop_test_acc", "derivatives", "implied_loss", "tasks"} <= set(
        r.figures
    )
    assert [c.headline for c in r.claims].count(True) == 1 and len(r.claims) == 5  # 4 baselines + early-stopped
    assert set(r.extras["paired"]) == {"bce", "hinge", "exponential", "focal"}


def test_digits_pairs_become_32x32_images_with_flipped_training_labels():
    p = E.Knobs(n=100, d=3, n_large=0, breast_cancer=False, flip=0.2, digits_pairs=2, width=4, depth=1)
    tasks = E.build_tasks(p, seed=0, device=torch.device("cpu"))
    assert [t.name for t in tasks] == ["sim", "digits 0v1", "digits 8v9"]
    digits = tasks[1]
    assert digits.X_train.shape[1:] == (1, 32, 32) and len(digits.y_test) == round(0.3 * 360)
    assert digits.make_model()(digits.X_test[:4]).shape == (4, 1)
