"""SSL-RecSys — "Self-supervised Learning for Large-scale Item Recommendations" (Yao, Yi, Cheng et al., CIKM 2021),
arXiv 2007.12865.

A two-tower retrieval model: query tower q(x), item tower g(y), both ending in unit vectors; y is an item's
categorical features y^(1..n) (item ID included). The main task is the in-batch softmax with the logQ correction
(Yi et al. 2019), with p_j the probability that item j is drawn into a batch:

    s(x_i, y_j) = ⟨q(x_i), g(y_j)⟩/τ_m − log p_j,       L_main = −(1/B)·Σ_i log[e^{s(x_i,y_i)} / Σ_j e^{s(x_i,y_j)}]

The self-supervised task on the ITEM tower: N items sampled UNIFORMLY from the catalogue (so tail items get gradient
too); each gets two views with complementary feature masks, a masked field's embedding replaced by the zero vector:
view 1 masks the field set M_i, view 2 masks its complement. With z_i = g(view 1 of y_i), z'_i = g(view 2 of y_i),

    L_self = −(1/N)·Σ_i log[e^{⟨z_i, z'_i⟩/τ} / Σ_j e^{⟨z_i, z'_j⟩/τ}]                              (InfoNCE)
    L = L_main + α·L_self                                                                   (multi-task, shared g)

The masks: Random Feature Masking (RFM) takes M_i = a random half of the n fields; Correlated Feature Masking (CFM)
precomputes the mutual information MI(V_a, V_b) between every pair of fields on the item table (one row per item),
then per example draws a seed field f_s uniformly and masks M_i = {f_s} ∪ the ⌊n/2⌋ − 1 fields with the highest MI
with f_s, so that highly correlated fields fall on the same side and one view cannot simply copy the other.

The paper also drops single values of multi-valent features ("feature dropout"); every field here has one value, so
the augmentation is the complementary masking alone. :func:`train_two_towers` is the training loop (one optimiser
step on both towers per step); the two-tower model itself and the in-batch softmax live in
:mod:`labkit.substrates.recsys`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from labkit.substrates.recsys import TwoTower, in_batch_softmax_loss

# --- correlated feature masking: the mutual information between fields, on the item table ---------------------


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """MI(A; B) in nats of two categorical columns ``(K,)`` from their joint counts (one row per item)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    p_ab = joint / joint.sum()
    p_a, p_b = p_ab.sum(1, keepdims=True), p_ab.sum(0, keepdims=True)
    nz = p_ab > 0
    # MI = Σ_{a,b} p(a,b)·log[p(a,b) / (p(a)·p(b))]
    return float((p_ab[nz] * np.log(p_ab[nz] / (p_a @ p_b)[nz])).sum())


def mutual_information_matrix(features: np.ndarray) -> np.ndarray:
    """MI(V_a, V_b) for every pair of fields of an item table ``(K, F)`` → ``(F, F)`` symmetric (diagonal = H(V_a))."""
    n_fields = features.shape[1]
    mi = np.zeros((n_fields, n_fields))
    for a in range(n_fields):
        for b in range(a, n_fields):
            mi[a, b] = mi[b, a] = mutual_information(features[:, a], features[:, b])
    return mi


def cfm_mask_table(mi: np.ndarray) -> Tensor:
    """Row s = the CFM mask for seed field s: {s} ∪ the ⌊F/2⌋ − 1 other fields with the highest MI with s,
    ``(F, F)`` bool (ties go to the lower field index)."""
    n_fields = mi.shape[0]
    table = torch.zeros(n_fields, n_fields, dtype=torch.bool)
    for s in range(n_fields):
        others = [f for f in sorted(range(n_fields), key=lambda f: (-mi[s, f], f)) if f != s]
        table[s, [s, *others[: n_fields // 2 - 1]]] = True
    return table


# --- the two masking schemes (vectorised: one mask per model and example) --------------------------------------


def random_feature_masks(shape: tuple[int, ...], n_fields: int, generator: torch.Generator) -> Tensor:
    """RFM: for each example, a uniformly random set of ⌊F/2⌋ of the F fields, ``shape + (F,)`` bool."""
    # rank of each field under i.i.d. uniform scores = a uniform random permutation; mask the first ⌊F/2⌋
    ranks = torch.rand(*shape, n_fields, generator=generator).argsort(-1).argsort(-1)
    return ranks < n_fields // 2


def correlated_feature_masks(table: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """CFM: per example a seed field f_s ~ Uniform{1..F} and the mask row of f_s from :func:`cfm_mask_table`.
    ``table (F, F)`` or ``(M, F, F)`` (one per model; then ``shape = (M, N)``) → ``shape + (F,)`` bool."""
    n_fields = table.shape[-1]
    seed_field = torch.randint(0, n_fields, shape, generator=generator).to(table.device)
    if table.dim() == 2:
        return table[seed_field]
    rows = torch.arange(table.shape[0], device=table.device).view(-1, *([1] * (len(shape) - 1)))
    return table[rows, seed_field]


def complementary_views(masked: Tensor) -> tuple[Tensor, Tensor]:
    """The two views' masks: view 1 masks M, view 2 masks the complement (every field is seen by exactly one)."""
    return masked, ~masked


# --- the self-supervised loss -----------------------------------------------------------------------------------


def ssl_contrastive_loss(z: Tensor, z_prime: Tensor, tau: float) -> Tensor:
    """L_self for ``z, z' (..., N, d)`` unit vectors of the two views of the same N items → ``(...)``."""
    # ⟨z_i, z'_j⟩/τ for every pair in the SSL batch: the other items' second views are the negatives   (..., N, N)
    logits = z @ z_prime.transpose(-1, -2) / tau
    # L_self = −(1/N)·Σ_i log softmax_j(⟨z_i, z'_j⟩/τ)[j = i]                                             (...)
    return -torch.diagonal(logits.log_softmax(-1), dim1=-2, dim2=-1).mean(-1)


def multitask_loss(main: Tensor, self_supervised: Tensor, alpha: Tensor | float) -> Tensor:
    """L = L_main + α·L_self (per model)."""
    return main + alpha * self_supervised


# --- the training loop ------------------------------------------------------------------------------------------


def _gather(table: Tensor, index: Tensor) -> Tensor:
    """Row ``index[m, n]`` of model m's table: ``table (M, R, ...)``, ``index (M, N)`` → ``(M, N, ...)``."""
    return table[torch.arange(table.shape[0], device=table.device).view(-1, 1), index]


def train_two_towers(
    model: TwoTower,
    items: Tensor,
    users: Tensor,
    train_pairs: Tensor,
    log_q: Tensor,
    cfm_table: Tensor,
    alphas: Tensor,
    use_cfm: Tensor,
    *,
    n_steps: int,
    batch_size: int,
    ssl_batch_size: int,
    tau_main: float,
    tau_ssl: float,
    lr: float,
    generator: torch.Generator,
    problem: Tensor | None = None,
    on_step: Callable[[int, Tensor, Tensor, Tensor], None] | None = None,
) -> None:
    """Train M stacked two-tower models with L = L_main + α_m·L_self by Adam, in place.

    Per model m: ``items (M, K, F)`` the item table, ``users (M, U, G)`` the user table, ``train_pairs (M, P, 2)``
    the logged (user, item) pairs, ``log_q (M, K)`` log p_j, ``cfm_table (M, F, F)`` the CFM masks per seed field,
    ``alphas (M,)`` the SSL weight (0 = the supervised-only two-tower), ``use_cfm (M,)`` CFM (True) or RFM (False).
    ``problem (M,)``: models with the same value draw the same batches and SSL items (common random numbers, for a
    paired comparison of arms on one problem); default: every model its own.
    ``on_step(step, loss (M,), main (M,), self (M,))`` sees each update (after it)."""
    n_models, n_items, n_fields = items.shape
    device = items.device
    problem = torch.arange(n_models) if problem is None else problem.cpu()
    n_problems = int(problem.max()) + 1
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ssl_models = (alphas != 0).nonzero().flatten()  # the models that have the SSL task
    for step in range(1, n_steps + 1):
        # main batch: B logged pairs per model, drawn from the training log (so items come by popularity)
        pick = torch.randint(0, train_pairs.shape[1], (n_problems, batch_size), generator=generator)[problem].to(device)
        pairs = _gather(train_pairs, pick)  # (M, B, 2)
        x, y = _gather(users, pairs[..., 0]), _gather(items, pairs[..., 1])  # (M, B, G), (M, B, F)
        main = in_batch_softmax_loss(model.query(x), model.item(y), _gather(log_q, pairs[..., 1]), tau_main)
        self_sup = torch.zeros_like(main)
        if len(ssl_models):
            # SSL batch: N items drawn UNIFORMLY from the catalogue, not from the log (only models with α ≠ 0)
            pick = torch.randint(0, n_items, (n_problems, ssl_batch_size), generator=generator)[problem].to(device)
            y_ssl = _gather(items, pick)[ssl_models]  # (M', N, F)
            shape = (len(ssl_models), ssl_batch_size)
            rfm = random_feature_masks(shape, n_fields, generator).to(device)
            cfm = correlated_feature_masks(cfm_table[ssl_models], shape, generator)
            masked = torch.where(use_cfm[ssl_models].view(-1, 1, 1), cfm, rfm)  # (M', N, F)
            view1, view2 = complementary_views(masked)
            z1, z2 = model.item(y_ssl, view1, models=ssl_models), model.item(y_ssl, view2, models=ssl_models)
            self_sup = self_sup.index_put((ssl_models,), ssl_contrastive_loss(z1, z2, tau_ssl))
        loss = multitask_loss(main, self_sup, alphas)  # (M,)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # the models' losses separate: each gets exactly its own gradient
        opt.step()
        if on_step is not None:
            on_step(step, loss.detach(), main.detach(), self_sup.detach())


@torch.no_grad()
def pair_scores(model: TwoTower, items: Tensor, users: Tensor, pairs: Tensor, m: int) -> Tensor:
    """Model m's scores ⟨q(x_u), g(y_i)⟩ of every catalogue item for the user of each pair, ``(P, K)``: all item
    embeddings recomputed in eval mode (no masks, no logQ at serving time)."""
    which = torch.tensor([m], device=items.device)
    g = model.item(items[m : m + 1], models=which)  # (1, K, d)
    q = model.query(users[m : m + 1, pairs[m, :, 0]], models=which)  # (1, P, d)
    return (q @ g.transpose(-1, -2))[0]
