"""EAR (#20): HDC encoder and OOD score, zero-cost proxies, routing, streams, claims, and runs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from labkit.core import DivergenceError, History, RunContext, torch_threads
from labkit.data import streams as S
from labkit.methods import ear

T = torch.tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def tiny_ctx(**overrides):
    return RunContext(ear.Knobs(**overrides), "quick", 0, torch.device("cpu"), History(), False)


def linear(weight, bias=None):
    """nn.Linear with the given weight (out × in) and bias (zeros if None)."""
    weight = T(weight, dtype=torch.float32)
    m = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        m.weight.copy_(weight)
        m.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else T(bias, dtype=torch.float32))
    return m


# ---------------------------------------------------------------- HDC encoding


def test_projections_have_orthonormal_columns_and_are_seeded():
    Ps = ear.projection_matrices([3, 5], 64, torch.Generator().manual_seed(0))
    assert [tuple(P.shape) for P in Ps] == [(64, 3), (64, 5)]
    for P in Ps:
        assert torch.allclose(P.T @ P, torch.eye(P.shape[1]), atol=1e-5)
    again = ear.projection_matrices([3, 5], 64, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(Ps, again))
    with pytest.raises(ValueError, match="hd_dim"):
        ear.projection_matrices([32], 16, torch.Generator())


def test_hdc_encode_by_hand():
    # P1 sends layer 1 (2 units) to coordinates 0, 1; P2 sends layer 2 (1 unit) to coordinate 2 (D = 4)
    P1, P2 = T([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]), T([[0.0], [0.0], [1.0], [0.0]])
    f1, f2 = T([[3.0, 1.0], [0.0, 2.0]]), T([[2.0], [-1.0]])
    means = [T([1.0, 1.0]), T([0.0])]
    H = ear.hdc_encode([f1, f2], [P1, P2], means)
    # x1: (3−1, 1−1, 2, 0) = (2, 0, 2, 0);  x2: (−1, 1, −1, 0)
    assert H.tolist() == [[2.0, 0.0, 2.0, 0.0], [-1.0, 1.0, -1.0, 0.0]]
    assert ear.hdc_encode([f1, f2], [P1, P2], means, binarize=True).tolist() == [[1, -1, 1, -1], [-1, 1, -1, -1]]


def test_feature_means_per_unit_per_layer_and_none():
    f = T([[1.0, 4.0], [3.0, 8.0]])
    assert ear.feature_means([f], "unit")[0].tolist() == [2.0, 6.0]
    assert ear.feature_means([f], "layer")[0].tolist() == [4.0]  # HDFF's code: one scalar per layer
    assert ear.feature_means([f], "none")[0].tolist() == [0.0]


def test_bundle_cosine_and_ood_score_by_hand():
    H = T([[1.0, 0.0], [3.0, 1.0], [0.0, 2.0]])
    C = ear.bundle_by_class(H, T([0, 0, 1]), [0, 1])
    assert C.tolist() == [[4.0, 1.0], [0.0, 2.0]]
    cos = ear.cosine_matrix(T([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), T([[1.0, 0.0], [0.0, 1.0]]))
    r = 1 / math.sqrt(2)
    assert cos.flatten().tolist() == pytest.approx([1.0, 0.0, r, r, 0.0, 0.0])  # a zero vector has cosine 0
    # s(x) = max_k cos(H(x), C_k): (1, 0) vs C0 = (4, 1): 4/√17; vs C1 = (0, 2): 0
    assert ear.ood_score(T([[1.0, 0.0]]), C).item() == pytest.approx(4 / math.sqrt(17))


def test_threshold_lets_the_tpr_share_pass_and_window_fraction():
    scores = torch.arange(1.0, 21.0)  # 1..20
    theta = ear.tpr_threshold(scores, 0.95)
    assert theta == pytest.approx(1.95)  # 5% quantile, linear interpolation: 1 + 0.05·19
    assert float((scores >= theta).double().mean()) == pytest.approx(0.95)
    assert ear.ood_fraction(T([0.1, 0.5, 0.9, 0.2]), 0.3) == 0.5


def test_auroc_by_hand_and_against_sklearn():
    from sklearn.metrics import roc_auc_score

    # pairs (in, out): (3,1) (3,2) (2,1) win, (2,2) tie → 3.5 / 4
    assert ear.auroc([3.0, 2.0], [1.0, 2.0]) == 0.875
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 30).astype(float) - 1  # many ties
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[a, b])
    assert ear.auroc(a, b) == pytest.approx(expected, abs=1e-12)


def test_msp_energy_and_mahalanobis_by_hand():
    logits = T([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert ear.msp_score(logits).tolist() == pytest.approx([0.5, 0.75])
    assert ear.energy_score(logits).tolist() == pytest.approx([math.log(2), math.log(4)])
    # identity precision, class means (0,0) and (4,0): x = (1, 1) is at squared distance 2 from the first
    score = ear.mahalanobis_score(T([[1.0, 1.0]]), T([[0.0, 0.0], [4.0, 0.0]]), torch.eye(2))
    assert score.item() == pytest.approx(-2.0)
    f, y = T([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]]), T([0, 0, 1, 1])
    mus, prec = ear.mahalanobis_fit(f, y, [0, 1], ridge=1.0)
    # class means (0, 0), (4, 0); within-class covariance diag(0, 1) + ridge → precision diag(1, 1/2)
    assert mus.tolist() == [[0.0, 0.0], [4.0, 0.0]] and prec.diag().tolist() == pytest.approx([1.0, 0.5])
    assert ear.mahalanobis_score(T([[1.0, 2.0]]), mus, prec).item() == pytest.approx(-(1.0 + 4.0 / 2))


def test_hdc_pieces_agree_with_torchhd():
    torchhd = pytest.importorskip("torchhd")
    gen = torch.Generator().manual_seed(3)
    feats = [torch.randn(12, 6, generator=gen), torch.randn(12, 4, generator=gen)]
    y = torch.arange(12) % 3
    Ps = ear.projection_matrices([6, 4], 256, gen)
    means = ear.feature_means(feats, "unit")
    ours = ear.hdc_encode(feats, Ps, means)
    layers = []
    for f, P, mu in zip(feats, Ps, means):
        emb = torchhd.embeddings.Projection(P.shape[1], P.shape[0])
        with torch.no_grad():
            emb.weight.copy_(P)  # torchhd computes x Φᵀ with Φ = P (D × c)
        layers.append(emb(f - mu))
    theirs = torchhd.multiset(torch.stack(layers, dim=-2))  # bundle across layers
    assert torch.allclose(ours, theirs.as_subclass(torch.Tensor), atol=1e-5)
    centroid = torchhd.models.Centroid(256, 3)
    centroid.add(theirs, y)
    assert torch.allclose(ear.bundle_by_class(ours, y, [0, 1, 2]), centroid.weight, atol=1e-4)
    assert torch.allclose(ear.cosine_matrix(ours, ear.bundle_by_class(ours, y, [0, 1, 2])), centroid(theirs), atol=1e-5)
    bipolar = ear.hdc_encode(feats, Ps, means, binarize=True)
    assert torch.equal(bipolar, theirs.normalize().as_subclass(torch.Tensor))


def test_memory_threshold_passes_the_tpr_share_of_validation():
    gen = torch.Generator().manual_seed(0)
    taps = [torch.rand(200, 8, generator=gen), torch.rand(200, 4, generator=gen)]
    mem = ear.HDCMemory(ear.projection_matrices([8, 4], 128, gen), ear.feature_means(taps), False)
    mem.add_domain(taps, torch.arange(200) % 5, range(5), split_seed=1, tpr=0.9)
    val_scores = mem.score(mem.val_H[0])
    assert float((val_scores >= mem.theta).double().mean()) >= 0.9
    fit, val = ear.hdc_fit_split(200, 1)
    assert len(val) == 40 and set(fit.tolist()).isdisjoint(val.tolist())


# ---------------------------------------------------------------- routing


def test_routing_by_class_and_by_domain_descriptors():
    C = [T([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), T([[0.0, 0.0, 1.0]])]  # domain 0: two classes; domain 1: one
    H = T([[0.9, 0.1, 0.0], [0.1, 0.0, 1.0], [0.0, 0.8, 0.5]])
    assert ear.domain_similarity(H, C).argmax(1).tolist() == [0, 1, 0]
    assert ear.route_by_class(H, C).tolist() == [0, 1, 0]
    # one bundled descriptor per domain: D0 = (1, 1, 0), D1 = (0, 0, 1); x3 = (0, .8, .5): cos .566 vs .530
    assert ear.route_by_domain(H, T([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])).tolist() == [0, 1, 0]
    # a zero source descriptor (features centred on the source mean) has cosine 0 with everything: x1, which
    # is orthogonal to D1, goes to the source only by the tie; the others leave it
    zero_source = T([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert ear.cosine_matrix(H, zero_source)[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert ear.route_by_domain(H, zero_source).tolist() == [0, 1, 1]


def test_ear_predict_uses_the_routed_head_and_its_classes():
    heads = [linear([[1.0], [0.0]]), linear([[0.0], [1.0]])]  # head 0 says class 0, head 1 says class 1
    classes = [T([0, 1]), T([5, 6])]
    pred = ear.ear_predict(heads, classes, T([0, 1, 1]), T([[1.0], [1.0], [1.0]]))
    assert pred.tolist() == [0, 6, 6]


# ---------------------------------------------------------------- zero-cost proxies


def test_relu_codes_and_naswot_kernel_by_hand():
    net = nn.Sequential(linear([[1.0, 0.0], [0.0, 1.0]]), nn.ReLU(), linear([[1.0, 1.0]]))
    x = T([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    codes = ear.relu_codes(net, x)
    assert codes.tolist() == [[1, 0], [0, 1], [1, 1]]
    K = ear.naswot_kernel(codes)
    # K = N_A − Hamming: (1,0)·(0,1) disagree twice → 0; (1,0)·(1,1) once → 1
    assert K.tolist() == [[2, 0, 1], [0, 2, 1], [1, 1, 2]]
    # det K = 2(4 − 1) − 0 + 1(0 − 2) = 4
    assert ear.naswot_score(net, x, ridge=0.0) == pytest.approx(math.log(4.0))
    assert ear.naswot_score(net, x, ridge=1.0) == pytest.approx(math.log(np.linalg.det(K.numpy() + np.eye(3))))


def test_naswot_ridge_keeps_identical_inputs_finite():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x = torch.ones(5, 3)  # all codes equal: K = 4·11ᵀ has rank 1
    assert math.isfinite(ear.naswot_score(net, x))
    assert ear.naswot_score(net, x, ridge=0.0) < -20  # singular without the ridge


def test_synflow_by_hand_ignores_signs_and_leaves_the_net_alone():
    # |W1| = [[1, 2], [3, 4]], |W2| = [[5, 6]], biases 0, input (1, 1): h = (3, 7), R = 5·3 + 6·7 = 57.
    # layer 2: Σ W2 ⊙ h = 57; layer 1: ∂R/∂W1[i, j] = W2[i] → Σ = 5·(1+2) + 6·(3+4) = 57. Total 114.
    net = nn.Sequential(linear([[1.0, -2.0], [3.0, 4.0]]), nn.ReLU(), linear([[-5.0, 6.0]]))
    before = [q.clone() for q in net.parameters()]
    assert ear.synflow_score(net, 2) == pytest.approx(114.0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(q.grad is None for q in net.parameters())


def test_grad_norm_by_hand_one_layer():
    # zero weights: softmax = (½, ½); x = (1, 2), y = 0: ∂CE/∂z = (−½, ½), ∂CE/∂W = outer → ‖·‖ = √2.5
    net = linear([[0.0, 0.0], [0.0, 0.0]])
    assert ear.grad_norm_score(net, T([[1.0, 2.0]]), T([0])) == pytest.approx(math.sqrt(2.5))
    assert net.weight.grad is None


def test_grad_norm_sums_one_norm_per_layer():
    torch.manual_seed(0)
    net = ear.Adaptor(ear.Arch(2, 8, True), 5, 3)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    grads = torch.autograd.grad(
        nn.functional.cross_entropy(net(x), y), [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    )
    assert ear.grad_norm_score(net, x, y) == pytest.approx(sum(float(g.norm()) for g in grads), rel=1e-6)


def test_candidate_space_budget_and_parameter_count():
    for arch in ear.candidate_space(32, 10, 3, 128, 10**9):
        assert ear.n_params(arch, 32, 10) == sum(q.numel() for q in ear.Adaptor(arch, 32, 10).parameters())
    # d1 w64: 32·64 + 64 + 64·10 + 10 = 2762 ≤ 3000; with skip the head sees 96 inputs: 3082 > 3000
    assert ear.n_params(ear.Arch(1, 64, False), 32, 10) == 2762
    assert ear.n_params(ear.Arch(1, 64, True), 32, 10) == 3082
    space = ear.candidate_space(32, 10, 2, 64, 3000)
    assert len(space) == 13 and ear.Arch(1, 64, True) not in space and ear.Arch(2, 64, False) not in space
    assert ear.candidate_space(32, 10, 2, 64, 100) == []


def test_pick_prefers_the_score_then_fewer_parameters_and_kendall_tau():
    assert ear.pick_candidate([1.0, 3.0, 3.0, 2.0], [10, 50, 20, 5]) == 2
    # x = (1, 2, 3), y = (1, 3, 2): two concordant pairs, one discordant → τ = 1/3
    assert ear.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert ear.kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0


# ---------------------------------------------------------------- training


def test_joint_training_equals_training_each_model_alone():
    x, y = torch.randn(30, 4, generator=torch.Generator().manual_seed(1)), torch.arange(30) % 3
    torch.manual_seed(0)
    a, b = ear.Adaptor(ear.Arch(1, 8, False), 4, 3), ear.Adaptor(ear.Arch(2, 16, True), 4, 3)
    a2, b2 = [type(m)(m.arch, 4, 3) for m in (a, b)]
    a2.load_state_dict(a.state_dict())
    b2.load_state_dict(b.state_dict())
    kw = {"steps": 25, "lr": 0.05, "batch_size": 8, "seed": 7}
    joint = ear.train_classifier([a, b], x, y, series=["a", "b"], **kw)
    alone = [ear.train_classifier(m, x, y, series="m", **kw)[:, 0] for m in (a2, b2)]
    assert joint.shape == (25, 2)
    assert np.allclose(joint[:, 0], alone[0], atol=1e-6) and np.allclose(joint[:, 1], alone[1], atol=1e-6)
    for m, m2 in ((a, a2), (b, b2)):
        assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(m.parameters(), m2.parameters()))


def test_a_diverging_adaptor_is_named_with_its_step():
    x, y = torch.ones(8, 2), torch.zeros(8, dtype=torch.long)
    models = [ear.Adaptor(ear.Arch(1, 8, False), 2, 2), ear.Adaptor(ear.Arch(1, 8, False), 2, 2)]
    with torch.no_grad():
        models[1].head.weight.fill_(1e38)
        models[1].body[0].weight.fill_(1e38)
    with pytest.raises(DivergenceError, match=r"step 1 in 'second'"):
        ear.train_classifier(models, x, y, steps=3, lr=0.01, batch_size=64, seed=0, series=["first", "second"])


def test_minibatches_cover_each_epoch_without_repeats():
    batches = list(ear.minibatches(10, 4, 4, seed=0))
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # the short batch of 2 is dropped
    assert len(set(torch.cat(batches[:2]).tolist())) == 8


def test_freeze_stops_gradients_and_fine_tuning_moves_every_weight():
    torch.manual_seed(0)
    model = ear.SourceModel(ear.MLPEncoder(4), 10)
    d = ear.DomainData(
        "d", torch.rand(20, 16), torch.arange(20) % 10, torch.rand(10, 16), torch.arange(10), torch.arange(10)
    )
    before = [q.clone() for q in model.parameters()]
    ear.fine_tuning_rows(model, [d, d], steps=5, lr=0.01, batch_size=64, seed=0, bar=None)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the pitfall: update all
    ear.freeze(model, [d])
    assert not model.training and not any(q.requires_grad for q in model.parameters())
    assert [t.shape[1] for t in d.taps_train] == [64, 32]


# ---------------------------------------------------------------- streams


def test_transforms_by_hand():
    img = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    assert S.rotate90(img, None).tolist() == [[[2.0, 4.0], [1.0, 3.0]]]  # 90° counter-clockwise
    assert S.invert(np.array([[[0.25]]]), None).tolist() == [[[0.75]]]
    three = np.zeros((1, 3, 3))
    three[0, 1, 1] = 1.0
    assert S.shift_images(three, np.array([[1, 0]]))[0, 2, 1] == 1.0  # down one row
    assert S.shift_images(three, np.array([[0, -1]]))[0, 1, 0] == 1.0  # left one column
    rng = np.random.default_rng(0)
    out = S.noise_and_shift(np.full((50, 8, 8), 0.5), rng, sigma=0.0, max_shift=0)
    assert np.array_equal(out, np.full((50, 8, 8), 0.5))
    noisy = S.noise_and_shift(np.full((200, 8, 8), 0.5), np.random.default_rng(0), sigma=0.1, max_shift=0)
    assert noisy.std() == pytest.approx(0.1, rel=0.05) and noisy.min() >= 0
    digits = S.digits_images()[0][:20]
    assert np.allclose(S.elastic(digits, np.random.default_rng(0), alpha=0.0), digits, atol=1e-6)  # no warp
    warped = S.elastic(digits, np.random.default_rng(0))
    assert warped.shape == digits.shape and not np.allclose(warped, digits)
    blurred = S.blur(digits, None, sigma=1.0)
    assert blurred.max() < digits.max() and blurred.sum() == pytest.approx(digits.sum(), rel=0.15)
    washed = S.contrast_jitter(np.array([[[0.0, 1.0]]]), np.random.default_rng(0))
    assert 0.2 <= washed[0, 0, 0] <= 0.4 and washed[0, 0, 1] - washed[0, 0, 0] <= 0.6


def test_domain_stream_has_disjoint_balanced_tasks_with_their_transforms():
    st = S.digits_domain_stream(seed=3)
    assert st.names == ["original", "rot90", "invert", "noise"] and st.kind == "domain" and st.n_classes == 10
    sizes = [len(t.y_train) + len(t.y_test) for t in st.tasks]
    assert sum(sizes) == 1797 and max(sizes) - min(sizes) <= 10
    for t in st.tasks:
        assert len(t.y_test) == pytest.approx(0.3 * (len(t.y_train) + len(t.y_test)), abs=1)
        assert set(t.y_train.tolist()) == set(range(10)) and t.x_train.dtype == np.float32
    assert st.tasks[2].x_train.mean() > 0.6 > st.tasks[0].x_train.mean()  # inverted: mostly bright
    parts = S.disjoint_parts(np.repeat(np.arange(3), 7), 2, np.random.default_rng(0))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(21)) and [len(p) for p in parts] == [12, 9]
    with pytest.raises(ValueError, match="unknown domains"):
        S.digits_domain_stream(["original", "sideways"])


def test_class_stream_and_resized_digits():
    st = S.digits_class_stream()
    assert st.kind == "class" and [t.classes for t in st.tasks] == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]
    assert set(st.tasks[1].y_test.tolist()) == {5, 6, 7, 8, 9}
    images, labels = S.digits_images(16)
    assert images.shape == (1797, 16, 16) and 0.0 <= images.min() and images.max() <= 1.0 and len(labels) == 1797


# ---------------------------------------------------------------- the learner's loop


def test_minibatches_keep_a_small_set_whole():
    batches = list(ear.minibatches(3, 8, 3, seed=0))
    assert [sorted(b.tolist()) for b in batches] == [[0, 1, 2]] * 3


def toy_learner():
    """Two well-separated classes in a 2-D 'encoder' space, one tapped layer, identity projection (D = 2)."""
    taps = [T([[1.0, 0.0], [1.1, 0.0], [0.9, 0.1], [1.0, 0.1], [0.0, 1.0], [0.0, 1.1], [0.1, 0.9], [0.1, 1.0]])]
    y = T([0, 0, 0, 0, 1, 1, 1, 1])
    mem = ear.HDCMemory([torch.eye(2)], [torch.zeros(1)], False)
    mem.add_domain(taps, y, [0, 1], split_seed=0, tpr=0.5)
    return ear.EARLearner(mem, [linear([[1.0, 0.0], [0.0, 1.0]])], [T([0, 1])], [0]), taps, y


def test_learner_detects_grows_and_routes_on_a_toy_stream():
    learner, taps, y = toy_learner()
    # familiar inputs: nothing is flagged and nothing grows
    shares, flag = learner.observe(taps, (taps, y, T([0, 1])), 1, window=4, kappa=0.5, make_adaptor=None)
    assert flag == -1 and learner.owners == [0] and all(s <= 0.5 for s in shares)
    # a new domain pointing the other way (−x): every window is OOD, an adaptor is grown for task 1
    new = [-t for t in taps]
    head = linear([[0.0, -1.0], [-1.0, 0.0]])  # answers the flipped label on the new domain
    shares, flag = learner.observe(
        new, (new, y, T([0, 1])), 1, window=4, kappa=0.5, make_adaptor=lambda: head, split_seed=0, tpr=0.5
    )
    assert flag == 0 and shares[0] == 1.0 and learner.owners == [0, 1] and learner.heads[1] is head
    # route: each input goes to its own domain's adaptor; predict with that adaptor
    assert learner.route(taps).tolist() == [0] * 8 and learner.route(new).tolist() == [1] * 8
    assert learner.predict(new, learner.route(new)).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


def test_zero_shot_nas_picks_by_the_proxy_without_training():
    archs = ear.candidate_space(4, 3, 2, 16, 10**6)
    f, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 3
    search = ear.zero_shot_nas(
        archs, f, y, n_out=3, proxy="naswot", init_seed=lambda a: a.depth * 100 + a.width, rng=np.random.default_rng(0)
    )
    naswot = [s["naswot"] for s in search.scores]
    assert search.pick == ear.pick_candidate(naswot, search.sizes) and search.adaptor is search.models[search.pick]
    assert set(search.scores[0]) == set(ear.PROXIES)
    torch.manual_seed(archs[0].depth * 100 + archs[0].width)
    again = ear.Adaptor(archs[0], 4, 3)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), search.models[0].parameters()))


def test_method_is_the_paper_only():
    src = (Path(ear.__file__).parent / "method.py").read_text()
    assert len(src.splitlines()) <= 450
    for banned in ("labkit.core.runner", "labkit.viz", "plotly", "experiment"):
        assert f"import {banned}" not in src and f"from {banned}" not in src and f".{banned} import" not in src


# ---------------------------------------------------------------- claims (hand-made per-seed numbers)


def verdicts(claim_of):
    """Verdicts of a claim built from per-seed values around its margin: clearly above, clearly below, straddling."""
    return [claim_of(v).verdict.value for v in ([0.5, 0.52, 0.51], [-0.5, -0.52, -0.51], [0.1, 0.4, -0.3])]


def test_headline_forgetting_claim_three_ways():
    ft = [0.3, 0.3, 0.3]
    hold = ear.claim_forgetting([0.75, 0.8, 0.78], ft, grown=9, new_domains=9)
    assert hold.headline and hold.verdict.value == "holds" and hold.margin == ear.FORGETTING_MARGIN
    assert ear.claim_forgetting([0.31, 0.28, 0.3], ft, grown=0, new_domains=9).verdict.value == "does not hold"
    assert ear.claim_forgetting([0.3, 0.9, 0.5], ft, grown=3, new_domains=9).verdict.value == "inconclusive"
    one = ear.claim_forgetting([0.31], [0.39], grown=0, new_domains=3)
    assert one.verdict.value == "does not hold" and "1 seed, no interval" in str(one) and "0 of 3" in str(one)
    nan = ear.claim_forgetting([float("nan"), 0.8, 0.8], ft, grown=6, new_domains=9)
    assert nan.verdict.value == "inconclusive"  # a diverged arm


def test_supporting_claims_three_ways():
    three = ["holds", "does not hold", "inconclusive"]

    def at(margin):
        return lambda v: [margin + x for x in v]

    assert verdicts(lambda v: ear.claim_detection(at(ear.AUROC_LEVEL)(v))) == three
    assert verdicts(lambda v: ear.claim_hdc_vs_msp(at(ear.MSP_SLACK)(v))) == three
    assert verdicts(lambda v: ear.claim_routing(at(ear.ROUTING_LEVEL)(v), who="EAR")) == three
    ft = [0.0, 0.0, 0.0]
    for claim in (ear.claim_growth_known, ear.claim_class_incremental):
        assert verdicts(lambda v, c=claim: c(at(ear.FORGETTING_MARGIN)(v), ft)) == three
        assert not claim([0.9], [0.1]).headline


def test_claims_read_the_margins_of_the_card():
    # the card: AUROC ≥ 0.9 and ≥ MSP − 0.02; EAR ≥ fine-tuning + 0.20; routing ≥ 0.9
    assert (ear.AUROC_LEVEL, ear.MSP_SLACK, ear.FORGETTING_MARGIN, ear.ROUTING_LEVEL) == (0.9, -0.02, 0.20, 0.9)
    assert ear.claim_detection([0.9]).verdict.value == "holds"  # at the margin: holds (float slack)
    assert ear.claim_hdc_vs_msp([0.88 - 0.9]).verdict.value == "holds"


def test_forgetting_by_hand():
    m = np.array([[0.9, 0.1, 0.0], [0.5, 0.8, 0.1], [0.6, 0.4, 0.7]])
    # domain 0: best 0.9, last 0.6 → 0.3; domain 1: best 0.8, last 0.4 → 0.4
    assert ear.forgetting(m) == pytest.approx(0.35)


# ---------------------------------------------------------------- runs


def test_run_rejects_bad_params():
    for kwargs in ({"proxy": "snip"}, {"kappa": 1.5}, {"window": 0}, {"hd_dimm": 512}, {"preset": "huge"}):
        with pytest.raises(ValueError):
            ear.run(progress=False, **kwargs)
    with pytest.raises(ValueError, match="budget=60 is too small"):  # refused by the knobs, before any training
        ear.run(progress=False, budget=60, encoder_steps=2, steps=1, train_candidates=False)


def tiny_run(**kw):
    return ear.run(progress=False, **{"encoder_steps": 40, "steps": 10, "hd_dim": 256, **kw})


def test_tiny_run_structure_and_claims_follow_the_numbers():
    r = tiny_run(class_incremental=True)
    h, run = r.history, r.extras["run"]
    assert isinstance(run, ear.EARRun) and r.headline is r.claims[0] and len(r.claims) == 7
    assert all(np.isfinite(v) for v in r.metrics.values())
    assert list(h.columns) == ["seed", "step", "series", "metric", "value"]
    assert set(h[h.metric == "acc_seen"].series) == {a.label for a in ear.ARMS} and h.step.max() == 3
    head = r.claims[0]
    s = run.first
    assert head.values[0] == pytest.approx(s.final(ear.ARM_EAR) - s.final(ear.ARM_FT))
    assert r.metrics["acc_ear"] == pytest.approx(np.mean(run.matrix(ear.ARM_EAR)[-1]))
    final = h[(h.metric == "acc_seen") & (h.step == 3) & (h.series == ear.ARM_FT.label)]["value"].item()
    assert final == pytest.approx(r.metrics["acc_fine_tuning"])
    assert r.claims[1].values[0] == pytest.approx(min(row.hdc for row in s.ood.auroc.values()))
    grown = [d.grown for d in s.ear.detection[1:]]
    assert s.ear.traces["ear"].owners == [0] + [t + 1 for t, g in enumerate(grown) if g]
    assert s.ear.traces["ear_known"].owners == [0, 1, 2, 3]
    assert {
        "acc_seen",
        "accuracy_matrix",
        "ood_scores",
        "roc",
        "auroc",
        "stream",
        "architecture",
        "proxy_tau",
        "class_incremental",
        "routing ear",
        "routing ear_known",
    } <= set(r.figures)


def test_the_frozen_encoder_never_changes_during_the_stream():
    p = ear.Knobs(encoder_steps=20, steps=5, hd_dim=128, train_candidates=False)
    st = S.digits_domain_stream(seed=0)
    tasks = ear.to_device(st, "cpu")
    source = ear.pretrain_source(
        tasks[0], encoder="mlp", side=8, n_out=10, steps=20, lr=0.01, batch_size=64, seed=0, device="cpu"
    )
    ear.freeze(source, tasks)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    out = ear.run_ear(p, tasks, source, 0, None)
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    assert len(out.nas) == 3 and all(sum(a is not None for a in rec.acc) == 1 for rec in out.nas)


def test_full_preset_path_cnn_on_resized_images_runs_on_cpu():
    r = ear.run(
        "full",
        device="cpu",
        progress=False,
        side=12,
        n_domains=3,
        n_seeds=1,
        encoder_steps=3,
        steps=2,
        hd_dim=128,
        max_depth=1,
        max_width=16,
        budget=5000,
        class_incremental=False,
        disjoint=True,
    )
    run = r.extras["run"]
    assert run.names == ["original", "rot90", "invert"] and len(run.first.ear.nas[0].labels) == 4
