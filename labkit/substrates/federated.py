"""A small in-process federated-learning simulator, shared by the federated methods.

One round with m clients, client i holding n_i samples (p_i = n_i / Σ_j n_j):

    w_i = LocalSGD(w, data_i)          every client starts from the global model w
    g_i = w_i − w                      the client update, one tensor per state-dict entry
    w  ← w + rule(G, n)                G = stack(g_1..g_m), aggregated tensor by tensor

An aggregation *rule* is any function ``rule(G, sizes) -> update`` applied to one tensor at a time
(``G`` has shape [m, *shape]). :func:`fedavg` and :func:`plain_mean` live here; a method adds its own
(FedLD's principal-gradient rule, RFFL's reputation weights). FedProx is the local loss plus
:func:`fedprox_penalty`. Everything runs on the device of the tensors it is given.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from labkit.core.training import accuracy as core_accuracy
from labkit.core.training import iterate_minibatches

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Rule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
State = dict[str, torch.Tensor]


@dataclass
class Client:
    """One client's training data, already on the run's device."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class LocalSGD:
    """Local optimiser: ``epochs`` passes of SGD (momentum, weight decay) over the client's data in
    shuffled mini-batches; ``prox_mu > 0`` adds FedProx's μ/2‖w − w_glob‖². A fresh optimiser (no
    momentum carried over) every round."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.5
    weight_decay: float = 5e-4
    prox_mu: float = 0.0


@dataclass
class RoundResult:
    """What one round produced: the local models, the stacked updates, the applied update, the
    mean local training loss of each client (a tensor of m values)."""

    local_states: list[State]
    updates: State
    update: State
    train_loss: torch.Tensor


# ---------------------------------------------------------------- aggregation rules


def size_weights(sizes: torch.Tensor) -> torch.Tensor:
    """p_i = n_i / Σ_j n_j."""
    sizes = torch.as_tensor(sizes, dtype=torch.float32)
    return sizes / sizes.sum()


def fedavg(G: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """FedAvg: the size-weighted mean Σ_i p_i g_i (G has shape [m, *shape])."""
    p = size_weights(sizes).to(device=G.device, dtype=G.dtype)
    return torch.tensordot(p, G, dims=1)


def plain_mean(G: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The unweighted mean (1/m) Σ_i g_i (``sizes`` is ignored)."""
    return G.mean(dim=0)


def fedprox_penalty(params, anchor, mu: float) -> torch.Tensor:
    """FedProx's proximal term μ/2 · Σ_tensors ‖w − w_glob‖²; its gradient is μ(w − w_glob)."""
    return 0.5 * mu * sum(((w - a) ** 2).sum() for w, a in zip(params, anchor))


# ---------------------------------------------------------------- one client, one round


def local_train(
    model: nn.Module, client: Client, loss_fn: LossFn, opt: LocalSGD, generator: torch.Generator
) -> torch.Tensor:
    """Train ``model`` in place on the client's data; returns the mean mini-batch loss (a tensor,
    so that no device sync happens per step)."""
    anchor = [w.detach().clone() for w in model.parameters()] if opt.prox_mu > 0 else None
    sgd = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    model.train()
    total, steps = torch.zeros((), device=client.x.device), 0
    for _ in range(opt.epochs):
        for idx in iterate_minibatches(client.n, opt.batch_size, generator):
            idx = idx.to(client.x.device)
            loss = loss_fn(model(client.x[idx]), client.y[idx])
            if anchor is not None:
                loss = loss + fedprox_penalty(model.parameters(), anchor, opt.prox_mu)
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
            total, steps = total + loss.detach(), steps + 1
    return total / max(steps, 1)


def model_state(model: nn.Module) -> State:
    """A detached copy of the model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def client_updates(global_state: State, local_states: list[State]) -> State:
    """G per tensor: name → stack_i(w_i − w), shape [m, *shape]."""
    return {k: torch.stack([s[k] - w for s in local_states]) for k, w in global_state.items()}


def aggregate(updates: State, sizes: torch.Tensor, rule: Rule) -> State:
    """Apply ``rule`` tensor by tensor. Integer entries (e.g. BatchNorm's batch counter) are averaged."""
    out = {}
    for k, G in updates.items():
        out[k] = rule(G, sizes) if G.is_floating_point() else G.float().mean(0).round().to(G.dtype)
    return out


def apply_update(model: nn.Module, update: State) -> None:
    """w ← w + update, for every state-dict entry."""
    state = model.state_dict()
    with torch.no_grad():
        for k, u in update.items():
            state[k].add_(u.to(state[k].dtype))


def federated_round(
    model: nn.Module,
    clients: list[Client],
    loss_fn: LossFn,
    opt: LocalSGD,
    rule: Rule,
    generator: torch.Generator,
    worker: nn.Module | None = None,
) -> RoundResult:
    """One round: every client trains from w, then w ← w + rule(G, n) (``model`` is updated in place).

    ``worker`` is a scratch copy of the model reused for local training (made if not given).
    """
    global_state = model_state(model)
    worker = worker if worker is not None else copy.deepcopy(model)
    local_states, losses = [], []
    for client in clients:
        worker.load_state_dict(global_state)
        losses.append(local_train(worker, client, loss_fn, opt, generator))
        local_states.append(model_state(worker))
    updates = client_updates(global_state, local_states)
    sizes = torch.tensor([c.n for c in clients], dtype=torch.float32)
    update = aggregate(updates, sizes, rule)
    apply_update(model, update)
    return RoundResult(local_states, updates, update, torch.stack(losses))


# ---------------------------------------------------------------- evaluation


def flatten_update(update: State) -> torch.Tensor:
    """All floating entries of an update (or state) as one vector, in state-dict order."""
    return torch.cat([u.reshape(-1) for u in update.values() if u.is_floating_point()])


def ce_per_sample(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample cross-entropy ℓ_b = −log softmax(z_b)[y_b] (the default statistic)."""
    return {"loss": F.cross_entropy(logits, y, reduction="none")}


def client_means(values: torch.Tensor, owner: torch.Tensor, n_clients: int) -> torch.Tensor:
    """Mean of ``values`` over each client's samples: out_i = (1/n_i) Σ_{b: owner_b = i} values_b."""
    sums = torch.zeros(n_clients, device=values.device, dtype=values.dtype).index_add_(0, owner, values)
    counts = torch.bincount(owner, minlength=n_clients).to(values.dtype)
    return sums / counts


@torch.no_grad()
def cross_evaluate(
    states: list[State],
    worker: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    owner: torch.Tensor,
    n_clients: int,
    per_sample: Callable[[torch.Tensor, torch.Tensor], dict] = ce_per_sample,
) -> dict[str, torch.Tensor]:
    """Evaluate every model on every client's data.

    ``x, y`` is the union of the clients' data and ``owner[b]`` the client that holds sample b.
    Returns, for each statistic of ``per_sample``, a matrix M[a, j] = mean of the statistic of model a
    on client j's samples (shape [len(states), n_clients]).
    """
    worker.eval()
    rows: dict[str, list] = {}
    for state in states:
        worker.load_state_dict(state)
        for name, vals in per_sample(worker(x), y).items():
            rows.setdefault(name, []).append(client_means(vals, owner, n_clients))
    return {name: torch.stack(r) for name, r in rows.items()}


accuracy = core_accuracy  # the kit's one accuracy helper (labkit.core.training.accuracy)


# ---------------------------------------------------------------- clipping and adversarial clients
#
# Generic pieces for robustness experiments (RFFL and later methods). An attack corrupts what a client
# *uploads*; each function works entry by entry on one tensor and draws its randomness from a CPU
# ``torch.Generator`` (moved to the tensor's device afterwards), so runs are reproducible on any device.


def update_norm(update: State) -> torch.Tensor:
    """‖u‖ over all floating entries of an update (one vector in state-dict order)."""
    return flatten_update(update).norm()


def clip_to_norm(update: State, gamma: float) -> State:
    """u · min(1, Γ/‖u‖): rescale the whole update (all tensors together) to norm Γ if it is longer.

    The official RFFL code compares ‖u‖ + 1e-7 with Γ and divides by ‖u‖ + 1e-7; without the ε the
    result differs by a relative 1e-7/‖u‖, and clipping an already clipped update changes nothing.
    """
    norm = float(update_norm(update))
    if norm <= gamma:
        return {k: v.clone() for k, v in update.items()}
    scale = gamma / norm
    return {k: v * scale if v.is_floating_point() else v.clone() for k, v in update.items()}


def _uniform(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """U[0, 1) entries shaped like ``t``, drawn on the CPU from ``generator``, on ``t``'s device."""
    return torch.rand(t.shape, generator=generator).to(device=t.device, dtype=t.dtype)


def uniform_noise_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Free-rider upload: i.i.d. U[−1, 1] entries of ``t``'s shape (``t``'s values are ignored)."""
    return 2 * _uniform(t, generator) - 1


def randomize_signs(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sign randomising: t_k · s_k with s_k = ±1, each with probability 1/2."""
    return torch.where(_uniform(t, generator) < 0.5, -t, t)


def invert_values(t: torch.Tensor, generator: torch.Generator, eps: float = 1e-10) -> torch.Tensor:
    """Value inverting: each entry, with probability 1/2, replaced by 1/(t_k + ε)."""
    return torch.where(_uniform(t, generator) < 0.5, 1.0 / (t + eps), t)


def rescale_values(t: torch.Tensor, generator: torch.Generator, noise: float = 10.0) -> torch.Tensor:
    """Re-scaling: t_k · U[−noise, noise] · noise, entry by entry."""
    return t * (2 * noise * _uniform(t, generator) - noise) * noise


def flip_labels(y: torch.Tensor, source: int = 1, target: int = 7) -> torch.Tensor:
    """Label flipping: a copy of ``y`` with every ``source`` label replaced by ``target``."""
    return torch.where(y == source, torch.full_like(y, target), y)


def corrupt_update(
    update: State, attack: Callable[[torch.Tensor, torch.Generator], torch.Tensor], generator: torch.Generator
) -> State:
    """Apply an entry-wise ``attack`` to every floating tensor of an update, in state-dict order."""
    return {k: attack(v, generator) if v.is_floating_point() else v.clone() for k, v in update.items()}
