"""labkit.flower: FedLD and RFFL as Flower strategies (message API), checked against labkit's simulator.

Unit tests call the strategies with Flower's own types (Message, RecordDict, ArrayRecord, MetricRecord)
on client updates that labkit produced. The slow tests run the app in tests/flower_app (FedLD, then RFFL)
in Flower's simulation runtime (Ray) and on a local deployment (a SuperLink and SuperNodes on 127.0.0.1,
then `flwr run`) and compare both with labkit's simulator run on the same clients. Those runtimes run in
child processes, each in a session of its own, that the tests end, with all they started, also when a
run fails or hangs (tests/flower_support.py); and tests check that nothing is left behind.
"""

import functools
import os
import subprocess
import sys
from types import SimpleNamespace

import flower_support as fs
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


# ---------------------------------------------------------------- Flower's runtimes: simulation (Ray), local deployment


def labkit_fedld_reference(task, rounds=2):
    """labkit's simulator on the app's FedLD clients; full-batch local SGD (so the generator does not matter)."""
    clients = [task.fedld_data(i) for i in range(task.NUM_NODES)]
    torch.manual_seed(0)
    model = task.fedld_model()
    init = model_state(model)
    loss = functools.partial(fedld.margin_control_loss, lam=task.LAM)
    for r in range(rounds):
        rule = fedld.server_rule(fedld.Arm("fedld", "FedLD", lam=task.LAM, principal=True), r, task.K_PROPORTION)
        federated_round(model, clients, loss, task.FEDLD_OPT, rule, torch.Generator())
    return init, model_state(model)


def labkit_rffl_reference(task, rounds=2):
    """labkit's RFFL rounds on the same participants, generators and Γ; reputations and accuracies."""
    parts = [task.rffl_data(i)[0] for i in range(task.NUM_NODES)]
    x, y = task.rffl_data(0)[1:]
    torch.manual_seed(0)
    worker = task.rffl_model()
    init = model_state(worker)
    server = rffl.ReputationServer(torch.tensor([float(q.client.n) for q in parts]))
    states, gens, reps = [dict(init) for _ in parts], rffl.participant_generators(0, len(parts)), []
    train = task.RFFL_TRAIN
    for t in range(rounds):
        cfg = rffl.RoundConfig(t, 1, train["lr"], train["lr_decay"], train["batch_size"], task.GAMMA)
        step, _ = rffl.rffl_round(states, parts, server, worker, cfg, gens)
        reps.append(step.r.tolist())
    accs = [rffl.accuracy_of(worker, s, x, y) if server.active[i] else None for i, s in enumerate(states)]
    return init, reps, accs, step.u


def assert_like_labkit(result: dict, rounds=2):
    """What the app's ServerApp wrote equals labkit's simulator on the same clients (to 1e-6)."""
    task = fs.load_task()
    fedld_init, fedld_final = labkit_fedld_reference(task, rounds)
    arrays = {k: torch.tensor(v) for k, v in result["fedld"]["arrays"].items()}
    assert states_close(arrays, fedld_final, atol=1e-6)
    assert not states_close(fedld_final, fedld_init, atol=1e-3)
    _, reps, accs, last_u = labkit_rffl_reference(task, rounds)
    assert len(result["rffl"]["reputation"]) == rounds
    for got, expected in zip(result["rffl"]["reputation"], reps):
        assert got == pytest.approx(expected, abs=1e-6)
    assert states_close({k: torch.tensor(v) for k, v in result["rffl"]["arrays"].items()}, last_u, atol=1e-6)
    got = [a if e is not None else None for a, e in zip(result["rffl"]["accuracy"], accs)]
    assert got == pytest.approx(accs, abs=1e-6) and None not in accs[:3]
    assert np.isfinite(reps).all()


def assert_nothing_left(procs, pgids=()):
    """None of ``procs`` (seen while a run lasted) lives, nor any process in the groups ``pgids``."""
    assert [p for p in procs if fs.is_alive(p.pid)] == []
    # a killed orphan is a zombie until init reaps it, and a group with a zombie still exists: give it seconds
    assert fs.wait_until(lambda: not any(fs.group_exists(g) for g in pgids), 5)
    for pgid in pgids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)


def test_process_set_ends_detached_grandchildren(tmp_path):
    """The plumbing itself: a grandchild in a session of its own (as the SuperLink starts its SuperExec) is
    found by its tag and ended with the rest."""
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True); "
        "time.sleep(600)"
    )
    with fs.ProcessSet(tmp_path) as ps:
        child = ps.start("sleeper", [sys.executable, "-c", code])
        assert fs.wait_until(lambda: len(ps.snapshot()) == 2, 30)
    grandchild = next(p for p in ps.seen.values() if p.pid != child.pid)
    assert grandchild.sid != child.pid  # outside the child's session: only the tag finds it
    assert ps.leftover == [] and ps.cleanup_s < 5
    assert_nothing_left(ps.seen.values(), [child.pid, grandchild.pid])


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_flower_simulation_runs_both_strategies_like_labkit(tmp_path):
    run = fs.simulate_in_child(tmp_path)  # raises, with Ray's message, if Ray fails to start twice
    for attempt in run.attempts:
        assert attempt.leftover == []
        assert_nothing_left(attempt.seen, [attempt.pgid])
    assert_like_labkit(run.result)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_that_fails_to_start_is_retried_once_then_reported_with_rays_message(tmp_path):
    with pytest.raises(fs.SimulationError, match="Ray did not start, 2 times") as err:
        fs.simulate_in_child(tmp_path, mode="ray-init-error")
    assert "num_cpus" in str(err.value)  # Ray's own words, from ray.init's ValueError
    attempts = err.value.attempts
    assert [a.rc for a in attempts] == [fs.RAY_START_FAILED] * 2 and not any(a.ray_started for a in attempts)
    for a in attempts:
        assert a.leftover == []
        assert_nothing_left(a.seen, [a.pgid])


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "mode, error",
    [
        ("hang", "no result within 3 s; killed"),  # as a run that hangs: the hard timeout kills it
        ("die", "exit status -9"),  # the driver is SIGKILLed mid-run, no ray.shutdown: Ray's processes orphaned
    ],
)
def test_a_failed_simulation_leaves_no_process_behind(tmp_path, mode, error):
    with pytest.raises(fs.SimulationError, match=error) as err:
        fs.simulate_in_child(tmp_path, mode=mode, run_timeout=3)
    attempt = err.value.attempts[-1]  # Ray did start in this one (an attempt before may have failed to)
    assert attempt.ray_started
    assert {"gcs_server", "raylet"} <= {p.name for p in attempt.seen}  # there was something to clean up
    assert attempt.leftover == [] and attempt.cleanup_s < 10
    for a in err.value.attempts:
        assert_nothing_left(a.seen, [a.pgid])


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_local_flower_deployment_runs_both_strategies_like_labkit(tmp_path):
    """A SuperLink and four SuperNodes on 127.0.0.1, then `flwr run tests/flower_app`: the path a user takes when
    one machine is not enough. The ServerApp writes its final arrays and metrics to the run config's out-file."""
    run = fs.run_on_local_deployment(tmp_path, num_nodes=fs.load_task().NUM_NODES)
    assert run.leftover == []
    assert_nothing_left(run.seen)
    assert run.listening and {a.rsplit(":", 1)[0] for a in run.listening} <= fs.LOOPBACK
    assert_like_labkit(run.result)
