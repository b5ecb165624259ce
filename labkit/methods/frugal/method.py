"""FRUGAL — Zmushko et al., "FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable
Training", arXiv 2411.07837 (ICML 2025).

Adam keeps two moments per parameter. GaLore and BAdam cut that state by updating only a subspace (low-rank or a
few blocks) and dropping the rest of the gradient. FRUGAL (Full-Rank Updates with GrAdient spLitting) keeps the
rest: it splits each gradient into a subspace that gets a state-full Adam step and a residual that gets a
state-free step (signSGD or SGD), so every step is full-rank while the state stays GaLore-sized.

For a projectable weight W (m×n) with gradient G at step k, density ρ, gap T, learning rate η, scale c:

    if k mod T = 0:  choose a projector (rank r = round(ρ·dim)) and reset Adam's m, v and its step count
    G_s = down(G)                                  the state-full part, in the subspace's coordinates
    m ← β₁m + (1−β₁)G_s,  v ← β₂v + (1−β₂)G_s²     Adam's moments, shaped like G_s
    U  = m̂ / (√v̂ + ε)                              bias correction counted since the last reset
    G_f = G − up(G_s)                              the state-free residual (orthogonal to the subspace)
    W ← W·(1 − ηλ) − η·up(U) − c·η·sign(G_f)       (the SGD rule: − c·η·G_f)

Projections (``projection=``), as in the paper and its code:
    "svd"      G = U S Vᵀ on its smaller side: m < n → Q = U[:, :r] (m×r), down(G) = QᵀG (r×n), up(X) = QX;
               m ≥ n → Q = Vᵀ[:r] (r×n), down(G) = GQᵀ (m×r), up(X) = XQ  (GaLore's side rule)
    "columns"  r = round(ρ·n) random columns I of W: down(G) = G[:, I], up(X) puts X back at I, zeros elsewhere
    "blocks"   round(ρ·|P|) whole tensors, drawn at random each refresh, get Adam; the others only the residual
               step on their whole gradient (BAdam's blocks plus FRUGAL's state-free update)

"Regular" parameters (embeddings, norms, biases, the output head) always get plain AdamW. The GaLore-style
optimizer is the same class with ``state_free="none"`` and ``reset=False`` (GaLore keeps its moments and step
count across a projector change; the paper's GaLore baseline does the same).

Optimizer state, in floats (what :func:`state_formula` returns; :func:`state_bytes` measures the real tensors):
    AdamW     2·N                                      N = all trainable parameters
    FRUGAL    2·N_R + Σ_W [2·r·max(m, n) + r·min(m, n)]  svd: moments + the projector Q
              2·N_R + Σ_W 2·m·r  (+ r int64 indices)     columns
              2·N_R + 2·ρ·N_P                            blocks (on average: the active tensors differ in size)
signSGD and SGD keep nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROJECTIONS = ("svd", "columns", "blocks")
STATE_FREE_RULES = ("sign_sgd", "sgd", "none")


# --- which parameters are projectable -------------------------------------------------------------------------


def frugal_param_groups(model: nn.Module) -> list[dict]:
    """Two groups: the 2-D weights of the Linear layers inside the transformer blocks (attention and MLP) are
    projectable; everything else (embeddings, norms, biases, the output head) is regular."""
    blocks = getattr(model, "blocks", model)
    projectable = [m.weight for m in blocks.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
    ids = {id(p) for p in projectable}
    regular = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": regular, "projectable": False}, {"params": projectable, "projectable": True}]


# --- the projections: choose, down, up -----------------------------------------------------------------------


def subspace_rank(shape: torch.Size, rho: float, projection: str) -> int:
    """r = round(ρ·min(m, n)) singular directions (svd) or round(ρ·n) columns (columns)."""
    m, n = shape
    return round(rho * (min(m, n) if projection == "svd" else n))


def svd_projector(G: Tensor, r: int) -> Tensor:
    """The top-r singular vectors of G (m×n) on its smaller side: U[:, :r] (m×r) if m < n, else Vᵀ[:r] (r×n)."""
    # G = U S Vᵀ (thin SVD): U (m×k), Vᵀ (k×n), k = min(m, n)
    U, _, Vh = torch.linalg.svd(G.float(), full_matrices=False)
    Q = U[:, :r] if G.shape[0] < G.shape[1] else Vh[:r]
    return Q.to(G.dtype).contiguous()


def column_projector(G: Tensor, r: int, generator: torch.Generator) -> Tensor:
    """r distinct random column indices of G (int64, on G's device)."""
    return torch.randperm(G.shape[1], generator=generator)[:r].to(G.device)


def down(G: Tensor, Q: Tensor, projection: str) -> Tensor:
    """The state-full coordinates of G (m×n): QᵀG (r×n) or GQᵀ (m×r) for svd, G[:, I] (m×r) for columns."""
    if projection == "columns":
        return G[:, Q]
    # left (m < n, Q is m×r): QᵀG;  right (m ≥ n, Q is r×n): GQᵀ
    return Q.T @ G if G.shape[0] < G.shape[1] else G @ Q.T


def up(X: Tensor, Q: Tensor, projection: str, shape: torch.Size) -> Tensor:
    """Back to W's shape (m×n): QX or XQ for svd; for columns, X at the columns I and zeros elsewhere."""
    if projection == "columns":
        return torch.zeros(shape, dtype=X.dtype, device=X.device).index_copy_(1, Q, X)
    m, n = shape
    return Q @ X if m < n else X @ Q


# --- the two update rules -------------------------------------------------------------------------------------


def adam_moments(state: dict, g: Tensor, beta1: float, beta2: float, eps: float) -> tuple[Tensor, Tensor, float]:
    """Adam on g (any shape): updates m, v in ``state`` and returns (m, √v̂ + ε, 1 − β₁ᵏ) with k the steps since
    the moments were (re)set, in torch.optim.AdamW's order of operations (so ρ = 1 reproduces it bit for bit)."""
    state["step"] += 1
    k, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
    # m ← β₁·m + (1 − β₁)·g
    m.lerp_(g, 1 - beta1)
    # v ← β₂·v + (1 − β₂)·g²
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    # √v̂ + ε with v̂ = v / (1 − β₂ᵏ); m̂ = m / (1 − β₁ᵏ) is folded into the step size by the caller
    denom = (v.sqrt() / (1 - beta2**k) ** 0.5).add_(eps)
    return m, denom, 1 - beta1**k


def state_free_direction(g_free: Tensor, rule: str) -> Tensor:
    """The direction of the state-free step on the residual: sign(G_f) (signSGD) or G_f (SGD)."""
    # signSGD: every coordinate moves by exactly c·η
    return g_free.sign() if rule == "sign_sgd" else g_free


def fresh_moments(state: dict, like: Tensor) -> None:
    """m = v = 0 shaped like ``like``, and the bias-correction count k = 0 (a reset)."""
    state["exp_avg"], state["exp_avg_sq"], state["step"] = torch.zeros_like(like), torch.zeros_like(like), 0


# --- the optimizer ---------------------------------------------------------------------------------------------


class Frugal(torch.optim.Optimizer):
    """FRUGAL: AdamW on regular parameters; on projectable ones Adam in a subspace re-chosen every
    ``update_gap`` steps plus a state-free step on the residual (see the module docstring).

    ``params``: :func:`frugal_param_groups` (groups with ``projectable`` True/False). ``rho`` density ρ,
    ``update_gap`` T, ``projection`` one of :data:`PROJECTIONS`, ``state_free`` one of :data:`STATE_FREE_RULES`
    ("none" drops the residual: the GaLore-style optimizer), ``state_free_scale`` c, ``proj_lr_scale`` the
    paper's extra factor on both steps of projectable parameters, ``reset`` whether a new projector resets the
    moments. ``generator`` draws the random columns and blocks. Step counts are plain ints, so the optimizer's
    tensors are exactly its moments and projectors. With ``track_share`` each step records
    ``last_share`` = ‖down(G)‖/‖G‖ over all projectable weights (a 0-d tensor).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        rho: float = 0.25,
        update_gap: int = 200,
        projection: str = "svd",
        state_free: str = "sign_sgd",
        state_free_scale: float = 1.0,
        proj_lr_scale: float = 1.0,
        reset: bool = True,
        generator: torch.Generator | None = None,
        track_share: bool = False,
    ):
        if projection not in PROJECTIONS or state_free not in STATE_FREE_RULES:
            raise ValueError(f"projection in {PROJECTIONS}, state_free in {STATE_FREE_RULES}")
        if not 0.0 <= rho <= 1.0 or update_gap < 1:
            raise ValueError(f"need 0 ≤ rho ≤ 1 and update_gap ≥ 1 (got rho={rho}, update_gap={update_gap})")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "projectable": False}
        super().__init__(params, defaults)
        self.rho, self.update_gap, self.projection = rho, update_gap, projection
        self.state_free, self.c, self.proj_lr_scale, self.reset = state_free, state_free_scale, proj_lr_scale, reset
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.track_share, self.last_share, self.k = track_share, None, 0  # k: steps taken (the refresh clock)
        self._share: list = [0.0, 0.0]

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None if closure is None else closure()
        refresh = self.k % self.update_gap == 0
        self._share = [0.0, 0.0]  # Σ‖down(G)‖², Σ‖G‖² over the projectable weights
        for group in self.param_groups:
            if group["projectable"]:
                self._projectable_step(group, refresh)
            else:
                self._adamw_step(group)
        if self.track_share:
            self.last_share = (self._share[0] / self._share[1]).sqrt() if torch.is_tensor(self._share[1]) else None
        self.k += 1
        return loss

    def _adamw_step(self, group: dict) -> None:
        """Plain AdamW: W ← W·(1 − ηλ) − η·m̂/(√v̂ + ε)."""
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                fresh_moments(state, p)
            # decoupled weight decay: W ← W·(1 − ηλ)
            p.mul_(1 - lr * group["weight_decay"])
            m, denom, bc1 = adam_moments(state, p.grad, b1, b2, eps)
            # W ← W − η/(1 − β₁ᵏ) · m/(√v̂ + ε)
            p.addcdiv_(m, denom, value=-lr / bc1)

    def _projectable_step(self, group: dict, refresh: bool) -> None:
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        # both steps of a projectable weight use η' = η·proj_lr_scale; the state-free one c·η'
        lr_p = lr * self.proj_lr_scale
        params = [p for p in group["params"] if p.grad is not None]
        if refresh:
            self._choose_subspaces(params)
        for p in params:
            G, state = p.grad, self.state[p]
            # decoupled weight decay: W ← W·(1 − ηλ)
            p.mul_(1 - lr * group["weight_decay"])
            if self.projection == "blocks":
                # a block is all or nothing: active, Adam on the whole G; inactive, the residual is the whole G
                g_s, g_free = (G, None) if state["active"] else (None, G)
                if g_s is not None:
                    m, denom, bc1 = adam_moments(state, g_s, b1, b2, eps)
                    # W ← W − η'/(1 − β₁ᵏ) · m/(√v̂ + ε)
                    p.addcdiv_(m, denom, value=-lr_p / bc1)
            else:
                Q = state["proj"]
                # G_s = down(G): the state-full coordinates, (r×n) or (m×r)
                g_s = down(G, Q, self.projection)
                m, denom, bc1 = adam_moments(state, g_s, b1, b2, eps)
                # W ← W − η'/(1 − β₁ᵏ) · up(m/(√v̂ + ε))
                p.add_(up(m / denom, Q, self.projection, G.shape), alpha=-lr_p / bc1)
                # G_f = G − up(down(G)): what the subspace misses, (m×n)
                g_free = G - up(g_s, Q, self.projection, G.shape) if self.state_free != "none" else None
            self._track(g_s, G)
            if g_free is not None and self.state_free != "none":
                # W ← W − c·η'·sign(G_f)   (the SGD rule: W ← W − c·η'·G_f)
                p.add_(state_free_direction(g_free, self.state_free), alpha=-self.c * lr_p)

    def _choose_subspaces(self, params: list[Tensor]) -> None:
        """A refresh: new projectors (or a new set of active blocks) and, with ``reset``, fresh moments."""
        if self.projection == "blocks":
            n_active = round(self.rho * len(params))
            active = set(torch.randperm(len(params), generator=self.generator)[:n_active].tolist())
            for i, p in enumerate(params):
                state = self.state[p]
                state.clear()  # an inactive block holds nothing; an active one starts fresh (BAdam, FRUGAL)
                state["active"] = i in active
                if state["active"]:
                    fresh_moments(state, p)
            return
        for p in params:
            G, state = p.grad, self.state[p]
            r = subspace_rank(G.shape, self.rho, self.projection)
            if self.projection == "svd":
                state["proj"] = svd_projector(G, r)
            else:
                state["proj"] = column_projector(G, r, self.generator)
            if self.reset or "exp_avg" not in state:
                fresh_moments(state, down(G, state["proj"], self.projection))

    def _track(self, g_s: Tensor | None, G: Tensor) -> None:
        """Accumulate ‖down(G)‖² and ‖G‖² for ``last_share``."""
        if self.track_share:
            self._share[0] = self._share[0] + (0.0 if g_s is None else g_s.square().sum())
            self._share[1] = self._share[1] + G.square().sum()


# --- memory: the formula, and what the optimizer really holds -------------------------------------------------


@dataclass(frozen=True)
class StateCount:
    """Optimizer state by the card's formula: float32 moments, projector floats, int64 column indices."""

    moments: int
    projector: int = 0
    indices: int = 0

    @property
    def bytes(self) -> int:
        return 4 * (self.moments + self.projector) + 8 * self.indices


def state_formula(
    shapes: list[tuple[int, int]], n_regular: int, rho: float | None, projection: str = "svd"
) -> StateCount:
    """The state of AdamW (``rho=None``: 2 floats per parameter) or of FRUGAL / GaLore-style (2·N_R for the
    regular parameters plus the projectable weights' share) for projectable weights of ``shapes`` (m, n)."""
    n_proj = sum(m * n for m, n in shapes)
    if rho is None:
        return StateCount(2 * (n_regular + n_proj))
    if projection == "blocks":
        return StateCount(2 * n_regular + round(2 * rho * n_proj))
    ranks = [subspace_rank(torch.Size(s), rho, projection) for s in shapes]
    if projection == "columns":
        return StateCount(2 * n_regular + sum(2 * m * r for (m, _), r in zip(shapes, ranks)), 0, sum(ranks))
    moments = sum(2 * r * max(m, n) for (m, n), r in zip(shapes, ranks))
    return StateCount(2 * n_regular + moments, sum(r * min(m, n) for (m, n), r in zip(shapes, ranks)))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Measured: the bytes of every tensor in ``optimizer.state`` (moments, projectors, indices, and torch's
    0-d step counters where an optimizer keeps them as tensors)."""
    return sum(
        t.numel() * t.element_size()
        for per_param in optimizer.state.values()
        for t in per_param.values()
        if torch.is_tensor(t)
    )


# --- the training loop -----------------------------------------------------------------------------------------


def next_token_loss(model: nn.Module, tokens: Tensor) -> Tensor:
    """Mean cross-entropy of predicting x_{t+1} from x_≤t over a batch of sequences ``(B, L)``. A scalar."""
    logits = model(tokens[:, :-1])  # (B, L−1, V)
    # L = −(1/(B(L−1))) Σ log softmax(logits)[x_{t+1}]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def train_lm(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Tensor,
    *,
    n_steps: int,
    batch_size: int,
    generator: torch.Generator,
    after_step: Callable[[int, Tensor], None] | None = None,
) -> None:
    """The loop every arm runs: ``n_steps`` steps of a random mini-batch of ``train`` ``(N, L)`` (drawn with
    ``generator``, a CPU generator), next-token loss, backward, ``optimizer.step()``.
    ``after_step(step, loss)`` (step = 1 … n_steps) checks and logs."""
    model.train()
    for step in range(1, n_steps + 1):
        idx = torch.randint(train.shape[0], (batch_size,), generator=generator).to(train.device)
        loss = next_token_loss(model, train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(step, loss.detach())
