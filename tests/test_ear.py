"""EAR (#20): HDC encoder and OOD score, zero-cost proxies, routing, streams, claims, and runs."""

import math
from types import SimpleNamespace

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
    p = SimpleNamespace(**{**{q.name: q.quick for q in ear.PARAMS}, **overrides})
    return RunContext(p, "quick", 0, torch.device("cpu"), History(), False)


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
    d = SimpleNamespace(taps_train=taps, y_train=torch.arange(200) % 5)
    mem = ear.HDCMemory(ear.projection_matrices([8, 4], 128, gen), ear.feature_means(taps), False)
    mem.add_domain(d, range(5), seed=1, tpr=0.9)
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
    ctx = tiny_ctx(lr=0.05, batch_size=8)
    x, y = torch.randn(30, 4, generator=torch.Generator().manual_seed(1)), torch.arange(30) % 3
    torch.manual_seed(0)
    a, b = ear.Adaptor(ear.Arch(1, 8, False), 4, 3), ear.Adaptor(ear.Arch(2, 16, True), 4, 3)
    a2, b2 = [type(m)(m.arch, 4, 3) for m in (a, b)]
    a2.load_state_dict(a.state_dict())
    b2.load_state_dict(b.state_dict())
    joint = ear.train_classifier(ctx, [a, b], x, y, 25, ["a", "b"], seed=7)
    alone = [ear.train_classifier(ctx, m, x, y, 25, "m", seed=7)[:, 0] for m in (a2, b2)]
    assert joint.shape == (25, 2)
    assert np.allclose(joint[:, 0], alone[0], atol=1e-6) and np.allclose(joint[:, 1], alone[1], atol=1e-6)
    for m, m2 in ((a, a2), (b, b2)):
        assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(m.parameters(), m2.parameters()))


def test_a_diverging_adaptor_is_named_with_its_step():
    ctx = tiny_ctx()
    x, y = torch.ones(8, 2), torch.zeros(8, dtype=torch.long)
    models = [ear.Adaptor(ear.Arch(1, 8, False), 2, 2), ear.Adaptor(ear.Arch(1, 8, False), 2, 2)]
    with torch.no_grad():
        models[1].head.weight.fill_(1e38)
        models[1].body[0].weight.fill_(1e38)
    with pytest.raises(DivergenceError, match=r"step 1 in 'second'"):
        ear.train_classifier(ctx, models, x, y, 3, ["first", "second"], seed=0)


def test_minibatches_cover_each_epoch_without_repeats():
    batches = list(ear.minibatches(10, 4, 4, seed=0))
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # the short batch of 2 is dropped
    assert len(set(torch.cat(batches[:2]).tolist())) == 8


def test_freeze_stops_gradients_and_fine_tuning_moves_every_weight():
    ctx = tiny_ctx(steps=5)
    torch.manual_seed(0)
    model = ear.SourceModel(ear.MLPEncoder(4), 10)
    d = ear.DomainData(
        "d", torch.rand(20, 16), torch.arange(20) % 10, torch.rand(10, 16), torch.arange(10), torch.arange(10)
    )
    before = [q.clone() for q in model.parameters()]
    ear.fine_tuning_rows(ctx, ctx.p, model, [d, d], seed=0, bar=None)
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


# ---------------------------------------------------------------- claims


def fake_seed(ear_acc, ft_acc, routing=1.0, hdc=0.95, msp=0.9):
    mats = {a: np.full((2, 2), 0.5) for a in ear.ARMS}
    mats["EAR"][-1] = ear_acc
    mats["EAR, boundaries known"][-1] = ear_acc
    mats["fine-tuning"][-1] = ft_acc
    return {
        "matrices": mats,
        "ood": {"auroc": {"new": {"hdc": hdc, "msp": msp}}},
        "routing": {n: [routing] for n in ear.LEARNERS},
        "routing_other": {n: [0.5] for n in ear.LEARNERS},
        "nas": [],
    }


def test_claims_pass_and_fail_at_their_margins():
    names = ["source", "new"]
    assert ear.claim_ood([fake_seed(1, 0)], names).passed
    assert not ear.claim_ood([fake_seed(1, 0, hdc=0.89, msp=0.5)], names).passed  # below 0.9
    assert not ear.claim_ood([fake_seed(1, 0, hdc=0.92, msp=0.95)], names).passed  # below MSP − 0.02
    assert ear.claim_ood([fake_seed(1, 0, hdc=0.92, msp=0.94)], names).passed
    assert ear.claim_forgetting([fake_seed(0.8, 0.6)]).passed
    assert not ear.claim_forgetting([fake_seed(0.79, 0.6)]).passed
    assert ear.claim_routing([fake_seed(1, 0, routing=0.9)], "class").passed
    assert not ear.claim_routing([fake_seed(1, 0, routing=0.89)], "class").passed
    comp = ear.claim_components([fake_seed(0.8, 0.6, routing=0.95)])
    assert comp.passed and not comp.asserted
    nas = ear.claim_nas([fake_seed(1, 0)], "naswot")
    assert not nas.asserted and "not trained" in nas.detail


def test_forgetting_by_hand():
    m = np.array([[0.9, 0.1, 0.0], [0.5, 0.8, 0.1], [0.6, 0.4, 0.7]])
    # domain 0: best 0.9, last 0.6 → 0.3; domain 1: best 0.8, last 0.4 → 0.4
    assert ear.forgetting(m) == pytest.approx(0.35)


# ---------------------------------------------------------------- runs


def test_run_rejects_bad_params():
    for kwargs in ({"proxy": "snip"}, {"kappa": 1.5}, {"window": 0}, {"hd_dimm": 512}, {"preset": "huge"}):
        with pytest.raises(ValueError):
            ear.run(progress=False, **kwargs)
    with pytest.raises(ValueError, match="no adaptor fits"):
        ear.run(progress=False, budget=60, encoder_steps=2, steps=1, train_candidates=False)


def tiny_run(**kw):
    return ear.run(progress=False, **{"encoder_steps": 40, "steps": 10, "hd_dim": 256, **kw})


def test_tiny_run_structure_and_claims_follow_the_numbers():
    r = tiny_run(class_incremental=True)
    h = r.history
    assert list(h.columns) == ["seed", "step", "series", "metric", "value"]
    assert set(h[h.metric == "acc_seen"].series) == set(ear.ARMS) and h.step.max() == 3
    assert [c.asserted for c in r.claims] == [True, True, True, False, False, False]
    ood, forget, route = r.claims[:3]
    names = r.extras["names"]
    assert ood.passed == all(ood.numbers[f"hdc {n}"] >= max(0.9, ood.numbers[f"msp {n}"] - 0.02) for n in names[1:])
    assert forget.passed == (forget.numbers["gap"] >= 0.2)
    assert forget.numbers["ear"] == pytest.approx(np.mean(r.extras["matrices"]["EAR"][-1]))
    final = h[(h.metric == "acc_seen") & (h.step == 3) & (h.series == "fine-tuning")]["value"].item()
    assert final == pytest.approx(forget.numbers["fine_tuning"])
    assert route.passed == (route.numbers["routing_acc"] >= 0.9)
    grown = [d["first_flag"] >= 0 for d in r.extras["detection_first_seed"][1:]]
    assert r.extras["owners"]["EAR"] == [0] + [t + 1 for t, g in enumerate(grown) if g]
    assert r.extras["owners"]["EAR, boundaries known"] == [0, 1, 2, 3]
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
        "routing EAR",
    } <= set(r.figures)


def test_the_frozen_encoder_never_changes_during_the_stream():
    ctx = tiny_ctx(encoder_steps=20, steps=5, hd_dim=128, train_candidates=False)
    st = S.digits_domain_stream(seed=0)
    tasks = ear.to_device(st, "cpu")
    source = ear.pretrain_source(ctx, ctx.p, tasks[0], 10, 0, None)
    ear.freeze(source, tasks)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    out = ear.run_ear(ctx, ctx.p, tasks, source, 0, None)
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    assert len(out["nas"]) == 3 and all(len(it["acc"]) == 1 for it in out["nas"])


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
    assert r.extras["names"] == ["original", "rot90", "invert"] and len(r.extras["nas_first_seed"][0]["labels"]) == 4


@pytest.mark.slow
def test_quick_preset_smoke():
    r = ear.run("quick", progress=False)
    assert r.params["train_candidates"] and r.params["class_incremental"]
    assert len(r.claims) == 6 and all(len(it["labels"]) == 13 for it in r.extras["nas_first_seed"])
    assert r.metrics["acc_EAR"] == pytest.approx(r.claims[1].numbers["ear"])
    # the oracle knows the domain of every input: never below HDC routing with the same adaptors
    assert r.metrics["acc_oracle_routing"] >= r.metrics["acc_EAR,_boundaries_known"] - 1e-9
    # fine-tuning forgets: the source accuracy falls once the encoder is trained on other domains
    ft = r.extras["matrices"]["fine-tuning"]
    assert ft[-1, 0] < ft[0, 0] or ft[-2, 0] < ft[0, 0]
