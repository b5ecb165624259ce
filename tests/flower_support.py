"""Process plumbing for tests/test_flower.py: Flower's runtimes in child processes that cannot outlive a test.

Every process a test starts here runs in a session (and process group) of its own and carries a tag in its
environment (``LABKIT_FLOWER_TEST_TAG=<random hex>``) that whatever it starts inherits: Ray's gcs_server,
raylet and workers, Flower's SuperExec, ServerApp and ClientApp processes, also those that start a session of
their own (the SuperLink starts its SuperExec detached). :meth:`ProcessSet.close` signals the sessions'
process groups and every tagged process, SIGTERM and then SIGKILL, until none is left.

* :func:`simulate_in_child`: Flower's simulation runtime (Ray) in a child process with hard timeouts; a Ray
  that fails to start is retried once, then the error carries Ray's message.
* :func:`run_on_local_deployment`: a SuperLink and SuperNodes on 127.0.0.1 (insecure, free ports), then
  ``flwr run tests/flower_app <connection>``, with ``FLWR_HOME`` in the test's temporary folder.

Both run the app in ``tests/flower_app`` (FedLD, then RFFL, via labkit.flower) and return what its ServerApp
wrote: final arrays and metrics as JSON data. Run as a script, this file is the simulation's child process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TAG_VAR = "LABKIT_FLOWER_TEST_TAG"
HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "flower_app"
BIN = Path(sys.executable).parent  # flwr, flower-superlink, ... of the environment running the tests
RAY_START_FAILED = 75  # exit status of the simulation child when ray.init raised
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


# ---------------------------------------------------------------- processes, as /proc shows them


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    name: str

    def cmdline(self) -> str:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return ""

    def __str__(self) -> str:
        where = f"state {self.state}, pgid {self.pgid}, sid {self.sid}"
        return f"pid {self.pid} {self.name!r} ({where}) {self.cmdline()[:150]}"


def proc(pid: int) -> Proc | None:
    """The process ``pid``, or None if there is none (any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
    return Proc(pid, int(rest[1]), int(rest[2]), int(rest[3]), rest[0], name)


def processes() -> list[Proc]:
    return [p for d in os.listdir("/proc") if d.isdigit() and (p := proc(int(d))) is not None]


def _tagged(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours
        return False


def living(tag: str, sessions=()) -> list[Proc]:
    """Processes (not zombies) in one of ``sessions`` or with ``tag`` in their environment, except this one."""
    entry = f"{TAG_VAR}={tag}".encode()
    return [
        p
        for p in processes()
        if p.pid != os.getpid() and p.state not in "ZX" and (p.sid in sessions or _tagged(p.pid, entry))
    ]


def is_alive(pid: int) -> bool:
    p = proc(pid)
    return p is not None and p.state not in "ZX"


def group_exists(pgid: int) -> bool:
    """``os.killpg(pgid, 0)``: False once no process is left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def listening_addresses(pids) -> set[str]:
    """The local addresses ("ip:port") of the TCP sockets that the processes ``pids`` listen on."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                    host, port = cols[1].split(":")
                    out.add(f"{_ip(host, v6)}:{int(port, 16)}")
    return out


def _ip(hexaddr: str, v6: bool) -> str:
    import ipaddress

    words = [bytes.fromhex(hexaddr[i : i + 8])[::-1] for i in range(0, len(hexaddr), 8)]  # host-order words
    addr = ipaddress.ip_address(b"".join(words)) if v6 else ipaddress.ip_address(words[0])
    if v6 and addr.ipv4_mapped is not None:
        return f"::ffff:{addr.ipv4_mapped}"
    return str(addr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every child: this Python's scripts first on PATH, no update check, telemetry or
    usage stats (nothing leaves the machine), one thread per process (the clients are small)."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",  # silences a Ray FutureWarning
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        # Ray: no workers started ahead of need, so that its agents (Python processes that the raylet gives 15 s
        # to start, a limit that no setting changes in Ray 2.55) compete with fewer processes for the CPUs
        RAY_enable_worker_prestart="0",
        RAY_prestart_worker_first_driver="0",
    )
    env.update(extra)
    return env


class ProcessSet:
    """Child processes, each in a session of its own, all tagged; ``close()`` (or leaving ``with``) ends them
    and everything they started. Output goes to ``<workdir>/<name>.log`` (files, not pipes: a leftover process
    holding a pipe open is what kept a test run from ending)."""

    def __init__(self, workdir: Path, **env: str):
        self.workdir, self.tag = Path(workdir), uuid.uuid4().hex
        self.env = child_env(**env, **{TAG_VAR: self.tag})
        self.children: dict[str, subprocess.Popen] = {}
        self.seen: dict[int, Proc] = {}  # every process noticed by snapshot()
        self.ended: list[Proc] = []  # what close() found alive and ended
        self.leftover: list[Proc] = []  # what close() could not end
        self.cleanup_s: float | None = None

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sessions(self) -> set[int]:
        return {p.pid for p in self.children.values()}  # start_new_session: sid = pgid = pid

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        with open(self.workdir / f"{name}.log", "wb") as log:
            child = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **env},
                cwd=self.workdir,
                start_new_session=True,
            )
        self.children[name] = child
        return child

    def alive(self) -> list[Proc]:
        return living(self.tag, self.sessions)

    def snapshot(self) -> list[Proc]:
        now = self.alive()
        self.seen.update((p.pid, p) for p in now)
        return now

    def log(self, name: str, lines: int = 60) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"---- {name}.log (last {lines} lines)\n{self.log(name, lines)}" for name in self.children)

    def _signal(self, sig: int) -> None:
        for sid in self.sessions:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, sig)
        for p in self.alive():  # tagged processes in other sessions or groups
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p.pid, sig)

    def close(self, grace: float = 2.0, timeout: float = 15.0) -> list[Proc]:
        """SIGTERM to all, SIGKILL to what is left after ``grace`` seconds; returns what still lives after
        ``timeout`` seconds (nothing, normally), also kept in ``leftover``."""
        start = time.monotonic()
        self.ended = self.snapshot()
        self._signal(signal.SIGTERM)
        while self.alive() and time.monotonic() - start < grace:
            time.sleep(0.1)
        while self.alive() and time.monotonic() - start < timeout:
            self._signal(signal.SIGKILL)
            time.sleep(0.1)
        for child in self.children.values():  # reap our direct children
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, timeout - (time.monotonic() - start)))
        self.leftover, self.cleanup_s = self.alive(), time.monotonic() - start
        return self.leftover


def wait_until(condition: Callable[[], bool], timeout: float, *, must_live=(), every=None, poll=0.2) -> bool:
    """True once ``condition()`` holds; False after ``timeout`` seconds. Raises if a process in ``must_live``
    (name → Popen) exits first. ``every()`` is called on each poll."""
    end = time.monotonic() + timeout
    while True:
        if every is not None:
            every()
        if condition():
            return True
        for name, child in dict(must_live).items():
            if child.poll() is not None:
                raise ChildExited(name, child.returncode)
        if time.monotonic() > end:
            return False
        time.sleep(poll)


class ChildExited(RuntimeError):
    def __init__(self, name: str, rc: int):
        super().__init__(f"{name} exited with status {rc}")
        self.name, self.rc = name, rc


# ---------------------------------------------------------------- Flower's simulation runtime, in a child


class SimulationError(RuntimeError):
    """The simulation failed, timed out, or Ray did not start (twice). ``attempts``: what each try saw."""

    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts


@dataclass
class Attempt:
    rc: int | None  # None: killed at a timeout
    ray_started: bool
    pgid: int
    seen: list[Proc] = field(default_factory=list)
    ended: list[Proc] = field(default_factory=list)
    leftover: list[Proc] = field(default_factory=list)
    cleanup_s: float = 0.0
    seconds: float = 0.0
    log: str = ""


@dataclass
class SimulationRun:
    result: dict  # what the ServerApp wrote
    attempts: list[Attempt]  # the last one gave the result


def ray_failure_lines(ray_temp: Path, keep: Path) -> str:
    """Copy Ray's session logs to ``keep``; return their fatal and error lines (at most 20), if any."""
    logs = ray_temp / "session_latest" / "logs"
    if not logs.is_dir():
        return ""
    shutil.copytree(logs, keep, symlinks=True, dirs_exist_ok=True, ignore_dangling_symlinks=True)
    found: dict[str, str] = {}  # message → first file that has it (raylet.out and .err repeat each other)
    for path in sorted(keep.glob("*")):
        if path.is_file() and path.suffix in {".out", ".err", ".log"}:
            for line in path.read_text(errors="replace").splitlines():
                if "Check failed" in line:  # the raylet's fatal check: keep its time and its own words
                    line = line[: line.find("]") + 1] + " " + line[line.index("Check failed") :]
                elif not (" C " in line[:40] or "Timed out" in line or "Error" in line[:80]):
                    continue
                found.setdefault(line[:600], path.name)
    if not found:
        return ""
    lines = [f"{name}: {line}" for line, name in list(found.items())[:20]]
    return f"\n---- from Ray's logs (all in {keep}):\n" + "\n".join(lines) + "\n"


def simulation_command(out: Path, status: Path, ray_temp: Path, mode: str = "run") -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "simulate", str(out), str(status), str(ray_temp), mode]


def simulate_in_child(
    workdir: Path, *, start_timeout: float = 90.0, run_timeout: float = 150.0, attempts: int = 2, mode: str = "run"
) -> SimulationRun:
    """Run tests/flower_app's strategies in Flower's simulation runtime in a child process; its results.

    ``start_timeout``: seconds for Python, Flower and Ray to start; ``run_timeout``: seconds, from then, for the
    simulation. A child whose Ray did not start (ray.init raised, or ``start_timeout`` passed) is retried, up to
    ``attempts`` times in all. ``mode`` other than "run" makes the child fail on purpose (see ``_child``)."""
    tries: list[Attempt] = []
    for attempt in range(1, attempts + 1):
        name = f"simulation-{attempt}"
        out, status = workdir / f"{name}.json", workdir / f"{name}.status"
        ray_temp = Path(tempfile.mkdtemp(prefix="lkray-"))  # short: Ray's socket paths must stay < 108 bytes
        t0 = time.monotonic()
        try:
            with ProcessSet(workdir) as ps:
                child = ps.start(name, simulation_command(out, status, ray_temp, mode))
                live = {name: child}
                with contextlib.suppress(ChildExited):
                    if wait_until(status.exists, start_timeout, must_live=live, every=ps.snapshot):
                        if wait_until(out.exists, run_timeout, must_live=live, every=ps.snapshot):
                            wait_until(lambda: False, 10, must_live=live)  # time to shut Ray down and exit
                rc = child.poll()
            if rc != 0 and not out.exists():  # Ray's own logs say why (the raylet's "Check failed", ...)
                ray_log = ray_failure_lines(ray_temp, workdir / f"{name}-ray-logs")
                with open(workdir / f"{name}.log", "a") as log:
                    log.write(ray_log)
        finally:
            shutil.rmtree(ray_temp, ignore_errors=True)
        tries.append(
            Attempt(
                rc,
                status.exists(),
                child.pid,
                list(ps.seen.values()),
                ps.ended,
                ps.leftover,
                ps.cleanup_s or 0.0,
                time.monotonic() - t0,
                ps.log(name),
            )
        )
        if ps.leftover:
            raise SimulationError(
                "processes outlived the simulation child:\n" + "\n".join(map(str, ps.leftover)), tries
            )
        if out.exists():  # the ServerApp is done (and the child exited, or was ended 10 s later)
            return SimulationRun(json.loads(out.read_text()), tries)
        if not status.exists() and (rc is None or rc == RAY_START_FAILED):
            continue  # Ray did not start: once more
        why = f"exit status {rc}" if rc is not None else f"no result within {run_timeout:.0f} s; killed"
        raise SimulationError(f"Flower's simulation failed ({why}). Its output:\n{ps.log(name)}", tries)
    ends = [f"killed after {start_timeout:.0f} s" if a.rc is None else f"exit status {a.rc}" for a in tries]
    logs = [f"---- attempt {i} ({end}):\n{a.log}" for i, (end, a) in enumerate(zip(ends, tries), start=1)]
    raise SimulationError(f"Ray did not start, {attempts} times:\n" + "\n".join(logs), tries)


def _child(out: Path, status: Path, ray_temp: Path, mode: str) -> None:
    """The simulation child: start Ray (our settings), say so in ``status``, run the simulation. Modes that
    fail on purpose: "ray-init-error" (ray.init gets contradictory arguments and raises), "hang" (Ray started,
    then nothing happens), "die" (Ray started, then this process is SIGKILLed: no ray.shutdown)."""
    sys.path.insert(0, str(APP_DIR))
    # Ray's workers inherit the environment: they unpickle the ClientApp, which lives in the app's package
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APP_DIR), os.environ.get("PYTHONPATH")]))
    import ray

    settings = {
        "num_cpus": 2,
        "include_dashboard": False,
        "_temp_dir": str(ray_temp),
        "_node_ip_address": "127.0.0.1",
        "object_store_memory": 100 * 1024**2,
        "logging_level": "warning",
    }
    if mode == "ray-init-error":
        settings["resources"] = {"CPU": 1}  # Ray refuses: CPU is set with num_cpus
    try:
        ray.init(**settings)  # Flower's backend then uses this Ray instead of starting its own
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(RAY_START_FAILED)
    status.write_text("ray started\n")
    if mode == "hang":
        time.sleep(3600)
    if mode == "die":
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)

    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation
    from labkit_flower_app import task
    from labkit_flower_app.client_app import app as client_app

    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:
        task.write_result(out, task.run_strategies(grid, num_rounds=2))

    run_simulation(
        server_app=server,
        client_app=client_app,
        num_supernodes=task.NUM_NODES,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    sys.exit(0 if out.exists() else 1)


# ---------------------------------------------------------------- a local Flower deployment


@dataclass
class DeploymentRun:
    result: dict
    commands: dict[str, list[str]]
    listening: set[str]  # addresses the deployment's processes listened on
    seen: list[Proc]
    leftover: list[Proc]
    seconds: dict[str, float]


def run_on_local_deployment(workdir: Path, num_nodes: int, timeout: float = 300.0) -> DeploymentRun:
    """A SuperLink and ``num_nodes`` SuperNodes (partition-id 0 … n-1) on 127.0.0.1, then ``flwr run`` of
    tests/flower_app for 2 rounds; the result its ServerApp wrote. Everything is stopped before this returns."""
    workdir = Path(workdir)
    home = workdir / "flwr-home"
    home.mkdir()
    ports = set()
    while len(ports) < num_nodes + 1:
        ports.add(free_port())
    link_port, *node_ports = sorted(ports)
    connection, out = "labkit-local", workdir / "result.json"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{connection}"\n\n'
        f'[superlink.{connection}]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    link = f"127.0.0.1:{link_port}"
    commands = {
        "superlink": [
            "flower-superlink",
            "--insecure",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(link_port),
            "--disable-runtime-dependency-installation",  # else each run's app is set up with `uv sync`
        ],
        **{
            f"supernode-{i}": [
                "flower-supernode",
                "--insecure",
                "--superlink",
                link,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--isolation",
                "subprocess",
                "--node-config",
                f"partition-id={i} num-partitions={num_nodes}",
            ]
            for i, port in enumerate(node_ports)
        },
        "flwr-run": ["flwr", "run", str(APP_DIR), connection, "--run-config", f'out-file="{out}"', "--stream"],
    }
    seconds, listening = {}, set()
    t0 = time.monotonic()
    ps = ProcessSet(workdir, FLWR_HOME=str(home))
    try:

        def watch():
            listening.update(listening_addresses(p.pid for p in ps.snapshot()))

        servers = {"superlink": ps.start("superlink", [BIN / commands["superlink"][0], *commands["superlink"][1:]])}
        if not wait_until(lambda: _http_ok(f"http://{link}/health"), 60, must_live=servers, every=watch):
            raise RuntimeError("the SuperLink did not answer on /health within 60 s")
        seconds["superlink ready"] = time.monotonic() - t0
        for name in commands:
            if name.startswith("supernode-"):
                servers[name] = ps.start(name, [BIN / commands[name][0], *commands[name][1:]])
        run = ps.start("flwr-run", [BIN / "flwr", *commands["flwr-run"][1:]])
        run_ended: list[float] = []

        def done() -> bool:  # the result is there; or `flwr run` ended without one
            if out.exists():
                return True
            if run.poll() is not None:
                run_ended.append(time.monotonic())
                if run.returncode != 0 or run_ended[-1] - run_ended[0] > 10:
                    raise RuntimeError(f"`flwr run` exited with status {run.returncode} and no result")
            return False

        if not wait_until(done, timeout, must_live=servers, every=watch, poll=0.5):
            raise RuntimeError(f"no result from the ServerApp within {timeout:.0f} s")
        seconds["result"] = time.monotonic() - t0
        result = json.loads(out.read_text())
    except (RuntimeError, OSError) as err:
        ps.close()
        raise RuntimeError(f"the local Flower deployment failed: {err}\n{ps.logs()}") from err
    finally:
        ps.close()
        seconds["stopped"] = time.monotonic() - t0
    return DeploymentRun(result, commands, listening, list(ps.seen.values()), ps.leftover, seconds)


def load_task():
    """tests/flower_app's labkit_flower_app.task: the clients, models and settings the apps use."""
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    from labkit_flower_app import task

    return task


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the child process that runs Flower's simulation for a test")
    parser.add_argument("command", choices=["simulate"])
    parser.add_argument("out", type=Path)
    parser.add_argument("status", type=Path)
    parser.add_argument("ray_temp", type=Path)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "ray-init-error", "hang", "die"])
    args = parser.parse_args()
    _child(args.out, args.status, args.ray_temp, args.mode)
