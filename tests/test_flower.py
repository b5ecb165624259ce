"""labkit.flower: FedLD and RFFL as Flower strategies (message API), checked against labkit's simulator.

Unit tests call the strategies with Flower's own types (Message, RecordDict, ArrayRecord, MetricRecord)
on client updates that labkit produced; the slow test runs both strategies in Flower's simulation
runtime (Ray) and compares them with labkit's simulator run on the same clients.
"""

import functools
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from labkit import flower as lf
from labkit.core import resolve_params, torch_threads
from labkit.methods import fedld, rffl
from labkit.models import MLP
from labkit.substrates.federated import LocalSGD, clip_to_norm, fedavg, federated_round, model_state


@pytest.fixture(autouse=True)
def flower_identity(monkeypatch):
    """Instruction messages need the task identity that a ServerApp run would set."""
    for attr in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)
    with torch_threads(1):
        yield


class FakeGrid:
    """Just enough of a Flower Grid for configure_*: the connected node ids."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return self.nodes


def reply(node: int, content: dict, kind=MessageType.TRAIN) -> Message:
    """A client's reply to an instruction sent to ``node``."""
    return Message(RecordDict(content), reply_to=Message(RecordDict(), dst_node_id=node, message_type=kind))


def states_close(a: dict, b: dict, atol=1e-6) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


# ---------------------------------------------------------------- packaging


def test_import_labkit_does_not_import_flower():
    code = "import sys, labkit, labkit.flower, labkit.methods.rffl; print('flwr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_flower_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr", None)  # `import flwr` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install flwr==1\.42\.0"):
        lf.require_flwr()
    with pytest.raises(ImportError, match="flwr==1.42.0"):
        lf.rffl_client_app(lf.rffl_partition, lambda: torch.nn.Linear(64, 10), gamma=0.1)


def test_strategies_are_importable_names():
    assert lf.FedLDStrategy.__module__ == "labkit.flower" and lf.RFFLStrategy.__name__ == "RFFLStrategy"
    with pytest.raises(AttributeError):
        lf.NoSuchStrategy  # noqa: B018


# ---------------------------------------------------------------- FedAvg and FedLD with Flower's types


def fedld_clients(n=4):
    p = SimpleNamespace(**resolve_params(fedld.PARAMS, "quick", {"n_clients": n}))
    return fedld.make_federation(p, 0, "cpu").clients


def labkit_fedld_round(model, clients, round_idx):
    """One round of labkit's simulator with FedLD's rule; returns (global before, local models)."""
    before = model_state(model)
    rule = fedld.server_rule(fedld.Arm("fedld", "FedLD", lam=0.1, principal=True), round_idx, 0.8)
    loss = functools.partial(fedld.margin_control_loss, lam=0.1)
    rr = federated_round(model, clients, loss, LocalSGD(), rule, torch.Generator().manual_seed(round_idx))
    return before, rr.local_states


def train_replies(nodes, local_states, clients):
    return [
        reply(n, {"arrays": ArrayRecord(s), "metrics": MetricRecord({"num-examples": c.n})})
        for n, s, c in zip(nodes, local_states, clients)
    ]


def test_labkit_fedavg_matches_flowers_fedavg():
    from flwr.serverapp.strategy import FedAvg

    clients, nodes = fedld_clients(), [11, 12, 13, 14]
    torch.manual_seed(0)
    model = MLP(64, [16], 10)
    before = model_state(model)
    rr = federated_round(model, clients, torch.nn.functional.cross_entropy, LocalSGD(), fedavg, torch.Generator())
    arrays, _ = FedAvg().aggregate_train(1, train_replies(nodes, rr.local_states, clients))
    assert states_close(arrays.to_torch_state_dict(), model.state_dict())
    assert not states_close(before, model.state_dict())


def test_rffl_weighted_update_matches_flowers_aggregate_helper():
    from flwr.server.strategy.aggregate import aggregate

    gen = torch.Generator().manual_seed(0)
    uploads = [{"w": torch.randn(3, 2, generator=gen), "b": torch.randn(2, generator=gen)} for _ in range(3)]
    sizes = [5, 1, 14]
    ours = rffl.weighted_update(rffl.stack_states(uploads), torch.tensor(sizes) / sum(sizes))
    theirs = aggregate([([u["w"].numpy(), u["b"].numpy()], n) for u, n in zip(uploads, sizes)])
    assert np.allclose(ours["w"].numpy(), theirs[0], atol=1e-6) and np.allclose(ours["b"].numpy(), theirs[1], atol=1e-6)


def test_fedld_strategy_round_equals_labkit_simulator():
    from flwr.serverapp.strategy import FedAvg

    clients, nodes = fedld_clients(), [11, 12, 13, 14]
    torch.manual_seed(0)
    model = MLP(64, [16], 10)
    strategy, grid = lf.FedLDStrategy(k_proportion=0.8, lam=0.1, min_available_nodes=4), FakeGrid(nodes)
    for rnd in (1, 2):  # round 1: plain mean; round 2: principal rule
        before, local = labkit_fedld_round(model, clients, rnd - 1)
        sent = list(strategy.configure_train(rnd, ArrayRecord(before), ConfigRecord(), grid))
        assert sorted(m.metadata.dst_node_id for m in sent) == nodes and sent[0].content["config"]["lam"] == 0.1
        replies = train_replies(nodes, local, clients)
        arrays, _ = strategy.aggregate_train(rnd, replies[::-1])  # reply order does not matter
        assert states_close(arrays.to_torch_state_dict(), model.state_dict())
        plain, _ = FedAvg().aggregate_train(rnd, replies)  # and it is not FedAvg (sizes differ, rule differs)
        assert not states_close(arrays.to_torch_state_dict(), plain.to_torch_state_dict(), atol=1e-4)


def test_fedld_server_update_by_hand():
    # two clients, one 2-vector tensor: g1 = (3, 0), g2 = (0, 4) (see test_fedld): round 1 plain mean,
    # later rounds the principal rule with k = ⌊0.8·2⌋ = 1 → (0, 1.28)
    w = {"w": torch.tensor([1.0, 1.0])}
    locals_ = [{"w": torch.tensor([4.0, 1.0])}, {"w": torch.tensor([1.0, 5.0])}]
    assert lf.fedld_server_update(w, locals_, [1, 3], 0)["w"].tolist() == pytest.approx([2.5, 3.0])
    assert lf.fedld_server_update(w, locals_, [1, 3], 1)["w"].tolist() == pytest.approx([1.0, 2.28], abs=1e-6)


# ---------------------------------------------------------------- RFFL with Flower's types


def random_uploads(rounds=4, m=4, seed=0):
    """Per round, m uploads {"w": 3×2, "b": 2}: three share a direction, the last is a sign-flipped copy."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rounds):
        base = torch.randn(8, generator=gen)
        ups = [base + 0.5 * torch.randn(8, generator=gen) for _ in range(m - 1)] + [-base]
        out.append([{"w": u[:6].reshape(3, 2), "b": u[6:]} for u in ups])
    return out


def rffl_train_replies(nodes, uploads, sizes):
    return [
        reply(n, {"arrays": ArrayRecord(u), "metrics": MetricRecord({"num-examples": s, "partition-id": i})})
        for i, (n, u, s) in enumerate(zip(nodes, uploads, sizes))
    ]


def delivered_rewards(messages) -> dict:
    return {
        m.metadata.dst_node_id: m.content["reward"].to_torch_state_dict() for m in messages if "reward" in m.content
    }


@pytest.mark.parametrize("evaluate", [True, False])
def test_rffl_strategy_equals_reputation_server_on_the_same_uploads(evaluate):
    nodes, sizes = [40, 10, 30, 20], [10, 20, 30, 20]  # node ids do not follow partition order
    grid, init = FakeGrid(nodes), ArrayRecord({"w": torch.zeros(3, 2), "b": torch.zeros(2)})
    strategy = lf.RFFLStrategy(alpha=0.9, beta=1 / 3, min_available_nodes=4, fraction_evaluate=float(evaluate))
    server = rffl.ReputationServer(torch.tensor(sizes, dtype=torch.float32), alpha=0.9, beta=1 / 3)
    expected = {}  # rewards labkit pays, waiting to be delivered
    for rnd, uploads in enumerate(random_uploads(), start=1):
        sent = list(strategy.configure_train(rnd, init, ConfigRecord(), grid))
        admitted = [n for n, a in zip(nodes, server.active.tolist()) if a]
        assert sorted(m.metadata.dst_node_id for m in sent) == sorted(admitted)
        assert all(("arrays" in m.content) == (rnd == 1) for m in sent)  # the initial model once
        got = delivered_rewards(sent)
        assert got.keys() == ({} if evaluate else expected).keys()
        assert all(states_close(got[n], expected[n]) for n in got)
        step = server.step(rffl.stack_states(uploads))
        arrays, metrics = strategy.aggregate_train(rnd, rffl_train_replies(nodes, uploads, sizes)[::-1])
        assert states_close(arrays.to_torch_state_dict(), step.u)
        assert metrics["reputation"] == pytest.approx(step.r.tolist(), abs=1e-7)
        assert metrics["admitted"] == int(server.active.sum())
        expected = {n: step.reward(i) for i, n in enumerate(nodes) if server.active[i]}
        evals = list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid))
        if evaluate:
            got = delivered_rewards(evals)
            assert got.keys() == expected.keys() and all(states_close(got[n], expected[n]) for n in got)
            expected = {}
        else:
            assert evals == []
    assert server.removed_round == {3: 1}  # the sign-flipped participant, in round 1
    assert strategy.nodes == nodes and strategy.server.removed_round == server.removed_round


def test_rffl_strategy_clips_uploads_on_the_server():
    nodes, grid = [1, 2, 3], FakeGrid([1, 2, 3])
    uploads = [{"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([0.3, 0.1])}, {"w": torch.tensor([0.2, 0.2])}]
    strategy = lf.RFFLStrategy(gamma=0.5, min_available_nodes=3)
    list(strategy.configure_train(1, ArrayRecord({"w": torch.zeros(2)}), ConfigRecord(), grid))
    arrays, _ = strategy.aggregate_train(1, rffl_train_replies(nodes, uploads, [1, 1, 1]))
    clipped = [clip_to_norm(u, 0.5) for u in uploads]  # (0.3, 0.4): the first could not outweigh the rest
    step = rffl.ReputationServer(torch.ones(3)).step(rffl.stack_states(clipped))
    assert states_close(arrays.to_torch_state_dict(), step.u)


def test_rffl_strategy_gives_a_silent_node_a_zero_upload():
    nodes, grid, uploads = [1, 2, 3, 4], FakeGrid([1, 2, 3, 4]), random_uploads(1)[0]
    strategy = lf.RFFLStrategy(min_available_nodes=4)
    list(strategy.configure_train(1, ArrayRecord(uploads[0]), ConfigRecord(), grid))
    arrays, metrics = strategy.aggregate_train(1, rffl_train_replies(nodes, uploads, [5, 5, 5, 5])[:3])
    zero = {k: torch.zeros_like(v) for k, v in uploads[0].items()}
    step = rffl.ReputationServer(torch.tensor([5.0, 5, 5, 0])).step(rffl.stack_states(uploads[:3] + [zero]))
    assert metrics["reputation"] == pytest.approx(step.r.tolist(), abs=1e-7)
    assert metrics["contribution"][3] == 0.0


# ---------------------------------------------------------------- Flower's simulation runtime


LAM, GAMMA = 0.1, 0.2


def labkit_fedld_reference(n_clients=4, rounds=2):
    """labkit's simulator, full-batch local SGD (so the batch order, hence the generator, does not matter)."""
    clients = fedld_clients(n_clients)
    torch.manual_seed(0)
    model = MLP(64, [16], 10)
    init = model_state(model)
    opt = LocalSGD(batch_size=10_000)
    loss = functools.partial(fedld.margin_control_loss, lam=LAM)
    for r in range(rounds):
        rule = fedld.server_rule(fedld.Arm("fedld", "FedLD", lam=LAM, principal=True), r, 0.8)
        federated_round(model, clients, loss, opt, rule, torch.Generator())
    return init, model_state(model)


def labkit_rffl_reference(data_fn, model_fn, rounds=2):
    """labkit's RFFL rounds on the same participants, generators and Γ; reputations and accuracies."""
    parts = [data_fn(i)[0] for i in range(4)]
    x, y = data_fn(0)[1:]
    torch.manual_seed(0)
    worker = model_fn()
    init = model_state(worker)
    server = rffl.ReputationServer(torch.tensor([float(q.client.n) for q in parts]))
    states, gens, reps = [dict(init) for _ in parts], rffl.participant_generators(0, 4), []
    for t in range(rounds):
        step, _ = rffl.rffl_round(states, parts, server, worker, rffl.RoundConfig(t, 1, 0.1, 0.977, 32, GAMMA), gens)
        reps.append(step.r.tolist())
    accs = [rffl.accuracy_of(worker, s, x, y) if server.active[i] else None for i, s in enumerate(states)]
    return init, reps, accs, step.u


@pytest.mark.slow
def test_flower_simulation_runs_both_strategies_like_labkit(monkeypatch):
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray FutureWarning
    from flwr.app import Context
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    fedld_data = functools.partial(lf.fedld_partition, seed=0, n_clients=4)
    rffl_data = functools.partial(lf.rffl_partition, seed=0, attack="free_rider", n_honest=3, n_adversaries=1)
    rffl_model = functools.partial(torch.nn.Linear, 64, 10)
    apps = {
        "fedld": lf.fedld_client_app(
            fedld_data, functools.partial(MLP, 64, [16], 10), lam=LAM, opt=LocalSGD(batch_size=10_000)
        ),
        "rffl": lf.rffl_client_app(rffl_data, rffl_model, gamma=GAMMA, lr=0.1, lr_decay=0.977, batch_size=32),
    }
    both = ClientApp()  # one simulation (one Ray start) for both

    @both.train()
    def train(msg: Message, context: Context) -> Message:
        return apps[msg.content["config"]["labkit-method"]](msg, context)

    @both.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return apps[msg.content["config"]["labkit-method"]](msg, context)

    fedld_init, fedld_final = labkit_fedld_reference()
    rffl_init, reps, accs, last_u = labkit_rffl_reference(rffl_data, rffl_model)
    out, server = {}, ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        fl = lf.FedLDStrategy(lam=LAM, fraction_evaluate=0.0, min_available_nodes=4, min_train_nodes=4)
        out["fedld"] = fl.start(
            grid=grid,
            initial_arrays=ArrayRecord(fedld_init),
            num_rounds=2,
            train_config=ConfigRecord({"labkit-method": "fedld"}),
        )
        rf = lf.RFFLStrategy(min_available_nodes=4)
        out["rffl"] = rf.start(
            grid=grid,
            initial_arrays=ArrayRecord(rffl_init),
            num_rounds=2,
            train_config=ConfigRecord({"labkit-method": "rffl"}),
            evaluate_config=ConfigRecord({"labkit-method": "rffl"}),
        )
        out["rffl_strategy"] = rf

    run_simulation(
        server_app=server,
        client_app=both,
        num_supernodes=4,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
    )
    assert states_close(out["fedld"].arrays.to_torch_state_dict(), fedld_final, atol=1e-6)
    assert not states_close(fedld_final, fedld_init, atol=1e-3)
    for rnd, expected in enumerate(reps, start=1):
        assert out["rffl"].train_metrics_clientapp[rnd]["reputation"] == pytest.approx(expected, abs=1e-6)
    assert states_close(out["rffl"].arrays.to_torch_state_dict(), last_u, atol=1e-6)
    strategy = out["rffl_strategy"]
    got = [strategy.accuracy.get(n) if a is not None else None for n, a in zip(strategy.nodes, accs)]
    assert got == pytest.approx(accs, abs=1e-6) and None not in accs[:3]
    assert np.isfinite(reps).all()
