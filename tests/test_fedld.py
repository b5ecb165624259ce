"""FedLD (#04): margin loss, principal aggregation, decomposition, the federated simulator, claims, a small run."""

import functools
import math

import numpy as np
import pytest
import torch

from labkit.core import Verdict
from labkit.data.federated import FeatureShift, dirichlet_split, label_proportions, translate
from labkit.methods import fedld
from labkit.substrates.federated import (
    Client,
    LocalSGD,
    client_means,
    fedavg,
    federated_round,
    fedprox_penalty,
    model_state,
    plain_mean,
)

# ---------------------------------------------------------------- margin control loss


def test_margin_loss_hand_computed_2x2():
    # Z = [[0, 0], [ln 3, 0]], y = [0, 0]: P = [[.5, .5], [.75, .25]]
    z = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([0, 0])
    ce = (-math.log(0.5) - math.log(0.75)) / 2  # 0.490415
    frob_sq = 0.25 + 0.25 + 0.5625 + 0.0625  # ‖P‖_F² over the whole batch = 1.125
    expected = ce + 0.5 * math.log(1 + frob_sq)  # 0.490415 + 0.5·log 2.125
    assert fedld.margin_control_loss(z, y, lam=0.5).item() == pytest.approx(expected, abs=1e-6)
    assert fedld.margin_control_loss(z, y, lam=0.0).item() == pytest.approx(ce, abs=1e-6)


def test_margin_term_is_over_the_batch_not_per_sample():
    z = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([0, 0])
    per_sample = np.mean([math.log(1 + 0.5), math.log(1 + 0.625)])  # the alternative reading
    batch = math.log(1 + 1.125)
    got = fedld.margin_control_loss(z, y, 1.0).item() - fedld.margin_control_loss(z, y, 0.0).item()
    assert got == pytest.approx(batch, abs=1e-6) and abs(got - per_sample) > 0.1


def test_softmax_sq_norm_uniform_and_confident():
    got = fedld.softmax_sq_norm(torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]))
    assert got.tolist() == pytest.approx([0.25, 1.0], abs=1e-6)


# ---------------------------------------------------------------- principal aggregation


def test_principal_two_orthogonal_clients_by_hand():
    # g1 = (3, 0), g2 = (0, 4): H = diag(4.5, 8), s = (8, 4.5), Σs = 12.5; v1 ∥ (0, 1), v2 ∥ (1, 0)
    G = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    # k = ⌊0.8·2⌋ = 1: g1·v1 = 0 is skipped; ĝ2 = (8/12.5)·4·(0, 1) = (0, 2.56); mean = (0, 1.28)
    assert fedld.principal_aggregate(G, 0.8).tolist() == pytest.approx([0.0, 1.28], abs=1e-6)
    # k = 2: ĝ1 = (4.5/12.5)·3·(1, 0) = (1.08, 0); mean = (0.54, 1.28)
    assert fedld.principal_aggregate(G, 1.0).tolist() == pytest.approx([0.54, 1.28], abs=1e-6)


def test_principal_identical_updates_return_that_update():
    # H = ‖g‖²/3 · 11ᵀ: s = (‖g‖², 0, 0), share 1 on v1 ∥ g, so ĝ_i = 1 · ‖g‖ · g/‖g‖ = g
    g = torch.tensor([1.0, -2.0, 2.0])
    assert fedld.principal_aggregate(torch.stack([g, g, g]), 0.8).tolist() == pytest.approx(g.tolist(), abs=1e-5)


def test_principal_keeps_each_clients_sign_and_eigen_share_magnitude():
    # g = (2,0), (1,0), (-1,0): rank 1, s1 = (4+1+1)/3 = 2 is all of Σs; ĝ_i = sign(g_i·v1)·‖g_i‖·(1,0)
    G = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    assert fedld.principal_aggregate(G, 1.0).tolist() == pytest.approx([(2 + 1 - 1) / 3, 0.0], abs=1e-5)


def test_majority_sign_flip_and_that_it_does_not_change_the_update():
    G = torch.tensor([[1.0, 0.0], [2.0, 1.0], [-1.0, 0.0]])
    V = torch.tensor([[-1.0, 0.0]])  # 2 of 3 clients have g·v < 0 → flip
    assert fedld.calibrate_signs(G, V).tolist() == [[1.0, 0.0]]
    assert fedld.calibrate_signs(G, -V).tolist() == [[1.0, 0.0]]
    share = torch.tensor([0.7])
    # sign(g·v)·v is the same for v and −v: the calibration cannot change ĝ_i
    assert torch.equal(fedld.revise_updates(G, V, share), fedld.revise_updates(G, -V, share))
    assert fedld.revise_updates(G, V, share)[:, 0].tolist() == pytest.approx([0.7, 0.7 * math.sqrt(5), -0.7])


def test_principal_guards_zero_updates_and_scalars():
    assert torch.equal(fedld.principal_aggregate(torch.zeros(4, 3, 2)), torch.zeros(3, 2))
    scalars = torch.tensor([[1.0], [2.0], [6.0]])
    assert fedld.principal_aggregate(scalars).tolist() == [3.0]
    out = fedld.principal_aggregate(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 1.0)
    assert torch.isfinite(out).all()


def test_principal_directions_match_numpy_svd():
    rng = np.random.default_rng(3)
    G = rng.normal(size=(5, 12))
    s, V = fedld.principal_directions(torch.tensor(G), 5)
    _, sigma, vt = np.linalg.svd(G, full_matrices=False)
    assert s.numpy() == pytest.approx(sigma**2 / 5, rel=1e-8)
    unit = V.numpy() / np.linalg.norm(V.numpy(), axis=1, keepdims=True)
    assert np.abs(np.sum(unit * vt, axis=1)) == pytest.approx(np.ones(5), abs=1e-8)


# ---------------------------------------------------------------- decomposition


def test_loss_decomposition_by_hand_and_identity():
    # p = (1/4, 3/4); C[i, j] = L_j(w_i); global model: L_1 = 1, L_2 = 2
    C = torch.tensor([[1.0, 3.0], [5.0, 2.0]])
    t = fedld.loss_decomposition(C, torch.tensor([1.0, 2.0]), [1, 3])
    # L(w_1) = 1/4 + 9/4 = 2.5, L(w_2) = 5/4 + 6/4 = 2.75; local = 1/4 + 6/4 = 1.75
    assert t.local == pytest.approx(1.75)
    assert t.shift == pytest.approx(0.25 * (2.5 - 1) + 0.75 * (2.75 - 2))  # 0.9375
    assert t.aggregation == pytest.approx(1.75 - (0.25 * 2.5 + 0.75 * 2.75))  # −0.9375
    assert t.total == pytest.approx(1.75)
    rng = np.random.default_rng(0)
    for m in (2, 5, 9):
        C, g, n = rng.uniform(0, 3, (m, m)), rng.uniform(0, 3, m), rng.integers(1, 50, m)
        t = fedld.loss_decomposition(torch.tensor(C), torch.tensor(g), n)
        assert t.local + t.shift + t.aggregation == pytest.approx(np.dot(n / n.sum(), g), abs=1e-12)


# ---------------------------------------------------------------- simulator and data


def test_fedavg_is_size_weighted_mean():
    G = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert fedavg(G, torch.tensor([1.0, 3.0])).tolist() == pytest.approx([2.5, 3.5])
    assert plain_mean(G, torch.tensor([1.0, 3.0])).tolist() == pytest.approx([2.0, 3.0])


def test_fedprox_penalty_value_and_gradient():
    w, anchor = torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([0.0, 1.0])
    pen = fedprox_penalty([w], [anchor], mu=0.1)  # 0.05·(1 + 1)
    pen.backward()
    assert pen.item() == pytest.approx(0.1)
    assert w.grad.tolist() == pytest.approx([0.1, 0.1])  # μ(w − w_glob)


def test_round_one_is_plain_mean_of_local_models():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    clients = [Client(torch.randn(n, 3), torch.randint(0, 2, (n,))) for n in (4, 12)]
    before = model_state(model)
    rr = federated_round(
        model,
        clients,
        torch.nn.functional.cross_entropy,
        LocalSGD(batch_size=4),
        fedld.server_rule(fedld.Arm("x", "x", principal=True), 0, 0.8),
        torch.Generator(),
    )
    for k, w in model.state_dict().items():
        expected = (rr.local_states[0][k] + rr.local_states[1][k]) / 2  # unweighted, not 1/4 : 3/4
        assert torch.allclose(w, expected, atol=1e-6) and not torch.allclose(w, before[k])
    assert fedld.server_rule(fedld.Arm("x", "x", principal=True), 1, 0.8) is not plain_mean


def test_norm_matched_rule_keeps_principal_direction_with_fedavg_length():
    G, sizes = torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([1.0, 1.0])
    rule = fedld.server_rule(fedld.Arm("x", "x", principal=True), 1, 0.8, norm_match=True)
    # principal (0, 1.28) stretched to ‖FedAvg‖ = ‖(1.5, 2)‖ = 2.5
    assert rule(G, sizes).tolist() == pytest.approx([0.0, 2.5], abs=1e-6)


def test_dirichlet_split_covers_every_sample_once_and_no_client_is_empty():
    labels = np.repeat(np.arange(10), 10)
    for alpha, m in [(0.01, 50), (0.5, 5), (100.0, 7)]:
        parts = dirichlet_split(labels, m, alpha, np.random.default_rng(1))
        assert len(parts) == m and min(len(p) for p in parts) > 0
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))
    skewed = label_proportions(labels, dirichlet_split(labels, 5, 0.05, np.random.default_rng(2)), 10)
    flat = label_proportions(labels, dirichlet_split(labels, 5, 1000.0, np.random.default_rng(2)), 10)
    assert skewed.max(axis=1).mean() > 0.5 > flat.max(axis=1).mean()


def test_feature_shift_translate_and_contrast_by_hand():
    img = np.zeros((1, 3, 3), dtype=np.float32)
    img[0, 1, 1] = 1.0
    assert translate(img, 1, 0)[0, 1, 2] == 1.0 and translate(img, 0, -1)[0, 0, 1] == 1.0
    x = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    out = FeatureShift(contrast=1.5, brightness=0.1)(x, side=2)  # clip(1.5x + 0.1, 0, 1)
    assert out[0].tolist() == pytest.approx([0.1, 0.85, 1.0, 0.475])


def test_client_means_by_hand():
    got = client_means(torch.tensor([1.0, 3.0, 10.0]), torch.tensor([0, 0, 1]), 2)
    assert got.tolist() == [2.0, 10.0]


def test_run_rejects_bad_params():
    with pytest.raises(ValueError):
        fedld.run(preset="quick", k_proportion=0.0)
    with pytest.raises(ValueError):
        fedld.run(preset="quick", n_clientz=3)


def tiny_clients(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Client(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in (6, 10, 14)]


def test_fedld_round_is_margin_loss_plus_principal_rule():
    # the method's loop equals the generic simulator with the margin loss and the experiment's FedLD arm rule
    arm = fedld.Arm(fedld.FEDLD, "FedLD", lam=0.1, principal=True)
    opt = LocalSGD(batch_size=4)
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for r in range(3):
        fedld.fedld_round(a, tiny_clients(), round_idx=r, lam=0.1, k_proportion=0.8, opt=opt, generator=ga)
        loss = functools.partial(fedld.margin_control_loss, lam=0.1)
        federated_round(b, tiny_clients(), loss, opt, fedld.server_rule(arm, r, 0.8), gb)
    for k, w in a.state_dict().items():
        assert torch.equal(w, b.state_dict()[k])
    assert fedld.fedld_server_rule(0, 0.8) is plain_mean


# ---------------------------------------------------------------- claims: holds, does not hold, inconclusive


def test_accuracy_claim_three_verdicts():
    holds = fedld.accuracy_claim([0.90, 0.91, 0.92], [0.93, 0.95, 0.96], setting="label skew")
    assert holds.headline and holds.verdict is Verdict.HOLDS
    assert holds.values == pytest.approx((0.03, 0.04, 0.04)) and holds.margin == 0.0
    fails = fedld.accuracy_claim([0.90, 0.91, 0.92], [0.80, 0.82, 0.81], setting="label skew")
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    mixed = fedld.accuracy_claim([0.90, 0.91, 0.92], [0.95, 0.85, 0.93], setting="label skew")
    assert mixed.verdict is Verdict.INCONCLUSIVE
    diverged = fedld.accuracy_claim([0.90, 0.91], [float("nan"), 0.99], setting="label skew")
    assert diverged.verdict is Verdict.INCONCLUSIVE


def test_confidence_claim_three_verdicts():
    # values are the relative cuts 1 − conf_margin / conf_fedavg
    holds = fedld.confidence_claim([0.6, 0.5, 0.4], [0.3, 0.25, 0.2], lam_margin=1.0)
    assert holds.values == pytest.approx((0.5, 0.5, 0.5)) and holds.verdict is Verdict.HOLDS
    assert not holds.headline
    fails = fedld.confidence_claim([0.6, 0.5, 0.4], [0.7, 0.6, 0.5], lam_margin=1.0)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    mixed = fedld.confidence_claim([0.6, 0.5, 0.4], [0.3, 0.6, 0.35], lam_margin=1.0)
    assert mixed.verdict is Verdict.INCONCLUSIVE


def test_margin_ablation_claim_three_verdicts():
    assert fedld.margin_ablation_claim([0.90, 0.91], [0.92, 0.93], lam_margin=1.0).verdict is Verdict.HOLDS
    fails = fedld.margin_ablation_claim([0.90, 0.91, 0.92], [0.88, 0.88, 0.89], lam_margin=1.0)
    assert fails.verdict is Verdict.DOES_NOT_HOLD
    mixed = fedld.margin_ablation_claim([0.90, 0.91, 0.92], [0.95, 0.88, 0.93], lam_margin=1.0)
    assert mixed.verdict is Verdict.INCONCLUSIVE
    one = fedld.margin_ablation_claim([0.90], [0.91], lam_margin=1.0)
    assert one.verdict is Verdict.HOLDS and "1 seed" in str(one)


# ---------------------------------------------------------------- a small run


def test_small_run_headline_identity_and_figures():
    r = fedld.run(rounds=3, n_seeds=2, n_clients=3, hidden=8, progress=False)
    assert list(r.history.columns) == ["seed", "step", "series", "metric", "value"]
    assert set(r.history.seed) == {0, 1} and r.history.step.max() == 3
    assert r.headline is r.claims[0] and r.headline.headline and len(r.claims) == 3
    assert all(len(c.values) == 2 for c in r.claims)
    assert all(math.isfinite(v) for v in r.metrics.values())
    # the decomposition is an identity: the three terms (from every local model's loss on every client) add up
    # to L(w_glob) measured by its own forward pass on the union, at every round of every arm
    assert r.metrics["max_decomp_gap"] <= 1e-4
    h = r.history.pivot_table(index=["seed", "step", "series"], columns="metric", values="value")
    total = h.loss_local + h.loss_shift + h.loss_agg
    assert np.allclose(total, h.loss_global, atol=1e-4)
    assert {"decomposition", "test_acc", "per_client_acc", "spectrum", "update_cosine"} <= set(r.figures)
