"""FedLD and RFFL as Flower strategies, built on labkit's own aggregation functions.

For a user who outgrows one machine: the same server rules that labkit's simulator applies, on a real
Flower deployment (``flwr run``) or Flower's simulation runtime. Written for Flower's message API
(``flwr.serverapp.strategy.Strategy``; flwr pinned at :data:`FLWR_PIN`). Flower is imported only when a
strategy or client app is asked for, so ``import labkit`` and ``import labkit.flower`` stay cheap and work
without it::

    from labkit.flower import FedLDStrategy, RFFLStrategy, fedld_client_app, rffl_client_app

    strategy = RFFLStrategy(alpha=0.95, beta=1/3, gamma=0.15)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=30)

* :class:`FedLDStrategy` (a Flower ``FedAvg``): clients return their local models ("arrays") and
  "num-examples"; the server forms g_i = w_i − w and applies FedLD's rule tensor by tensor — the plain
  mean in round 1, :func:`labkit.methods.fedld.principal_aggregate` afterwards. The margin-control loss is
  the clients' part (:func:`fedld_client_app`).
* :class:`RFFLStrategy`: there is no global model. Clients keep their own models (in the node's
  ``context.state``) and upload clipped updates Δ_i; the server keeps reputations and the admitted set
  (:class:`labkit.methods.rffl.ReputationServer`) and sends each admitted node its own reward — the
  aggregate u sparsified per layer with its fraction q_i — with the next message it sends that node
  (evaluate, or else the next train). Removed nodes are never contacted again. ``aggregate_train``
  returns u and a MetricRecord with the reputations, contributions, |R| and the threshold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace

import torch

from labkit.substrates.federated import (
    Client,
    LocalSGD,
    aggregate,
    client_updates,
    clip_to_norm,
    local_train,
    model_state,
)

FLWR_PIN = "1.42.0"
State = dict[str, torch.Tensor]
_LAZY = ("FedLDStrategy", "RFFLStrategy")


def require_flwr():
    """``flwr``, or an ``ImportError`` that says how to install it."""
    try:
        import flwr
    except ImportError as err:
        raise ImportError(
            f"labkit.flower needs Flower: pip install flwr=={FLWR_PIN} "
            f"(or pip install 'flwr[simulation]=={FLWR_PIN}' to run Flower's simulation engine)"
        ) from err
    return flwr


def __getattr__(name: str):
    if name in _LAZY:
        return _strategy_classes()[name]
    raise AttributeError(f"module 'labkit.flower' has no attribute {name!r}")


# ---------------------------------------------------------------- server rules (no Flower needed)


def fedld_server_update(
    global_state: State, local_states: list[State], sizes, round_idx: int, k_proportion: float = 0.8
) -> State:
    """FedLD's server step: w ← w + rule(G), G_i = w_i − w per tensor; rule = plain mean when
    ``round_idx == 0`` (Flower's round 1), principal-gradient aggregation afterwards."""
    from labkit.methods import fedld

    rule = fedld.server_rule(fedld.Arm("fedld", "FedLD", principal=True), round_idx, k_proportion)
    update = aggregate(client_updates(global_state, local_states), torch.as_tensor(sizes, dtype=torch.float32), rule)
    return {k: w + update[k].to(w.dtype) for k, w in global_state.items()}


def client_generator(seed: int, partition_id: int) -> torch.Generator:
    """The participant's generator, seeded as labkit's :func:`labkit.methods.rffl.participant_generators`."""
    return torch.Generator().manual_seed(10_000 * seed + partition_id)


# ---------------------------------------------------------------- digits federations as Flower partitions


def fedld_partition(partition_id: int, seed: int = 0, **overrides) -> Client:
    """Client ``partition_id`` of :func:`labkit.methods.fedld.make_federation` (quick preset + overrides)."""
    from labkit.core import resolve_params
    from labkit.methods import fedld

    p = SimpleNamespace(**resolve_params(fedld.PARAMS, "quick", overrides))
    return fedld.make_federation(p, seed, "cpu").clients[partition_id]


def rffl_partition(partition_id: int, seed: int = 0, attack: str = "free_rider", **overrides):
    """(participant, x_test, y_test): participant ``partition_id`` of RFFL's digits federation (quick preset
    + overrides; honest participants first, then the adversaries of ``attack``)."""
    from labkit.core import resolve_params
    from labkit.methods import rffl

    p = SimpleNamespace(**resolve_params(rffl.PARAMS, "quick", overrides))
    fed = rffl.with_adversaries(rffl.honest_federation(p, seed, "cpu"), attack, p.n_adversaries)
    return fed.participants[partition_id], fed.x_test, fed.y_test


# ---------------------------------------------------------------- client apps


def fedld_client_app(
    data_fn: Callable[[int], Client],
    model_fn: Callable[[], torch.nn.Module],
    *,
    lam: float = 0.1,
    opt: LocalSGD = LocalSGD(),  # noqa: B008 - a frozen dataclass of numbers
    seed: int = 0,
):
    """A Flower ``ClientApp`` for FedLD: load the global model, train with the margin-control loss
    (λ from the message's config "lam", else ``lam``), return the local model and "num-examples".
    ``data_fn(partition_id)`` gives the node's :class:`~labkit.substrates.federated.Client`."""
    require_flwr()
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from labkit.methods import fedld

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        client, model = data_fn(pid), model_fn()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        config = msg.content.get("config", {})
        loss_fn = functools.partial(fedld.margin_control_loss, lam=float(config.get("lam", lam)))
        gen = torch.Generator().manual_seed(10_000 * seed + 100 * int(config.get("server-round", 0)) + pid)
        loss = local_train(model, client, loss_fn, opt, gen)
        metrics = MetricRecord({"num-examples": client.n, "train_loss": float(loss)})
        return Message(RecordDict({"arrays": ArrayRecord(model_state(model)), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        client, model = data_fn(int(context.node_config["partition-id"])), model_fn()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        with torch.no_grad():
            acc = (model.eval()(client.x).argmax(1) == client.y).float().mean()
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": client.n, "accuracy": float(acc)})}), reply_to=msg
        )

    return app


def rffl_client_app(
    data_fn: Callable,
    model_fn: Callable[[], torch.nn.Module],
    *,
    gamma: float,
    epochs: int = 1,
    lr: float = 0.1,
    lr_decay: float = 0.977,
    batch_size: int = 32,
    seed: int = 0,
):
    """A Flower ``ClientApp`` for an RFFL participant that keeps its own model θ_i in ``context.state``.

    Any message may carry "reward" (added to θ_i first). Train: θ_i from "arrays" on first contact, then
    :func:`labkit.methods.rffl.participant_upload` (honest or the participant's attack), θ_i ← θ_i + own
    step, reply Δ_i (clipped to Γ) with "num-examples" and "partition-id". Evaluate: accuracy of θ_i.
    ``data_fn(partition_id)`` gives (participant, x_test, y_test), e.g. :func:`rffl_partition`. The batch
    order and noise come from one generator per participant, kept in ``context.state`` across rounds."""
    require_flwr()
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from labkit.methods import rffl

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        part, _, _ = data_fn(pid)
        state, gen = _rffl_client_state(msg, context, seed, pid)
        worker = model_fn()
        rnd = int(msg.content["config"]["server-round"])
        cfg = rffl.RoundConfig(rnd - 1, epochs, lr, lr_decay, batch_size, gamma)
        upload, own, loss = rffl.participant_upload(part, state, worker, cfg, gen)
        _save_rffl_client_state(context, rffl.add_states(state, own) if own is not None else state, gen)
        metrics = MetricRecord({"num-examples": part.client.n, "partition-id": pid, "train_loss": float(loss)})
        return Message(RecordDict({"arrays": _record(upload), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        part, x_test, y_test = data_fn(pid)
        state, gen = _rffl_client_state(msg, context, seed, pid)
        _save_rffl_client_state(context, state, gen)
        acc = rffl.accuracy_of(model_fn(), state, x_test, y_test)
        metrics = MetricRecord({"num-examples": part.client.n, "partition-id": pid, "accuracy": acc})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def _record(state: State):
    from flwr.app import ArrayRecord

    return ArrayRecord({k: v.detach().cpu() for k, v in state.items()})


def _rffl_client_state(msg, context, seed: int, pid: int) -> tuple[State, torch.Generator]:
    """θ_i (from context.state, else the message's "arrays") plus any "reward"; the participant's generator."""
    if "rffl.model" in context.state:
        state = context.state["rffl.model"].to_torch_state_dict()
        gen = torch.Generator()
        gen.set_state(context.state["rffl.rng"].to_torch_state_dict()["state"])
    else:
        state, gen = msg.content["arrays"].to_torch_state_dict(), client_generator(seed, pid)
    if "reward" in msg.content:
        reward = msg.content["reward"].to_torch_state_dict()
        state = {k: v + reward[k].to(v.dtype) for k, v in state.items()}
    return state, gen


def _save_rffl_client_state(context, state: State, gen: torch.Generator) -> None:
    from flwr.app import ArrayRecord

    context.state["rffl.model"] = _record(state)
    context.state["rffl.rng"] = ArrayRecord({"state": gen.get_state()})


# ---------------------------------------------------------------- strategies


@functools.cache
def _strategy_classes() -> dict:
    """Build the strategy classes on first use (they subclass Flower's, which needs ``flwr``)."""
    require_flwr()
    from flwr.app import Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg, Strategy
    from flwr.serverapp.strategy.strategy_utils import sample_nodes

    from labkit.methods import rffl

    class FedLDStrategy(FedAvg):
        """FedLD's server on Flower: :func:`fedld_server_update` on the clients' local models.

        ``k_proportion``: share of principal directions kept; ``lam`` is sent to the clients in the
        train config ("lam") for the margin-control loss. Other arguments go to Flower's ``FedAvg``
        (sampling, record keys, metric aggregation)."""

        def __init__(self, k_proportion: float = 0.8, lam: float = 0.1, **kwargs):
            super().__init__(**kwargs)
            self.k_proportion, self.lam, self._global = k_proportion, lam, None

        def configure_train(self, server_round, arrays, config, grid):
            self._global = arrays.to_torch_state_dict()
            config["lam"] = self.lam
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            valid, _ = self._check_and_log_replies(replies, is_train=True)
            if not valid:
                return None, None
            contents = [m.content for m in valid]
            local = [c[self.arrayrecord_key].to_torch_state_dict() for c in contents]
            sizes = [float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents]
            new = fedld_server_update(self._global, local, sizes, server_round - 1, self.k_proportion)
            return _record(new), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

        def summary(self) -> None:
            super().summary()

    class RFFLStrategy(Strategy):
        """RFFL's server on Flower: reputations, removal and per-node rewards (see the module docstring).

        ``alpha``, ``beta``, ``grace_rounds`` as in :class:`labkit.methods.rffl.ReputationServer`; ``gamma``
        (optional) clips every upload to norm Γ on the server too, so a client that does not clip gains
        nothing. All nodes connected when round 1 starts (at least ``min_available_nodes``) take part.
        Participants are ordered by the "partition-id" they report, else by node id."""

        def __init__(
            self,
            alpha: float = 0.95,
            beta: float = 1 / 3,
            gamma: float | None = None,
            grace_rounds: int = 0,
            min_available_nodes: int = 2,
            fraction_evaluate: float = 1.0,
            arrayrecord_key: str = "arrays",
            configrecord_key: str = "config",
            weighted_by_key: str = "num-examples",
        ):
            self.alpha, self.beta, self.gamma, self.grace_rounds = alpha, beta, gamma, grace_rounds
            self.min_available_nodes, self.fraction_evaluate = min_available_nodes, fraction_evaluate
            self.arrayrecord_key, self.configrecord_key = arrayrecord_key, configrecord_key
            self.weighted_by_key = weighted_by_key
            self.nodes: list[int] | None = None
            self.server: rffl.ReputationServer | None = None
            self.pending: dict[int, State] = {}
            self.accuracy: dict[int, float] = {}

        def summary(self) -> None:
            from logging import INFO

            from flwr.supercore import log

            log(
                INFO,
                "\t├──> RFFL: α = %s, β = %s, Γ = %s, grace rounds = %s",
                self.alpha,
                self.beta,
                self.gamma,
                self.grace_rounds,
            )

        def admitted(self) -> list[int]:
            if self.server is None:
                return list(self.nodes or [])
            return [n for n, a in zip(self.nodes, self.server.active.tolist()) if a]

        def _message(self, node: int, content: dict, kind: str) -> Message:
            record = RecordDict(content)
            if node in self.pending:
                record["reward"] = _record(self.pending.pop(node))
            return Message(content=record, dst_node_id=node, message_type=kind)

        def configure_train(self, server_round, arrays, config, grid):
            if self.nodes is None:
                n = max(self.min_available_nodes, len(list(grid.get_node_ids())))
                self.nodes = sorted(sample_nodes(grid, self.min_available_nodes, n)[0])
            config["server-round"] = server_round
            content = {self.configrecord_key: config}
            if self.server is None:
                content[self.arrayrecord_key] = arrays  # every participant starts from the same model
            return [self._message(n, content, MessageType.TRAIN) for n in self.admitted()]

        def _order(self, by_node: dict) -> None:
            def key(node):
                metrics = next(iter(by_node[node].metric_records.values()), {}) if node in by_node else {}
                return (metrics.get("partition-id", node), node)

            self.nodes = sorted(self.nodes, key=key)
            sizes = [
                float(next(iter(by_node[n].metric_records.values()))[self.weighted_by_key]) if n in by_node else 0.0
                for n in self.nodes
            ]
            self.server = rffl.ReputationServer(torch.tensor(sizes), self.alpha, self.beta, self.grace_rounds)

        def aggregate_train(self, server_round, replies):
            by_node = {m.metadata.src_node_id: m.content for m in replies if not m.has_error()}
            if not by_node:
                return None, None
            if self.server is None:
                self._order(by_node)
            uploads = self._uploads(by_node)
            step = self.server.step(rffl.stack_states(uploads))
            for i, node in enumerate(self.nodes):
                if self.server.active[i]:
                    reward = step.reward(i)
                    old = self.pending.get(node)
                    self.pending[node] = reward if old is None else rffl.add_states(old, reward)
            metrics = MetricRecord(
                {
                    "reputation": step.r.tolist(),
                    "contribution": step.phi.tolist(),
                    "admitted": int(self.server.active.sum()),
                    "threshold": step.threshold,
                }
            )
            return _record(step.u), metrics

        def _uploads(self, by_node: dict) -> list[State]:
            """Δ_i per participant in order; zero for removed or silent nodes; clipped to Γ if set."""
            first = next(iter(by_node.values()))[self.arrayrecord_key].to_torch_state_dict()
            out, active = [], dict(zip(self.nodes, self.server.active.tolist()))
            for node in self.nodes:
                if node in by_node and active[node]:
                    delta = by_node[node][self.arrayrecord_key].to_torch_state_dict()
                    out.append(clip_to_norm(delta, self.gamma) if self.gamma is not None else delta)
                else:
                    out.append({k: torch.zeros_like(v) for k, v in first.items()})
            return out

        def configure_evaluate(self, server_round, arrays, config, grid):
            if self.fraction_evaluate == 0.0:
                return []
            config["server-round"] = server_round
            return [self._message(n, {self.configrecord_key: config}, MessageType.EVALUATE) for n in self.admitted()]

        def aggregate_evaluate(self, server_round, replies):
            """Keeps each node's accuracy (``self.accuracy``); returns their size-weighted mean and the best."""
            n, acc = {}, {}
            for m in replies:
                if not m.has_error():
                    metrics = next(iter(m.content.metric_records.values()))
                    node = m.metadata.src_node_id
                    n[node], acc[node] = float(metrics[self.weighted_by_key]), float(metrics["accuracy"])
            if not acc:
                return None
            self.accuracy.update(acc)
            mean = sum(n[k] * acc[k] for k in acc) / sum(n.values())
            return MetricRecord({"accuracy": mean, "best-accuracy": max(acc.values())})

    classes = {"FedLDStrategy": FedLDStrategy, "RFFLStrategy": RFFLStrategy}
    for name, cls in classes.items():  # importable as labkit.flower.<name> (repr, pickling)
        cls.__module__, cls.__qualname__ = __name__, name
    return classes
