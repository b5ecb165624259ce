"""O3 — arXiv 2407.10223 (ICLR 2025), "On Large Language Model Continual Unlearning" (v1: "Practical Unlearning
for Large Language Models"). Official code: https://github.com/GCYZSL/O3-LLM-UNLEARNING.

Requests t = 1..T arrive one after another, each with a forget set U_t; old forget sets and the retained data are
not available. The base weights W0 never change. Per request O3 trains

1. an unlearning LoRA (A_t (r, d_in), B_t (d_out, r)) on U_t with RANDOM labels (drawn once per example), kept
   orthogonal to the frozen down-projections of the earlier requests:

       L_t = CE(f(x; W0 + Σ_{i≤t} (α/r) B_i A_i), ỹ) + λ_o · Σ_layers Σ_{i<t} ‖A_i A_tᵀ‖_F²
2. an out-of-distribution detector trained on U_t only: a LoRA on a copy of the encoder sees a masked copy of each
   input, a frozen copy sees the clean input; with z_ℓ the layer-ℓ features (token means in the paper),

       S_ℓ = z_ℓ^masked · (z_ℓ^clean)ᵀ          (B, B), no normalisation, no temperature
       L_det = L_MLM + Σ_ℓ mean_i H(softmax_j S_ℓ,ij),     H(p) = −Σ_j p_j log p_j
3. a layer-aggregated similarity score: per layer a Gaussian (μ_ℓ, Σ_ℓ⁻¹) and a bank of normalised forget features,

       s_ℓ(x) = −½ (z_ℓ − μ_ℓ)ᵀ Σ_ℓ⁻¹ (z_ℓ − μ_ℓ) + 1000 · max_j cos(z_ℓ, bank_ℓ,j)      (global + local)
   and a linear one-class SVM (ν = 0.1) on the vector (s_1..s_L) gives u(x);
4. a soft weight from two Gaussians fitted to u on the forget-train (mean m1) and forget-held-out (m2, σ2) sets:

       Φ(u) = ½ N_cdf(u; m1, σ2) + ½ N_cdf(u; m2, σ2),   x0 = (m1 + m2)/2
       w(x) = sigmoid(10 · (1 − |Φ(u) − Φ(2 x0 − u)|) − 2)  ∈ (0.12, 1)
5. soft loading at inference, with w(x) = max_t w_t(x) over the requests' detectors:

       h' = W0 h + b + w(x) · Σ_t (α/r) B_t A_t h
Toy reading (labkit): an MLP classifier stands in for the LLM, its hidden layers for the transformer layers, pixel
masking + reconstruction for MLM. Unlike the code: (a) the local term enters as +1000·cos (the code: −1000·cos, two
terms pointing opposite ways, the final sign picked by AUROC on held-out OOD data), so the sign is fixed by
construction (:class:`SimilarityScore`); (b) the layer scores are standardised before the linear OCSVM.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.core.training import iterate_minibatches
from labkit.models.adapters import LoRALinear, inject_lora

#: the code's weight on the local (max-cosine) term of a layer's score
LOCAL_WEIGHT = 1000.0

OnStep = Callable[[int, Tensor, str], None]  # on_step(step, loss, series): the caller's divergence check


def _ignore(step: int, loss: Tensor, series: str) -> None:
    pass


# --- 5. soft loading: several LoRAs per layer, scaled by one per-sample weight -------------------------------------


class GatedLoRAStack(nn.Module):
    """A frozen ``nn.Linear`` W0 plus T LoRA adapters loaded with a per-sample weight w (the same maths as
    :class:`labkit.models.adapters.LoRALinear`, summed over adapters; with one adapter and w = 1 they agree)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None):
        super().__init__()
        self.base, self.r = base, r
        for p in base.parameters():
            p.requires_grad_(False)
        # the fixed scale α/r (1 without α), as in LoRALinear
        self.scaling = 1.0 if alpha is None else alpha / r
        self.lora_A, self.lora_B = nn.ParameterList(), nn.ParameterList()

    def add_adapter(self, generator: torch.Generator | None = None) -> None:
        """Freeze the adapters so far and add A_t (r, d_in) Kaiming-uniform, B_t (d_out, r) zeros (B_t A_t = 0)."""
        for p in self.parameters():
            p.requires_grad_(False)
        d_out, d_in = self.base.weight.shape
        a = torch.empty(self.r, d_in, dtype=self.base.weight.dtype)  # drawn on the CPU generator, then moved
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_A.append(nn.Parameter(a.to(self.base.weight.device)))
        self.lora_B.append(nn.Parameter(torch.zeros(d_out, self.r, dtype=a.dtype, device=self.base.weight.device)))

    def delta_weight(self, t: int) -> Tensor:
        """ΔW_t = (α/r) B_t A_t, shape ``(d_out, d_in)``."""
        return self.scaling * self.lora_B[t] @ self.lora_A[t]

    def forward(self, h: Tensor, w: Tensor | None = None) -> Tensor:
        """``h (N, d_in)``, ``w (N,)`` or None (= 1, the adapters fully on); returns ``(N, d_out)``."""
        y = self.base(h)
        if not len(self.lora_A):
            return y
        # Σ_t B_t A_t h                                                                          (N, d_out)
        delta = sum((h @ a.T) @ b.T for a, b in zip(self.lora_A, self.lora_B))
        gate = 1.0 if w is None else w.unsqueeze(-1)
        # h' = W0 h + b + w(x) · (α/r) Σ_t B_t A_t h
        return y + gate * self.scaling * delta


def gated_copy(model: nn.Sequential, r: int, alpha: float | None) -> nn.Sequential:
    """A copy of ``model`` with every ``nn.Linear`` wrapped in an (empty) :class:`GatedLoRAStack`."""
    layers = [GatedLoRAStack(m, r, alpha) if isinstance(m, nn.Linear) else m for m in copy.deepcopy(list(model))]
    return nn.Sequential(*layers)


def stacks_of(model: nn.Sequential) -> list[GatedLoRAStack]:
    return [m for m in model if isinstance(m, GatedLoRAStack)]


def soft_loaded_forward(model: nn.Sequential, x: Tensor, w: Tensor | None = None) -> Tensor:
    """Logits ``(N, C)`` with every stack loaded at the per-sample weight ``w (N,)`` (None: fully on)."""
    h = x
    for m in model:
        h = m(h, w) if isinstance(m, GatedLoRAStack) else m(h)
    return h


# --- 1. the unlearning adapter: random labels + orthogonality to the earlier requests ----------------------------


def random_relabel(n: int, n_classes: int, generator: torch.Generator) -> Tensor:
    """ỹ ~ Uniform{0..C−1}, drawn ONCE per example (the code's "random_force" relabelling may hit the true label)."""
    return torch.randint(0, n_classes, (n,), generator=generator)


def orthogonality_penalty(previous: Sequence[Tensor], current: Tensor) -> Tensor:
    """Σ_{i<t} ‖A_i A_tᵀ‖_F² for one layer: ``previous`` A_i (r, d_in) (frozen), ``current`` A_t (r, d_in)."""
    total = current.new_zeros(())
    for a_i in previous:
        # ‖A_i A_tᵀ‖_F²: the squared overlap of the two down-projections' row spaces            (r, r) → ()
        total = total + (a_i @ current.T).pow(2).sum()
    return total


def unlearning_loss(logits: Tensor, random_y: Tensor, stacks: Sequence[GatedLoRAStack], lam: float) -> Tensor:
    """L_t = CE(logits (B, C), ỹ (B,)) + λ_o · Σ_layers Σ_{i<t} ‖A_i A_tᵀ‖_F² (t = each stack's last adapter)."""
    # CE against the fixed random labels: destroys the forget set's answers
    ce = F.cross_entropy(logits, random_y)
    # λ_o · Σ_layers Σ_{i<t} ‖A_i A_tᵀ‖_F²
    ortho = sum(orthogonality_penalty(list(s.lora_A[:-1]), s.lora_A[-1]) for s in stacks)
    return ce + lam * ortho


@dataclass(frozen=True)
class AdapterConfig:
    """The unlearning adapters' knobs (the code: LoRA r=8 α=16, AdamW 3e-4, 15 epochs, λ_o = 0.1)."""

    n_classes: int = 10
    rank: int = 4
    alpha: float | None = 8.0
    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 32
    orthogonal_weight: float = 0.1


def train_unlearning_adapter(
    model: nn.Sequential, x_forget: Tensor, cfg: AdapterConfig, generator: torch.Generator,
    on_step: OnStep = _ignore, series: str = "adapter",
) -> Tensor:  # fmt: skip
    """Add adapter t to every stack and train it (the earlier ones frozen but loaded, w = 1) on U_t ``(n, d)``
    with fixed random labels; returns those labels ``(n,)``."""
    stacks = stacks_of(model)
    for s in stacks:
        s.add_adapter(generator)
    opt = torch.optim.Adam([p for s in stacks for p in (s.lora_A[-1], s.lora_B[-1])], lr=cfg.lr)
    random_y = random_relabel(len(x_forget), cfg.n_classes, generator).to(x_forget.device)
    step = 0
    for _ in range(cfg.epochs):
        for idx in iterate_minibatches(len(x_forget), cfg.batch_size, generator):
            logits = soft_loaded_forward(model, x_forget[idx])
            loss = unlearning_loss(logits, random_y[idx], stacks, cfg.orthogonal_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            on_step(step, loss.detach(), series)
    return random_y


# --- 2. the OOD detector: masked reconstruction + contrastive entropy --------------------------------------------


def contrastive_entropy(z_masked: Tensor, z_clean: Tensor) -> Tensor:
    """mean_i H(softmax_j S_ij) with S = z_masked · z_cleanᵀ; ``z_masked, z_clean (B, d)`` → scalar."""
    # S = z^masked (z^clean)ᵀ: every masked sample against every clean one                   (B, B)
    s = z_masked @ z_clean.T
    log_p = s.log_softmax(dim=1)
    # H(p_i) = −Σ_j p_ij log p_ij, averaged over the rows i  (the code: log(p + 1e-5))
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def mask_inputs(x: Tensor, prob: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The masked view: each input entry set to 0 (the "[MASK]" pixel) with probability ``prob``."""
    mask = torch.rand(x.shape, generator=generator).to(x.device) < prob
    return x.masked_fill(mask, 0.0), mask


def masked_reconstruction_loss(recon: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """The MLM analogue: mean squared error on the masked entries only (0 when nothing is masked)."""
    # (1/|M|) Σ_{(i,k) ∈ M} (x̂_ik − x_ik)²
    return (recon - x)[mask].pow(2).mean() if bool(mask.any()) else recon.sum() * 0.0


class ForgetDetector(nn.Module):
    """A copy of the classifier's hidden layers with LoRA (trainable), a frozen copy, and a linear decoder."""

    def __init__(self, hidden: nn.Sequential, d_in: int, r: int, alpha: float | None):
        super().__init__()
        self.frozen = copy.deepcopy(hidden).requires_grad_(False)
        self.encoder = copy.deepcopy(hidden)
        inject_lora(self.encoder, r"\d+", r=r, alpha=alpha)  # freezes the copy, adds A (r, d_in), B = 0
        width = [m for m in hidden if isinstance(m, nn.Linear)][-1].out_features
        self.decoder = nn.Linear(width, d_in)

    def features(self, x: Tensor, frozen: bool = False) -> list[Tensor]:
        """z_ℓ ``(N, width_ℓ)`` after each hidden layer's activation (an MLP has no tokens to average)."""
        out, h = [], x
        for m in self.frozen if frozen else self.encoder:
            h = m(h)
            if not isinstance(m, (nn.Linear, LoRALinear)):
                out.append(h)
        return out


def detector_loss(det: ForgetDetector, x: Tensor, mask_prob: float, generator: torch.Generator) -> Tensor:
    """L_det = L_MLM(masked view) + Σ_ℓ contrastive_entropy(z_ℓ^masked, z_ℓ^clean) on a batch ``x (B, d)``."""
    x_masked, mask = mask_inputs(x, mask_prob, generator)
    z_masked = det.features(x_masked)
    with torch.no_grad():  # the clean view goes through the frozen pretrained copy
        z_clean = det.features(x, frozen=True)
    mlm = masked_reconstruction_loss(det.decoder(z_masked[-1]), x, mask)
    return mlm + sum(contrastive_entropy(zm, zc) for zm, zc in zip(z_masked, z_clean))


@dataclass(frozen=True)
class DetectorConfig:
    """The OOD detector's knobs (the toy's; the code: RoBERTa-large, LoRA r=8 α=32, AdamW 1e-5, 2 epochs)."""

    rank: int = 4
    alpha: float | None = 8.0
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 32
    mask_prob: float = 0.15
    held_out: float = 0.2  # share of U_t kept out of the detector to fit (m2, σ2)
    nu: float = 0.1
    covariance: str = "ledoit_wolf"
    steepness: float = 10.0
    offset: float = 2.0


def train_detector(
    det: ForgetDetector, x_fit: Tensor, cfg: DetectorConfig, generator: torch.Generator,
    on_step: OnStep = _ignore, series: str = "detector",
) -> None:  # fmt: skip
    """Adam on the encoder's LoRA and the decoder, on the forget data only."""
    opt = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=cfg.lr)
    step = 0
    for _ in range(cfg.epochs):
        for idx in iterate_minibatches(len(x_fit), cfg.batch_size, generator):
            loss = detector_loss(det, x_fit[idx], cfg.mask_prob, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            on_step(step, loss.detach(), series)


# --- 3. the local-global layer-aggregated score -----------------------------------------------------------------


@dataclass(frozen=True)
class LayerStats:
    """One layer's forget-set statistics: mean μ (d,), precision Σ⁻¹ (d, d), normalised feature bank (n, d)."""

    mean: np.ndarray
    precision: np.ndarray
    bank: np.ndarray


def _unit_rows(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def fit_layer_stats(z: np.ndarray, covariance: str = "ledoit_wolf") -> LayerStats:
    """μ, Σ⁻¹ of the forget features ``z (n, d)`` (``"empirical"`` as in the code: a pseudo-inverse when n ≤ d;
    ``"ledoit_wolf"``: shrunk, invertible) and the bank of unit-norm rows."""
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf

    est = (LedoitWolf() if covariance == "ledoit_wolf" else EmpiricalCovariance()).fit(z)
    return LayerStats(est.location_, est.precision_, _unit_rows(z))


def layer_similarity(z: np.ndarray, stats: LayerStats, local_weight: float = LOCAL_WEIGHT) -> np.ndarray:
    """s_ℓ(x) ``(N,)`` for features ``z (N, d)``: higher = more like the forget set, in both terms."""
    centred = z - stats.mean
    # global: −½ (z − μ)ᵀ Σ⁻¹ (z − μ)   (a Gaussian log-density up to a constant)             (N,)
    glob = -0.5 * ((centred @ stats.precision) * centred).sum(axis=1)
    # local: max_j cos(z, bank_j), the nearest forget example                                  (N,)
    local = (_unit_rows(z) @ stats.bank.T).max(axis=1)
    return glob + local_weight * local


class SimilarityScore:
    """u(x): per-layer scores (s_1..s_L), standardised, then a linear one-class SVM fitted on the forget set.

    Sign, fixed by construction: the standardisation v_ℓ = 1 + (s_ℓ − min_fit s_ℓ)/sd_fit(s_ℓ) puts every
    forget-fit vector at v ≥ 1 (the origin on the dissimilar side). A linear OCSVM separates the data from the
    origin with w = Σ_i α_i v_i, α_i ≥ 0, so w > 0 and u = w·v increases with every layer's similarity."""

    def __init__(self, feats: Sequence[np.ndarray], nu: float = 0.1, covariance: str = "ledoit_wolf"):
        from sklearn.svm import OneClassSVM

        self.stats = [fit_layer_stats(z, covariance) for z in feats]
        s = self.layer_scores(feats)  # (n, L)
        self.low, self.scale = s.min(axis=0), np.maximum(s.std(axis=0), 1e-12)
        self.svm = OneClassSVM(kernel="linear", nu=nu).fit(self.standardise(s))

    def layer_scores(self, feats: Sequence[np.ndarray]) -> np.ndarray:  # (N, L) from feats[ℓ] (N, d_ℓ)
        return np.stack([layer_similarity(z, st) for z, st in zip(feats, self.stats)], axis=1)

    def standardise(self, s: np.ndarray) -> np.ndarray:
        # v_ℓ = 1 + (s_ℓ − min_fit s_ℓ) / sd_fit(s_ℓ)                                           (N, L)
        return 1.0 + (s - self.low) / self.scale

    def __call__(self, feats: Sequence[np.ndarray]) -> np.ndarray:
        """u(x) ``(N,)``: the OCSVM's ``score_samples`` (w·v), higher = more like the forget set."""
        return self.svm.score_samples(self.standardise(self.layer_scores(feats)))


# --- 4. the soft weight -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftWeight:
    """w(u) = sigmoid(k·(1 − |Φ(u) − Φ(2 x0 − u)|) − c) with the two-Gaussian mixture CDF Φ (shared std σ2)."""

    m1: float  # mean of u on the forget-train set
    m2: float  # mean of u on the forget-held-out set
    sigma: float  # std of u on the forget-held-out set (both components)
    steepness: float = 10.0
    offset: float = 2.0

    def cdf(self, u: np.ndarray) -> np.ndarray:
        from scipy.special import ndtr

        # Φ(u) = ½ N_cdf(u; m1, σ2) + ½ N_cdf(u; m2, σ2)
        return 0.5 * ndtr((u - self.m1) / self.sigma) + 0.5 * ndtr((u - self.m2) / self.sigma)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        # x0 = (m1 + m2)/2: the mirror point of the symmetric CDF gap
        x0 = 0.5 * (self.m1 + self.m2)
        gap = np.abs(self.cdf(u) - self.cdf(2.0 * x0 - u))
        # w = sigmoid(k · (1 − |Φ(u) − Φ(2 x0 − u)|) − c): ≈ 1 between the means, sigmoid(−c) far away
        return 1.0 / (1.0 + np.exp(-(self.steepness * (1.0 - gap) - self.offset)))


def fit_soft_weight(u_train: np.ndarray, u_held: np.ndarray, steepness: float = 10.0, offset: float = 2.0):
    """Gaussians on u: forget-train → m1; forget-held-out → (m2, σ2) (maximum likelihood, as scipy's norm.fit)."""
    return SoftWeight(float(np.mean(u_train)), float(np.mean(u_held)), max(float(np.std(u_held)), 1e-12),
                      steepness, offset)  # fmt: skip


# --- one request's detector, and the sequential-request loop ----------------------------------------------------


def encoder_features(net: ForgetDetector, x: Tensor) -> list[np.ndarray]:
    """The trained encoder's z_ℓ on clean inputs, as float64 arrays ``(N, d_ℓ)`` for the score."""
    with torch.no_grad():
        return [z.double().cpu().numpy() for z in net.features(x)]


@dataclass
class RequestDetector:
    """Detector t: the trained encoder, its score u(x) and its soft weight w_t(x)."""

    net: ForgetDetector
    score: SimilarityScore
    weight_fn: SoftWeight

    def similarity(self, x: Tensor) -> np.ndarray:
        return self.score(encoder_features(self.net, x))

    def weight(self, x: Tensor) -> np.ndarray:
        return self.weight_fn(self.similarity(x))


def fit_request_detector(
    hidden: nn.Sequential, x_forget: Tensor, cfg: DetectorConfig, generator: torch.Generator,
    on_step: OnStep = _ignore, series: str = "detector",
) -> RequestDetector:  # fmt: skip
    """Split U_t into fit / held-out, train the detector on the fit part, then fit the score and the weight."""
    order = torch.randperm(len(x_forget), generator=generator)
    n_held = max(2, round(cfg.held_out * len(x_forget)))
    x_held, x_fit = x_forget[order[:n_held]], x_forget[order[n_held:]]
    net = ForgetDetector(hidden, x_forget.shape[1], cfg.rank, cfg.alpha).to(x_forget.device)
    train_detector(net, x_fit, cfg, generator, on_step, series)
    net.eval()
    score = SimilarityScore(encoder_features(net, x_fit), nu=cfg.nu, covariance=cfg.covariance)
    u_fit, u_held = score(encoder_features(net, x_fit)), score(encoder_features(net, x_held))
    return RequestDetector(net, score, fit_soft_weight(u_fit, u_held, cfg.steepness, cfg.offset))


@dataclass
class O3Model:
    """The base model with every request's adapter, and the requests' detectors."""

    model: nn.Sequential
    detectors: list[RequestDetector]

    def weight(self, x: Tensor) -> Tensor:
        """w(x) = max_t w_t(x) ``(N,)``."""
        w = np.max(np.stack([d.weight(x) for d in self.detectors]), axis=0)
        return torch.as_tensor(w, dtype=x.dtype, device=x.device)

    def logits(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        """Soft-loaded logits; ``w`` defaults to the detectors' weight (pass ones for "always on")."""
        with torch.no_grad():
            return soft_loaded_forward(self.model, x, self.weight(x) if w is None else w)


def o3_unlearning(
    base: nn.Sequential,
    requests: Sequence[Tensor],
    adapter_cfg: AdapterConfig,
    detector_cfg: DetectorConfig,
    generator: torch.Generator,
    *,
    detectors: Sequence[RequestDetector] | None = None,
    detector_generator: torch.Generator | None = None,
    on_step: OnStep = _ignore,
    on_request: Callable[[int, O3Model], None] | None = None,
) -> O3Model:
    """The continual-unlearning loop: for each request's forget set U_t ``(n_t, d)``, train its OOD detector
    (or reuse ``detectors[t]``), then its orthogonal unlearning adapter; ``on_request(t, O3Model)`` after each.
    ``detector_generator`` (default ``generator``) lets two runs share the adapters' random draws."""
    model = gated_copy(base, adapter_cfg.rank, adapter_cfg.alpha)
    hidden = nn.Sequential(*list(base)[:-1])  # the classifier without its output layer: the detector's encoder
    dets: list[RequestDetector] = list(detectors or [])
    for t, x_forget in enumerate(requests):
        if len(dets) <= t:
            det_gen = detector_generator or generator
            dets.append(fit_request_detector(hidden, x_forget, detector_cfg, det_gen, on_step, f"detector {t + 1}"))
        series = f"adapter {t + 1} (λ_o={adapter_cfg.orthogonal_weight:g})"
        train_unlearning_adapter(model, x_forget, adapter_cfg, generator, on_step, series)
        if on_request is not None:
            on_request(t, O3Model(model, dets[: t + 1]))
    return O3Model(model, dets[: len(requests)])
