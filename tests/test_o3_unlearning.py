"""O3 (03): the losses, the score and the soft weight on hand-computed cases, the gated LoRA stack against labkit's
LoRALinear, the claims three ways, divergence, bad knobs, and a quick-preset run."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit.core import DivergenceError, Result, Verdict, check_finite, check_weights, torch_threads
from labkit.methods import o3_unlearning as o3
from labkit.models.adapters import LoRALinear
from labkit.models.mlp import MLP

T = torch.tensor
H, N, I = Verdict.HOLDS, Verdict.DOES_NOT_HOLD, Verdict.INCONCLUSIVE


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


def entropy(p):
    return -sum(q * math.log(q) for q in p)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


# --- the detector's losses ---------------------------------------------------------------------------------------


def test_contrastive_entropy_on_a_2x2_similarity():
    # S = z_m z_cᵀ = [[ln 3, 0], [0, 0]]: row 1 softmax (3/4, 1/4), row 2 (1/2, 1/2)
    z_m, z_c = T([[1.0, 0.0], [0.0, 1.0]]), T([[math.log(3.0), 0.0], [0.0, 0.0]])
    expected = (entropy([0.75, 0.25]) + entropy([0.5, 0.5])) / 2
    assert o3.contrastive_entropy(z_m, z_c).item() == pytest.approx(expected, abs=1e-6)
    # no normalisation and no temperature: scaling the features sharpens row 1 to one-hot; row 2 stays uniform
    assert o3.contrastive_entropy(10 * z_m, z_c).item() == pytest.approx(math.log(2.0) / 2, abs=1e-3)
    # S is masked × clean, not symmetric: rows index the masked samples
    assert o3.contrastive_entropy(z_c, z_m).item() == pytest.approx(expected, abs=1e-6)
    z_m, z_c = T([[1.0, 0.0], [1.0, 0.0]]), T([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert o3.contrastive_entropy(z_m, z_c).item() == pytest.approx(entropy([0.25, 0.75]), abs=1e-6)


def test_masked_reconstruction_counts_only_masked_entries():
    x, recon = T([[1.0, 2.0], [3.0, 4.0]]), T([[0.0, 2.0], [3.0, 1.0]])
    mask = T([[True, False], [False, True]])
    assert o3.masked_reconstruction_loss(recon, x, mask).item() == pytest.approx((1.0 + 9.0) / 2)
    none = o3.masked_reconstruction_loss(recon, x, torch.zeros_like(mask))
    assert none.item() == 0.0 and math.isfinite(none.item())
    masked, m = o3.mask_inputs(torch.ones(200, 64), 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(masked == 0, m) and 0.12 < m.float().mean().item() < 0.18


def test_detector_starts_as_its_frozen_copy_and_trains_only_lora_and_decoder():
    base = MLP(64, [16, 16], 10)
    det = o3.ForgetDetector(nn.Sequential(*list(base)[:-1]), 64, r=2, alpha=4.0)
    x = torch.rand(5, 64)
    for a, b in zip(det.features(x), det.features(x, frozen=True)):
        assert a.shape == (5, 16) and torch.allclose(a, b)  # B = 0 at the start
    names = {n for n, p in det.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n or n.startswith("decoder") for n in names)
    loss = o3.detector_loss(det, x, 0.15, torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(loss.item()) and det.encoder[0].lora_B.grad is not None
    assert all(p.grad is None for p in det.frozen.parameters())


# --- the unlearning adapters -------------------------------------------------------------------------------------


def test_orthogonality_penalty_by_hand():
    a1, a2 = T([[1.0, 0.0, 0.0]]), T([[0.0, 1.0, 0.0]])
    current = T([[2.0, 1.0, 0.0]])
    # ‖A_1 A_tᵀ‖² + ‖A_2 A_tᵀ‖² = 2² + 1²
    assert o3.orthogonality_penalty([a1, a2], current).item() == pytest.approx(5.0)
    assert o3.orthogonality_penalty([a1], T([[0.0, 0.0, 3.0]])).item() == 0.0
    assert o3.orthogonality_penalty([], current).item() == 0.0
    # rank 2: the squared Frobenius norm of the 2×2 product
    prev, cur = T([[1.0, 1.0], [0.0, 1.0]]), T([[1.0, 0.0], [2.0, 0.0]])
    assert o3.orthogonality_penalty([prev], cur).item() == pytest.approx(1 + 4 + 0 + 0)


def test_unlearning_loss_is_random_label_ce_plus_lambda_times_the_last_adapters_overlap():
    stack = o3.GatedLoRAStack(nn.Linear(3, 2), r=1, alpha=1.0)
    gen = torch.Generator().manual_seed(0)
    stack.add_adapter(gen)
    stack.add_adapter(gen)
    with torch.no_grad():
        stack.lora_A[0].copy_(T([[1.0, 0.0, 0.0]]))
        stack.lora_A[1].copy_(T([[2.0, 1.0, 0.0]]))
    assert not stack.lora_A[0].requires_grad and stack.lora_A[1].requires_grad  # earlier adapters frozen
    logits, y = T([[0.0, math.log(3.0)]]), T([1])
    ce = -math.log(0.75)
    assert o3.unlearning_loss(logits, y, [stack], lam=0.1).item() == pytest.approx(ce + 0.1 * 4.0, abs=1e-6)
    assert o3.unlearning_loss(logits, y, [stack, stack], lam=1.0).item() == pytest.approx(ce + 8.0, abs=1e-6)


def test_random_labels_are_drawn_once_and_only_the_new_adapter_trains():
    torch.manual_seed(0)
    base = MLP(4, [32], 3).eval()
    model = o3.gated_copy(base, r=4, alpha=8.0)
    x = torch.rand(12, 4)
    cfg = o3.AdapterConfig(n_classes=3, rank=4, alpha=8.0, epochs=150, lr=2e-2, batch_size=4, orthogonal_weight=0.1)
    labels = o3.train_unlearning_adapter(model, x, cfg, torch.Generator().manual_seed(3))
    assert labels.shape == (12,) and set(labels.tolist()) <= {0, 1, 2}
    # fixed labels can be memorised (labels redrawn every step could not): the adapter fits them
    with torch.no_grad():
        assert (o3.soft_loaded_forward(model, x).argmax(1) == labels).float().mean().item() >= 0.9
    first = [(s.lora_A[0].detach().clone(), s.lora_B[0].detach().clone()) for s in o3.stacks_of(model)]
    cfg2 = o3.AdapterConfig(n_classes=3, rank=4, alpha=8.0, epochs=2, lr=1e-2, batch_size=4)
    o3.train_unlearning_adapter(model, x, cfg2, torch.Generator().manual_seed(4))
    for (a, b), s in zip(first, o3.stacks_of(model)):
        assert torch.equal(a, s.lora_A[0]) and torch.equal(b, s.lora_B[0])  # adapter 1 is frozen
        assert len(s.lora_A) == 2
    assert torch.equal(base[0].weight, o3.stacks_of(model)[0].base.weight)  # W0 never changes


def test_gated_stack_with_one_adapter_and_w_one_is_lora_linear():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    stack = o3.GatedLoRAStack(linear, r=2, alpha=5.0)
    stack.add_adapter(torch.Generator().manual_seed(1))
    with torch.no_grad():
        stack.lora_B[0].copy_(torch.randn(4, 2))
    ref = LoRALinear(nn.Linear(6, 4), r=2, alpha=5.0)
    with torch.no_grad():
        ref.base.load_state_dict(linear.state_dict())
        ref.lora_A.copy_(stack.lora_A[0])
        ref.lora_B.copy_(stack.lora_B[0])
    h = torch.randn(7, 6)
    assert stack.scaling == ref.scaling == 2.5
    assert torch.allclose(stack(h), ref(h), atol=1e-6)
    assert torch.allclose(stack(h, torch.ones(7)), ref(h), atol=1e-6)
    assert torch.allclose(stack.delta_weight(0), ref.delta_weight(), atol=1e-6)
    # w per sample: W0 h + b + w·ΔW h; w = 0 is the original layer
    w = T([0.0, 0.5, 1.0, 0.12, 0.0, 1.0, 0.3])
    expected = linear(h) + w[:, None] * (h @ stack.delta_weight(0).T)
    assert torch.allclose(stack(h, w), expected, atol=1e-6)
    assert torch.allclose(stack(h, torch.zeros(7)), linear(h), atol=1e-6)


def test_stacked_adapters_sum():
    stack = o3.GatedLoRAStack(nn.Linear(5, 3), r=1, alpha=None)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        stack.add_adapter(gen)
    with torch.no_grad():
        for b in stack.lora_B:
            b.copy_(torch.randn(3, 1, generator=gen))
    h, w = torch.randn(4, 5), T([1.0, 0.5, 0.0, 0.2])
    total = sum(stack.delta_weight(t) for t in range(3))
    assert torch.allclose(stack(h, w), stack.base(h) + w[:, None] * (h @ total.T), atol=1e-6)


# --- the score and the soft weight -------------------------------------------------------------------------------


def test_layer_similarity_by_hand():
    stats = o3.LayerStats(mean=np.zeros(2), precision=np.eye(2), bank=np.array([[1.0, 0.0]]))
    s = o3.layer_similarity(np.array([[1.0, 0.0], [0.0, 2.0]]), stats)
    # (1, 0): −½·1 + 1000·cos 0 = 999.5;  (0, 2): −½·4 + 1000·0 = −2
    assert s == pytest.approx([999.5, -2.0])
    fitted = o3.fit_layer_stats(np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 1.0], [2.0, -1.0]]), "empirical")
    assert fitted.mean == pytest.approx([2.0, 0.0])
    assert fitted.precision == pytest.approx(np.diag([2.0, 2.0]))  # covariance diag(½, ½) (1/n)
    assert np.linalg.norm(fitted.bank, axis=1) == pytest.approx(np.ones(4))


def test_score_sign_is_higher_for_forget_like_inputs():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=(2, 8)) * 3

    def layers(n, shift):
        return [centre[0] + shift + rng.normal(size=(n, 8)), centre[1] - shift + rng.normal(size=(n, 8))]

    score = o3.SimilarityScore(layers(200, 0.0), nu=0.1)
    assert np.all(score.svm.coef_ > 0)  # w = Σ α_i v_i with every forget vector v_i ≥ 1: u grows with similarity
    near, far = score(layers(100, 0.0)), score(layers(100, 4.0))
    assert o3.auroc(near, far) > 0.99
    # monotone in each layer's similarity: raising one layer's score raises u
    v = np.array([[2.0, 2.0], [3.0, 2.0], [2.0, 3.0]])
    u = score.svm.score_samples(v)
    assert u[1] > u[0] and u[2] > u[0]


def test_soft_weight_curve_values():
    wf = o3.SoftWeight(m1=0.0, m2=0.0, sigma=1.0)
    # at x0 the gap is 0: sigmoid(10 − 2); far away the gap is 1: sigmoid(−2) ≈ 0.119
    assert wf(np.array([0.0]))[0] == pytest.approx(sigmoid(8.0))
    assert wf(np.array([-50.0, 50.0])) == pytest.approx([sigmoid(-2.0)] * 2)
    # u = 1 with m1 = m2 = 0, σ = 1: gap = Φ(1) − Φ(−1) = 0.682689 → sigmoid(10·0.317311 − 2)
    assert wf(np.array([1.0]))[0] == pytest.approx(sigmoid(10 * (1 - 0.6826895) - 2), abs=1e-6)
    # well-separated means: at m2 the gap is ½(Φ(δ) − Φ(−δ)) → ½, so w → sigmoid(3)
    apart = o3.SoftWeight(m1=100.0, m2=0.0, sigma=1.0)
    assert apart(np.array([0.0, 100.0, 50.0])) == pytest.approx([sigmoid(3.0), sigmoid(3.0), sigmoid(8.0)], abs=1e-6)
    # symmetric about x0, and the constants are knobs
    assert apart(np.array([40.0]))[0] == pytest.approx(apart(np.array([60.0]))[0])
    assert o3.SoftWeight(0.0, 0.0, 1.0, steepness=4.0, offset=1.0)(np.array([0.0]))[0] == pytest.approx(sigmoid(3.0))


def test_soft_weight_matches_the_two_gaussian_mixture_cdf_and_norm_fit():
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    u_train, u_held = rng.normal(5.0, 1.0, 300), rng.normal(3.0, 2.0, 50)
    wf = o3.fit_soft_weight(u_train, u_held)
    m2, s2 = norm.fit(u_held)
    assert (wf.m1, wf.m2, wf.sigma) == pytest.approx((u_train.mean(), m2, s2))
    u = np.linspace(-5, 12, 9)
    mix = 0.5 * norm.cdf(u, wf.m1, s2) + 0.5 * norm.cdf(u, m2, s2)
    assert wf.cdf(u) == pytest.approx(mix)
    x0 = (wf.m1 + m2) / 2
    mirror = 0.5 * norm.cdf(2 * x0 - u, wf.m1, s2) + 0.5 * norm.cdf(2 * x0 - u, m2, s2)
    assert wf(u) == pytest.approx(1 / (1 + np.exp(-(10 * (1 - np.abs(mix - mirror)) - 2))))


# --- the claims ----------------------------------------------------------------------------------------------------


def test_retained_claim_three_ways():
    base = [96.0, 95.0, 97.0]
    c = o3.retained_claim([95.5, 94.8, 96.1], base, 3)  # −0.5, −0.2, −0.9 points: within 3
    assert c.verdict is H and c.headline and c.margin == -3.0
    assert o3.retained_claim([90.0, 89.0, 91.5], base, 3).verdict is N  # −6 points
    assert o3.retained_claim([96.0, 85.0, 97.0], base, 3).verdict is I  # wide interval
    nan = o3.retained_claim([95.0, float("nan"), 96.0], base, 3)
    assert nan.verdict is I and "not finite" in nan.detail


def test_always_on_and_forget_claims_three_ways():
    assert o3.always_on_claim([95.0, 96.0, 95.5], [50.0, 60.0, 45.0]).verdict is H
    assert o3.always_on_claim([95.0, 96.0, 95.5], [94.0, 95.0, 95.0]).verdict is N  # +1 point only
    assert o3.always_on_claim([95.0, 96.0, 95.5], [70.0, 95.0, 88.0]).verdict is I
    assert o3.always_on_claim([95.0, float("nan"), 95.5], [50.0, 60.0, 45.0]).verdict is I
    f = o3.forget_claim([12.0, 15.0, 9.0])
    assert f.verdict is H and not f.higher_is_better and f.margin == 30.0 and not f.headline
    assert o3.forget_claim([60.0, 55.0, 70.0]).verdict is N
    assert o3.forget_claim([10.0, 60.0, 20.0]).verdict is I
    assert o3.forget_claim([10.0, float("inf"), 20.0]).verdict is I


# --- divergence, bad knobs, the run -----------------------------------------------------------------------------


def test_a_huge_learning_rate_diverges_and_names_the_series():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.rand(40, 8)
    cfg = o3.AdapterConfig(n_classes=4, rank=2, alpha=4.0, epochs=20, lr=1e12, batch_size=8)
    det = o3.DetectorConfig(rank=2, alpha=4.0, epochs=1)

    def on_request(t, model):
        check_weights(model.model, t + 1, f"adapter {t + 1}")

    with pytest.raises(DivergenceError, match=r"adapter 1"):
        o3.o3_unlearning(base, [x], cfg, det, torch.Generator().manual_seed(0), on_step=check_finite,
                         on_request=on_request)  # fmt: skip


def test_bad_knobs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="offset"):
        o3.run(offset=12.0, steepness=10.0)  # the soft weight would never reach ½
    with pytest.raises(ValueError, match="offset"):
        o3.Knobs(offset=0.0)
    with pytest.raises(ValueError, match="preset"):
        o3.run(preset="huge")
    with pytest.raises(ValueError, match="unknown parameter"):
        o3.run(orthogonal_weigth=0.1)
    with pytest.raises(ValueError, match="covariance"):
        o3.run(covariance="diagonal")


@pytest.mark.slow
def test_quick_preset_run():
    r = o3.run(progress=False)
    assert isinstance(r, Result) and r.headline is not None and [c.headline for c in r.claims] == [True, False, False]
    m, x = r.metrics, r.extras
    assert all(math.isfinite(v) for v in m.values())
    assert len(x["seeds"]) == 3 and {a.arm.key for a in x["arms"]} == {"o3", "always_on", "ga", "hard_gate", "no_orth"}
    hist = r.history
    assert set(hist["step"]) == {0, 1, 2, 3} and set(hist["seed"]) == {0, 1, 2}
    assert {"forget_acc", "retained_acc", "w_forget", "w_retained"} <= set(hist["metric"])
    # the claims read the per-seed numbers of the last request, in points
    arms = {a.arm.key: a for a in x["arms"]}
    assert r.claims[2].values == pytest.approx(arms["o3"].forget)
    assert m["retained_acc_o3"] == pytest.approx(np.mean(arms["o3"].retained) / 100)
    # the detectors separate their class from the retained ones; w sits near its floor on retained images
    assert m["detector_auroc_mean"] > 0.9 and m["w_retained_o3"] < 0.2 < m["w_forget_o3"]
    # the soft gate's weight never goes below sigmoid(−2); the λ_o = 0 adapters overlap more than O3's
    assert min(min(s.w_retained) for s in x["seeds"]) >= sigmoid(-2.0) - 1e-6  # float32
    for s in x["seeds"]:
        off = ~np.eye(3, dtype=bool)
        assert s.overlap[off].max() < s.overlap_free[off].max()
    assert {"forget_acc", "retained_acc", "weights", "weight_curve", "overlap", "forget_per_class"} <= set(r.figures)
