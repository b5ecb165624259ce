"""BANG (#25): weight interpolation, output ensemble, FalseFalseTrue, LS + MixUp, ECE, MultiColorDigits, the run."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.core import DivergenceError, Verdict, torch_threads
from labkit.data import colored_digits as cd
from labkit.methods import bang


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


# --- WiSE-FT and the output-space ensemble ------------------------------------------------------------------


def test_interpolate_weights_by_hand():
    theta_0 = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0]), "steps": torch.tensor(3)}
    theta_1 = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([4.0]), "steps": torch.tensor(7)}
    mid = bang.interpolate_weights(theta_0, theta_1, 0.25)
    # 0.75·(1, 2) + 0.25·(3, 6) = (1.5, 3.0); 0.75·0 + 0.25·4 = 1.0; the int buffer comes from θ_1
    assert mid["w"].tolist() == [1.5, 3.0] and mid["b"].tolist() == [1.0] and int(mid["steps"]) == 7
    assert bang.interpolate_weights(theta_0, theta_1, 0.0)["w"].tolist() == [1.0, 2.0]
    assert bang.interpolate_weights(theta_0, theta_1, 1.0)["b"].tolist() == [4.0]
    with pytest.raises(ValueError, match="differ"):
        bang.interpolate_weights(theta_0, {"w": theta_1["w"]}, 0.5)


def test_interpolating_every_parameter_of_a_linear_model_interpolates_its_output():
    # f_θ(x) = Wx + b is linear in θ, so f_{θ_α} = (1 − α) f_{θ_0} + α f_{θ_1} only if W AND b are averaged
    torch.manual_seed(0)
    m0, m1, mid = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    mid.load_state_dict(bang.interpolate_weights(m0.state_dict(), m1.state_dict(), 0.3))
    x = torch.randn(5, 3)
    assert torch.allclose(mid(x), 0.7 * m0(x) + 0.3 * m1(x), atol=1e-6)


def test_output_ensemble_by_hand():
    # softmax(0, 0) = (.5, .5); softmax(ln 3, 0) = (.75, .25); α = .5 → (.625, .375); α = .2 → (.55, .45)
    z0, z1 = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    assert bang.output_ensemble(z0, z1, 0.5).tolist()[0] == pytest.approx([0.625, 0.375])
    assert bang.output_ensemble(z0, z1, 0.2).tolist()[0] == pytest.approx([0.55, 0.45])


def test_false_false_true_by_hand():
    c0 = torch.tensor([False, False, True, False])
    c1 = torch.tensor([False, True, False, False])
    avg = torch.tensor([True, True, True, False])
    assert bang.false_false_true(c0, c1, avg) == 0.25  # only sample 0: wrong, wrong, right


def test_agreement_table_and_per_class_rate():
    c0 = torch.tensor([True, True, False, False, False])
    c1 = torch.tensor([True, False, True, False, False])
    avg = torch.tensor([True, True, False, True, False])
    rows = {(r["θ_0"], r["θ_ft"]): (r["n"], r["θ_α right"]) for r in bang.agreement(c0, c1, avg, seed=0)}
    assert rows == {
        ("right", "right"): (1, 1),
        ("right", "wrong"): (1, 1),
        ("wrong", "right"): (1, 0),
        ("wrong", "wrong"): (2, 1),
    }
    y = torch.tensor([0, 0, 1, 1, 1])
    assert bang.per_class_fft(c0, c1, avg, y)[:2] == pytest.approx([0.0, 1 / 3])


# --- BANG's fine-tuning loss ---------------------------------------------------------------------------------


def test_smooth_targets_by_hand():
    # (1 − 0.1)·onehot(2) + 0.1/4 = (.025, .025, .925, .025)
    assert bang.smooth_targets(torch.tensor([2]), 4, 0.1).tolist()[0] == pytest.approx([0.025, 0.025, 0.925, 0.025])


def test_soft_cross_entropy_by_hand_and_against_torch():
    z = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (.75, .25)
    assert bang.soft_cross_entropy(z, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(-math.log(0.75))
    half = -0.5 * math.log(0.75) - 0.5 * math.log(0.25)  # 0.8370
    assert bang.soft_cross_entropy(z, torch.tensor([[0.5, 0.5]])).item() == pytest.approx(half, abs=1e-6)
    logits, y = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 4, 0])
    # torch's own label smoothing uses the same (1 − ε)·onehot + ε/C targets
    ours = bang.soft_cross_entropy(logits, bang.smooth_targets(y, 5, 0.1))
    assert ours.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), abs=1e-6)
    soft = torch.softmax(torch.randn(6, 5), -1)
    assert bang.soft_cross_entropy(logits, soft).item() == pytest.approx(F.cross_entropy(logits, soft).item(), abs=1e-6)


def test_mixup_by_hand():
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    xm, tm = bang.mixup(x, t, 0.75, torch.tensor([1, 0]))
    assert xm.tolist() == [[0.5, 1.0], [1.5, 3.0]] and tm.tolist() == [[0.75, 0.25], [0.25, 0.75]]


def test_bang_loss_is_ce_without_ls_and_mixup_and_mixes_then_smooths_otherwise():
    model = torch.nn.Linear(3, bang.N_CLASSES)
    x, y = torch.randn(4, 3), torch.tensor([1, 2, 3, 1])
    plain = bang.bang_loss(model, x, y, 0.0, 0.0, np.random.default_rng(0), torch.Generator())
    assert plain.item() == pytest.approx(F.cross_entropy(model(x), y).item(), abs=1e-6)
    got = bang.bang_loss(model, x, y, 0.1, 0.4, np.random.default_rng(5), torch.Generator().manual_seed(9))
    lam = np.random.default_rng(5).beta(0.4, 0.4)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(9))
    t = 0.9 * F.one_hot(y, 10).float() + 0.01
    want = -(lam * t + (1 - lam) * t[perm]) * torch.log_softmax(model(lam * x + (1 - lam) * x[perm]), -1)
    assert got.item() == pytest.approx(want.sum(-1).mean().item(), abs=1e-6)


# --- calibration -----------------------------------------------------------------------------------------------


def test_ece_by_hand():
    probs = torch.tensor(
        [
            [0.9, 0.05, 0.05],  # conf .90, right  → bin 9
            [0.95, 0.05, 0.0],  # conf .95, wrong  → bin 9
            [0.2, 0.6, 0.2],  # conf .60, right  → bin 6
            [0.4, 0.3, 0.3],
        ]
    )  # conf .40, wrong  → bin 4
    y = torch.tensor([0, 1, 1, 2])
    # bin 9: 2/4·|0.5 − 0.925| = 0.2125; bin 6: 1/4·|1 − 0.6| = 0.1; bin 4: 1/4·|0 − 0.4| = 0.1
    assert bang.expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.4125, abs=1e-6)
    assert bang.mean_confidence(probs) == pytest.approx((0.9 + 0.95 + 0.6 + 0.4) / 4)
    assert bang.expected_calibration_error(torch.eye(3), torch.arange(3)) == 0.0  # sure and right


def test_ece_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.classification", reason="torchmetrics is the reference")
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 10, generator=gen), -1)
    y = torch.randint(0, 10, (500,), generator=gen)
    ref = tm.multiclass_calibration_error(probs, y, num_classes=10, n_bins=15, norm="l1")
    assert bang.expected_calibration_error(probs, y, n_bins=15) == pytest.approx(float(ref), abs=1e-6)


def test_scale_head_scales_the_logits_only():
    torch.manual_seed(0)
    model = bang.MLP(4, [5], 3)
    x = torch.randn(6, 4)
    keys = bang.head_keys(model)
    assert keys == ["2.weight", "2.bias"]
    scaled = bang.MLP(4, [5], 3)
    scaled.load_state_dict(bang.scale_head(model.state_dict(), keys, 0.5))
    assert torch.allclose(scaled(x), 0.5 * model(x), atol=1e-6)


def test_weight_mass_by_hand():
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # column Σ W² = (1, 1, 4)
    mass = bang.weight_mass(W, {"a": np.array([0]), "b": np.array([1, 2])})
    assert mass == pytest.approx({"a": 1 / 6, "b": 5 / 6})


# --- MultiColorDigits ------------------------------------------------------------------------------------------


def test_colour_maps_give_distinct_colours_and_a_wrong_map_that_is_never_right():
    maps = cd.colour_maps(12, 10, 10, np.random.default_rng(0))
    assert maps.right.shape == (12, 10)
    assert all(len(set(row)) == 10 for row in maps.right) and all(len(set(row)) == 10 for row in maps.wrong)
    assert (maps.right != maps.wrong).all()


def test_draw_colours_follows_the_rule():
    rng = np.random.default_rng(1)
    maps = cd.colour_maps(4, 10, 10, rng)
    y = rng.integers(0, 10, 20000)
    rule = cd.ColourRule((1.0, 0.0, 0.8, 0.3), (0.0, 1.0, 0.0, 0.3))
    col = cd.draw_colours(y, maps, rule, 10, rng)
    right, wrong = col == maps.right[:, y].T, col == maps.wrong[:, y].T
    assert right[:, 0].all() and wrong[:, 1].all()
    # patch 2: right w.p. 0.8 + 0.2·(1/10) = 0.82; patch 3: right 0.3 + 0.4/10 = 0.34, wrong the same
    assert right[:, 2].mean() == pytest.approx(0.82, abs=0.01)
    assert right[:, 3].mean() == pytest.approx(0.34, abs=0.01) and wrong[:, 3].mean() == pytest.approx(0.34, abs=0.01)


def test_group_rule_and_its_checks():
    rule = cd.group_rule(4, 0.8, 0.1, 0.0, 0.3)
    assert rule.right == (0.8, 0.8, 0.1, 0.1) and rule.wrong == (0.0, 0.0, 0.3, 0.3)
    with pytest.raises(ValueError, match="even"):
        cd.group_rule(5, 0.5, 0.5)
    with pytest.raises(ValueError, match="≤ 1"):
        cd.group_rule(2, 0.8, 0.8, 0.0, 0.3)


def test_avg_pool_by_hand():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    # top-left 2×2 block: (0 + 1 + 4 + 5)/4 = 2.5
    assert cd.avg_pool(img).tolist() == [[[2.5, 4.5], [10.5, 12.5]]]


def test_multicolor_digits_splits_encode_and_render():
    rules = bang.colour_rules(
        SimpleNamespace(n_patches=12, pre_a=0.8, pre_b=0.1, ft_a=0.1, ft_b=0.9, ood_a=0.4, ood_b=0.3, ood_b_wrong=0.3)
    )
    s = cd.multicolor_digits(
        0, rules, {"pretrain": 600, "finetune": 600, "ood": -1}, noise=0.0, reuse={"id_test": "ood"}
    )
    assert [len(s[k]) for k in ("pretrain", "finetune", "ood", "id_test")] == [600, 600, 597, 597]
    assert len(set(s["pretrain"].index) | set(s["finetune"].index) | set(s["ood"].index)) == 1797
    assert np.array_equal(s["ood"].index, s["id_test"].index)
    images, _ = cd.load_digit_images()
    assert np.allclose(s["ood"].invariant, cd.avg_pool(images[s["ood"].index]))  # noise 0: the pooled digit
    again = cd.multicolor_digits(0, rules, {"pretrain": 600, "finetune": 600, "ood": -1}, noise=0.0)
    assert np.array_equal(again["pretrain"].colours, s["pretrain"].colours)
    x = cd.encode(s["ood"])
    assert x.shape == (597, 16 + 120) and np.allclose(x[:, 16:].reshape(597, 12, 10).sum(-1), 1.0)
    groups = cd.feature_groups(12)
    assert [len(g) for g in groups.values()] == [16, 60, 60]
    img = cd.render(s["ood"])
    assert img.shape == (597, 3, 28, 28)
    r, c = cd.PATCH_SLOTS[5]
    assert np.allclose(img[0, :, r, c], cd.PALETTE[s["ood"].colours[0, 5]])
    assert np.allclose(img[0, 0, 6:22:4, 6:22:4], s["ood"].invariant[0])


def test_in_distribution_colours_predict_the_label_and_ood_ones_mislead():
    p = SimpleNamespace(n_patches=12, pre_a=0.8, pre_b=0.1, ft_a=0.1, ft_b=0.9, ood_a=0.4, ood_b=0.3, ood_b_wrong=0.3)
    s = cd.multicolor_digits(
        3, bang.colour_rules(p), {"pretrain": 600, "finetune": 600, "ood": -1}, reuse={"id_test": "ood"}
    )
    share = {k: cd.colour_agreement(v) for k, v in s.items()}
    assert share["pretrain"][0][:6].mean() > 0.75 and share["pretrain"][0][6:].mean() < 0.25
    assert share["finetune"][0][6:].mean() > 0.85 and share["ood"][0][6:].mean() < 0.45
    assert share["ood"][1][6:].mean() > 0.3 and share["finetune"][1][6:].mean() < 0.05  # 0.3 + 0.4/10; ≈ 0.1/10


# --- training, run, claims ---------------------------------------------------------------------------------------


def tiny(**over):
    return {"progress": False, "n_seeds": 1, "pre_epochs": 2, "ft_epochs": 3, **over}


def test_invalid_arguments_raise_value_error():
    for kwargs in (
        {"preset": "huge"},
        {"alpha": 1.5},
        {"model": "resnet"},
        {"nope": 1},
        {"ood_b": 0.8, "ood_b_wrong": 0.3},
        {"n_patches": 7},
    ):
        with pytest.raises(ValueError):
            bang.run(**kwargs)


def test_a_nan_loss_names_the_step_and_series():
    X = torch.full((8, 3), float("nan"))
    with pytest.raises(DivergenceError, match="step 1 .*'BANG'"):
        bang.fine_tune(
            torch.nn.Linear(3, 10),
            X,
            torch.zeros(8, dtype=torch.long),
            epochs=1,
            lr=1e-3,
            weight_decay=0.0,
            batch_size=4,
            eps=0.1,
            mixup_a=0.4,
            stream=0,
            series="BANG",
        )


def test_fine_tune_is_deterministic_in_its_stream_and_wise_ft_loads_the_average():
    X, y = torch.randn(32, 5, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 10
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = torch.nn.Linear(5, 10)
        theta_0 = {k: v.clone() for k, v in m.state_dict().items()}
        bang.fine_tune(m, X, y, epochs=2, lr=1e-2, weight_decay=0.0, batch_size=8, eps=0.1, mixup_a=0.4, stream=3)
        runs.append(m.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    avg = bang.wise_ft(torch.nn.Linear(5, 10), theta_0, runs[0], 0.5)
    assert torch.allclose(avg.weight, 0.5 * theta_0["weight"] + 0.5 * runs[0]["weight"])


def test_small_run_paths_end_at_the_trained_models_and_numbers_agree():
    r = bang.run(**tiny())
    path, m = r.extras["path"], r.metrics
    at = lambda arm, a, col: float(path[(path.arm == arm) & np.isclose(path.alpha, a)][col].iloc[0])  # noqa: E731
    for arm in ("wise", "bang", "ose"):
        assert at(arm, 0.0, "ood_acc") == pytest.approx(m["ood_acc_pre"])  # α = 0 is θ_0 on every path
    assert at("wise", 1.0, "ood_acc") == pytest.approx(m["ood_acc_ft"])
    assert at("ose", 1.0, "ood_acc") == pytest.approx(m["ood_acc_ft"])
    assert at("bang", 1.0, "ood_acc") == pytest.approx(m["ood_acc_ftB"])
    assert at("bang", 0.5, "ood_acc") == pytest.approx(m["ood_acc_bang"])
    assert at("wise", 0.5, "ood_acc") == pytest.approx(m["ood_acc_wise"])
    # the headline's one value is WiSE-FT minus the better end, in points
    assert r.headline is not None and r.claims[0] is r.headline
    assert r.headline.values[0] == pytest.approx(100 * (m["ood_acc_wise"] - max(m["ood_acc_pre"], m["ood_acc_ft"])))
    assert [c.headline for c in r.claims].count(True) == 1 and len(r.claims) == 7
    assert all(math.isfinite(v) for v in r.metrics.values())
    assert set(r.history["metric"]) == {"ood_acc", "id_acc", "ood_conf"} and r.history["step"].max() == 5
    assert set(r.history["series"]) == {"pre-train θ_0", "fine-tune θ_ft", "BANG fine-tune θ_ft^B (ε=0.1, a=0.4)"}
    assert r.extras["agreement"]["n"].sum() == r.extras["n_ood"] == 597
    assert {
        "ood_path",
        "id_path",
        "confidence_path",
        "ece_path",
        "reliability",
        "confidence_hist",
        "agreement",
        "fft_per_class",
        "weight_mass",
        "training",
    } <= set(r.figures)


def test_bang_without_ls_and_mixup_is_wise_ft_exactly():
    # same start θ_0, same batches, same loss ⇒ θ_ft^B = θ_ft and the two paths coincide
    r = bang.run(**tiny(label_smoothing=0.0, mixup_a=0.0))
    path = r.extras["path"]
    wise, bng = (path[path.arm == a].sort_values("alpha") for a in ("wise", "bang"))
    assert np.array_equal(wise["ood_acc"].to_numpy(), bng["ood_acc"].to_numpy())
    assert r.metrics["ood_conf_ftB"] == r.metrics["ood_conf_ft"]


@pytest.mark.slow
def test_ablation_scaled_head_and_cnn_variants_run():
    r = bang.run(**tiny(ablation=True, ft_scale=0.5, n_patches=4))
    assert {"wise_ls", "wise_mixup", "wise_scaled"} <= set(r.extras["path"]["arm"])
    assert "WiSE θ_ft head ×0.5" in set(r.extras["path"]["label"])
    # a head ×s keeps θ_ft's argmax: the scaled path ends at θ_ft's accuracy
    path = r.extras["path"]
    end = path[(path.arm == "wise_scaled") & (path.alpha == 1.0)]["ood_acc"].iloc[0]
    assert end == pytest.approx(r.metrics["ood_acc_ft"])
    c = bang.run(**tiny(model="cnn", n_patches=24, pre_epochs=1, ft_epochs=1))
    assert "weight_mass" not in c.figures and np.isfinite(c.metrics["ood_acc_wise"])


# --- the claims: holds / does not hold / inconclusive on hand-made per-seed numbers -------------------------------

H, N, I = Verdict.HOLDS, Verdict.DOES_NOT_HOLD, Verdict.INCONCLUSIVE


def test_diversification_claim_three_ways():
    pre, ft = [0.80, 0.81, 0.80], [0.84, 0.83, 0.85]
    assert bang.claim_diversification(pre, ft, [0.87, 0.86, 0.875], alpha=0.5).verdict is H  # +3, +3, +2.5 pts
    assert bang.claim_diversification(pre, ft, [0.82, 0.81, 0.83], alpha=0.5).verdict is N  # −2 pts each
    assert bang.claim_diversification(pre, ft, [0.87, 0.82, 0.86], alpha=0.5).verdict is I  # +3, −1, +1
    c = bang.claim_diversification([0.9], [0.8], [0.85], alpha=0.5)  # the better end is θ_0 here: −5 pts
    assert c.values == pytest.approx((-5.0,)) and c.headline and "1 seed" in str(c)


def test_weight_vs_output_and_bang_claims_three_ways():
    wise = [0.87, 0.88, 0.86]
    assert bang.claim_weight_vs_output(wise, [0.85, 0.86, 0.84], alpha=0.5).verdict is H
    assert bang.claim_weight_vs_output(wise, [0.89, 0.90, 0.88], alpha=0.5).verdict is N
    assert bang.claim_weight_vs_output(wise, [0.85, 0.90, 0.86], alpha=0.5).verdict is I
    assert bang.claim_bang_beats_wise([0.89, 0.90, 0.88], wise, alpha=0.5).verdict is H
    assert bang.claim_bang_beats_wise([0.85, 0.86, 0.84], wise, alpha=0.5).verdict is N
    # the committed notebook's per-seed BANG − WiSE: 0.0, −2.68, −1.84 points
    assert bang.claim_bang_beats_wise([0.868, 0.852, 0.848], [0.868, 0.8788, 0.8664], alpha=0.5).verdict is I


def test_false_false_true_claim_three_ways():
    assert bang.claim_false_false_true([3, 2, 3]).verdict is H  # 2.67 ± 1.43 samples, above 1
    assert bang.claim_false_false_true([0, 0, 0]).verdict is N  # none: a margin of 0 would have "held"
    assert bang.claim_false_false_true([0, 6, 1]).verdict is I


def test_confidence_claims_three_ways():
    pre, ft = [0.59, 0.60, 0.58], [0.81, 0.82, 0.80]
    assert bang.claim_over_confident(pre, ft).verdict is H
    assert bang.claim_over_confident(ft, pre).verdict is N
    assert bang.claim_over_confident(pre, [0.70, 0.50, 0.62]).verdict is I
    assert bang.claim_tempered(ft, [0.43, 0.42, 0.44]).verdict is H
    assert bang.claim_tempered(ft, [0.90, 0.91, 0.92]).verdict is N
    assert bang.claim_tempered(ft, [0.70, 0.95, 0.80]).verdict is I


def test_calibration_claim_is_lower_is_better():
    ft = [0.05, 0.04, 0.05]
    assert bang.claim_calibration(ft, [0.02, 0.01, 0.02]).verdict is H
    assert bang.claim_calibration(ft, [0.22, 0.21, 0.23]).verdict is N  # the under-confident θ_ft^B of the toy
    assert bang.claim_calibration(ft, [0.01, 0.10, 0.03]).verdict is I


def test_alpha_is_chosen_on_id_accuracy_with_ties_to_the_smallest():
    import pandas as pd

    rows = pd.DataFrame(
        {
            "arm": ["a"] * 3,
            "label": ["A"] * 3,
            "alpha": [0.0, 0.5, 1.0],
            "id_acc": [0.5, 1.0, 1.0],
            "ood_acc": [0.9, 0.8, 0.1],
        }
    )
    assert bang.choose_alpha(rows, 0) == [
        {"seed": 0, "arm": "a", "label": "A", "alpha": 0.5, "id_acc": 1.0, "ood_acc": 0.8}
    ]


def test_knobs_keep_the_preset_values():
    from labkit.core import resolve_params

    assert bang.Knobs() == bang.Knobs(**resolve_params(bang.PARAMS, "quick", {}))
    std = resolve_params(bang.PARAMS, "standard", {})
    assert std["n_patches"] == 24 and std["n_seeds"] == 10 and std["ablation"] is True
