"""Binder (``binder/``): the image mybinder.org builds must really build, stay lean and do what it says.

mybinder.org gives 2 GB of memory and no GPU. ``binder/environment.yml`` installs torch's CPU build from PyTorch's
own wheel index (a plain pin from PyPI brings the CUDA build, several GB) and only what the notebooks and the Panel
app import, each pinned as in ``pyproject.toml``; ``postBuild`` installs labkit, puts the Panel app behind
jupyter-server-proxy, makes JupyterLab open on ``notebooks/index.ipynb`` and trusts the committed notebooks;
``start`` sizes the thread pools by the container's CPU quota.

The fast tests read those files. The slow one builds what Binder builds, here: a FRESH virtual environment from
exactly binder's pip list (torch's ``+cpu`` wheel comes from this machine's wheel folder or PyPI, as PyTorch's index
is out of reach), a copy of the repository, the real ``postBuild``, then JupyterLab started through ``start`` under a
JupyterHub-like base URL. It runs one notebook with papermill while the app answers through the proxy, measures the
peak memory of it all, then stops everything and deletes the environment.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SERVER = "labkit-app"  # the jupyter-server-proxy server name: the app answers at <base_url>labkit-app/app
INDEX = "notebooks/index.ipynb"
NOTEBOOK = "08_rpo"  # the one the slow test runs: the project's model notebook, about 10 s
PEAK_LIMIT = 1.5 * 2**30  # mybinder.org's 2 GB, less room for JupyterLab and the browser's own share

# Binder-only packages (not in pyproject.toml) and why: nothing else may appear in binder's list unpinned by pyproject.
BINDER_ONLY = {
    "jupyter-server-proxy": "serves the Panel app behind JupyterLab on Binder",
    "notebook": "replaces repo2docker's Notebook 7.4 (which requires jupyterlab<4.5) by the release for 4.6.6",
}
# Packages of pyproject's test-only `dev` extra that Binder still needs, and for what.
DEV_KEPT = {"peft": "notebook 22's standard-preset cell: PEFT's prefix tuning on a tiny GPT-2"}
# Import names that are not their distribution's name, or that come with a listed distribution.
PROVIDED_BY = {
    "sklearn": "scikit-learn",
    "threadpoolctl": "scikit-learn",
    "IPython": "ipykernel",
    "jupyter_client": "ipykernel",
    "jupyter_server": "jupyterlab",
    "yaml": "jupyterlab",
    "bokeh": "panel",
}
# What labkit imports only inside optional features that Binder leaves out (no notebook or app code imports them).
LEFT_OUT = {
    "dask": "`labkit sweep` (a Dask cluster)",
    "flwr": "labkit.flower (a real Flower deployment)",
    "gymnasium": "labkit.substrates.rl / gridworld's gymnasium face (bring-your-own environments)",
    "minari": "labkit.substrates.rl (Minari data sets)",
    "mujoco": "labkit.substrates.rl (MuJoCo environments)",
    "kaleido": "labkit.viz.static_figures (`make notebooks` commits each figure as an image)",
    "PIL": "labkit.viz.static_figures (the committed images' palette)",
}


# ------------------------------------------------------------------------------------------------ binder's files


def binder_pip_lines() -> list[str]:
    """The pip section of binder/environment.yml, as the lines of a requirements file."""
    import yaml

    env = yaml.safe_load((BINDER / "environment.yml").read_text())
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "binder/environment.yml needs exactly one pip section"
    return [str(line).strip() for line in sections[0]]


def binder_pins() -> dict[str, str]:
    """``{distribution: version}`` of every requirement in binder's pip list (option lines left out)."""
    pins = {}
    for line in binder_pip_lines():
        if line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][\w.\[\],-]*)==([\w.+!-]+)", line)
        assert m, f"binder/environment.yml: {line!r} is not pinned as name==version"
        pins[m[1]] = m[2]
    return pins


def pyproject_pins() -> tuple[dict[str, str], set[str]]:
    """``({distribution: version} over all of pyproject's dependencies and extras, names in the `dev` extra)``."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = meta["optional-dependencies"]
    reqs = meta["dependencies"] + [r for group in groups.values() for r in group]
    pins = dict(r.split("==") for r in reqs if "==" in r)
    dev = {r.split("==")[0] for r in groups.get("dev", []) if "==" in r}
    return pins, dev


def proxy_server() -> dict:
    return json.loads((BINDER / "jupyter-server-proxy.json").read_text())["ServerProxy"]["servers"][SERVER]


def third_party_imports(paths) -> dict[str, set[str]]:
    """``{top-level module: files}`` of every absolute import (at any depth) in ``paths`` outside the standard
    library and this repository."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("labkit", "widgets", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def distribution_of(module: str) -> str:
    return PROVIDED_BY.get(module, module.replace("_", "-"))


def test_postbuild_and_start_are_executable_bash_that_parses():
    for name in ("postBuild", "start"):
        script = BINDER / name
        assert script.read_text().startswith("#!/usr/bin/env bash\n"), f"binder/{name}: no bash shebang"
        assert os.access(script, os.X_OK), f"binder/{name} is not executable"
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"bash -n binder/{name}:\n{result.stderr}"
    assert (BINDER / "start").read_text().rstrip().endswith('exec "$@"'), "start must end by running its command"


def test_every_binder_package_is_pinned_as_in_pyproject():
    pins, dev = pyproject_pins()
    for name, version in binder_pins().items():
        if name in BINDER_ONLY:
            assert name not in pins, f"{name} is in pyproject now: drop it from BINDER_ONLY"
            continue
        assert name in pins, f"binder lists {name}, which pyproject.toml does not pin (or add it to BINDER_ONLY)"
        # torch's `+cpu` local label names the build, not another version
        expected = f"{pins[name]}+cpu" if name == "torch" else pins[name]
        assert version == expected, f"binder pins {name}=={version}, pyproject.toml {name}=={pins[name]}"
        assert name not in dev or name in DEV_KEPT, f"{name} is a test-only reference: Binder does not need it"


def test_torch_is_the_cpu_build_from_pytorchs_index():
    lines = binder_pip_lines()
    assert binder_pins()["torch"] == f"{pyproject_pins()[0]['torch']}+cpu"
    assert f"--extra-index-url={TORCH_CPU_INDEX}" in lines, "torch's CPU wheels come from PyTorch's own index"
    # PyPI stays the main index (PyTorch's serves only a few of the other packages)
    assert not any(line.startswith(("--index-url", "-i ")) for line in lines)


def test_binder_installs_what_the_notebooks_and_the_app_import_and_leaves_the_rest_out():
    binder = set(binder_pins())
    front = third_party_imports([*sorted((ROOT / "notebooks").glob("*.py")), *sorted((ROOT / "widgets").glob("*.py"))])
    everything = third_party_imports(sorted((ROOT / "labkit").rglob("*.py")))
    for module, files in sorted(front.items()):
        assert distribution_of(module) in binder, f"{sorted(files)} import {module}: add it to binder/environment.yml"
    for module, files in sorted(everything.items()):
        if distribution_of(module) in binder:
            continue
        assert module in LEFT_OUT, (
            f"{sorted(files)} import {module}, which Binder does not install: add it to binder/environment.yml, "
            "or to LEFT_OUT here with the optional feature it serves"
        )
        assert module not in front, f"{module} is left out of Binder but {sorted(front[module])} import it"
    left_out_installed = {distribution_of(m) for m in LEFT_OUT} & binder
    assert not left_out_installed, f"{left_out_installed} are listed as left out but binder installs them"


def test_proxy_config_serves_the_app_under_the_base_url():
    server = proxy_server()
    command = server["command"]
    assert command[:4] == ["python", "-m", "panel", "serve"], "postBuild swaps command[0] for the env's python"
    app = command[4]
    assert app == "widgets/app.py" and (ROOT / app).is_file(), "postBuild swaps this path for an absolute one"
    options = dict(zip(command[5::2], command[6::2]))
    assert options["--port"] == "{port}"
    assert options["--address"] == "127.0.0.1", "only the authenticated proxy reaches the app"
    # the app's URLs carry the whole proxied path, which the proxy passes on unchanged (absolute_url)
    assert options["--prefix"] == "{base_url}" + SERVER and server["absolute_url"] is True
    assert server["launcher_entry"]["path_info"] == f"{SERVER}/app"
    # the app's "open the notebook in JupyterLab" link points at this server's JupyterLab
    assert server["environment"] == {"LABKIT_LAB_URL": "{base_url}"}
    assert "LABKIT_LAB_URL" in (ROOT / "widgets" / "app.py").read_text()
    post_build = (BINDER / "postBuild").read_text()
    assert "binder/jupyter-server-proxy.json" in post_build and "jupyter_server_config.json" in post_build


def test_jupyterlab_opens_on_the_index_notebook():
    workspace = json.loads((BINDER / "workspace.json").read_text())
    assert workspace["metadata"]["id"] == "default", "the workspace JupyterLab opens at /lab"
    assert (ROOT / INDEX).is_file()
    main = workspace["data"]["layout-restorer:data"]["main"]
    assert main["current"] == f"notebook:{INDEX}" and main["dock"]["widgets"] == [f"notebook:{INDEX}"]
    assert workspace["data"][f"notebook:{INDEX}"]["data"] == {"path": INDEX, "factory": "Notebook"}
    assert "jupyter lab workspaces import binder/workspace.json" in (BINDER / "postBuild").read_text()


@pytest.mark.parametrize(
    ("cpu_max", "preset", "expected"),
    [
        ("150000 100000\n", None, lambda cores: min(2, cores)),  # 1.5 CPUs of quota: 2 threads
        ("50000 100000\n", None, lambda cores: 1),  # half a CPU: at least 1
        ("max 100000\n", None, lambda cores: cores),  # no quota: every core this process may use (nproc)
        (None, None, lambda cores: cores),  # no cgroup v2 file
        ("150000 100000\n", "7", lambda cores: 7),  # a value already set is kept
    ],
)
def test_start_sizes_thread_pools_by_the_cpu_quota_then_runs_its_command(tmp_path, cpu_max, preset, expected):
    quota = tmp_path / "cpu.max"
    if cpu_max is not None:
        quota.write_text(cpu_max)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["LABKIT_CPU_MAX_FILE"] = str(quota)
    if preset:
        env["OMP_NUM_THREADS"] = preset
    probe = 'echo "$OMP_NUM_THREADS $MKL_NUM_THREADS $OPENBLAS_NUM_THREADS $1"; exit 3'
    result = subprocess.run(
        ["bash", str(BINDER / "start"), "sh", "-c", probe, "sh", "arg"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 3, result.stderr  # the command's own exit status: start exec'ed it
    threads = str(expected(len(os.sched_getaffinity(0))))
    assert result.stdout.split() == [threads] * 3 + ["arg"]
    assert result.stderr == ""


# ------------------------------------------------------------------------- the slow test: what Binder builds


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` to the end; a failure shows the tail of its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# run in Binder's environment after postBuild: which notebooks are untrusted, which modules that PROVIDED_BY says
# come with binder's packages are missing, which labkit/widgets modules fail to import, and JupyterLab's workspace
IMAGE_CHECK = f"""
import glob, importlib, importlib.util, json, pkgutil, subprocess
import nbformat
from nbformat.sign import NotebookNotary
import labkit, widgets

notary = NotebookNotary()
untrusted = [p for p in sorted(glob.glob("notebooks/*.ipynb")) if not notary.check_signature(nbformat.read(p, 4))]
missing = [m for m in {sorted(PROVIDED_BY)!r} if importlib.util.find_spec(m) is None]
broken = {{}}
for package in (labkit, widgets):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(module.name)
        except Exception as err:
            broken[module.name] = repr(err)
workspace = subprocess.run(["jupyter", "lab", "workspaces", "export"], capture_output=True, text=True).stdout
print(json.dumps(dict(untrusted=untrusted, missing=missing, broken=broken, workspace=workspace)))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 60.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""  # not listening yet


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session`` and everything in its session."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


class PeakMemory:
    """Samples, every ``every`` seconds in a thread, the memory of some process trees summed over their processes:
    ``rss`` (resident set: shared libraries such as torch's count once per process, so an upper bound) and ``pss``
    (proportional set: shared pages split between their users, close to what the container's cgroup charges)."""

    def __init__(self, roots: list[int], every: float = 0.25):
        self.roots, self.every = roots, every
        self.rss = self.pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, int]:
        import psutil

        rss = pss = 0
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        return rss, pss

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = self._sample()
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def binder_image(tmp_path_factory):
    """A fresh venv from exactly binder's pip list, a copy of the repository, and postBuild run in it. Yields
    ``(repo, venv, env, seconds to build the venv)``; deletes them all at the end."""
    base = tmp_path_factory.mktemp("binder")
    venv, repo, home = base / "venv", base / "repo", base / "home"
    home.mkdir()
    try:
        # the repository as a clone would have it: tracked files plus new ones git does not ignore
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        for name in filter(None, files):
            src = ROOT / os.fsdecode(name)
            if src.is_file():
                (repo / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, repo / src.relative_to(ROOT))
        requirements = base / "requirements.txt"
        # PyTorch's index is out of reach here; the same `torch==...+cpu` pin resolves from this machine's wheels
        lines = [line for line in binder_pip_lines() if not line.startswith("--extra-index-url")]
        requirements.write_text("\n".join(lines) + "\n")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        _run([*pip, f"torch=={binder_pins()['torch']}"])
        _run([*pip, "-r", str(requirements)])
        build_s = time.monotonic() - started
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "JUPYTER", "PYTHON"))}
        env.update(
            HOME=str(home),
            PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
            LABKIT_STORE=str(base / "runs.sqlite"),
            LABKIT_CACHE=str(base / "cache"),
            LABKIT_PROGRESS="0",
        )
        _run(["bash", "binder/postBuild"], cwd=repo, env=env)
        yield repo, venv, env, build_s
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_fresh_binder_image_runs_a_notebook_and_serves_the_app_in_under_2_gb(binder_image):
    repo, venv, env, build_s = binder_image
    python = str(venv / "bin" / "python")

    # what postBuild installed: the proxy config with absolute paths, the workspace, trusted notebooks
    config = json.loads((venv / "etc" / "jupyter" / "jupyter_server_config.json").read_text())
    command = config["ServerProxy"]["servers"][SERVER]["command"]
    assert command[0] == python and Path(command[4]) == repo / "widgets" / "app.py"
    found = json.loads(_run([python, "-c", IMAGE_CHECK], cwd=repo, env=env).stdout.splitlines()[-1])
    assert found["untrusted"] == [], "postBuild trusts every committed notebook"
    assert found["missing"] == [], "what PROVIDED_BY says comes with binder's packages is not there"
    assert found["broken"] == {}, "every labkit and widgets module imports in Binder's environment"
    assert json.loads(found["workspace"])["data"][f"notebook:{INDEX}"]["data"]["path"] == INDEX

    # JupyterLab as Binder starts it: through `start`, under a JupyterHub-like base URL
    port, token, base = _free_port(), "binder-test", "/user/binder-test/"
    lab = subprocess.Popen(
        [
            "bash",
            "binder/start",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.base_url={base}",
            f"--IdentityProvider.token={token}",
        ],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = f"http://127.0.0.1:{port}{base}"
    try:
        deadline = time.monotonic() + 120
        while _get(f"{server}api/status?token={token}", timeout=5)[0] != 200:
            assert lab.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
            time.sleep(1)
        assert _get(f"{server}lab/tree/{INDEX}?token={token}")[0] == 200
        with PeakMemory([lab.pid]) as memory:
            # the app, started by the proxy on the first request (its own timeout: 120 s)
            status, page = _get(f"{server}{SERVER}/app?method=rpo&token={token}", timeout=180)
            assert status == 200 and "<title>labkit</title>" in page
            import psutil

            app = [p for p in psutil.Process(lab.pid).children(recursive=True) if "panel" in " ".join(p.cmdline())]
            assert len(app) == 1, "the proxy started one panel server"
            assert app[0].environ()["LABKIT_LAB_URL"] == base, "the app's notebook links point at this JupyterLab"
            # one notebook through papermill, next to the app
            out = repo / "runs" / f"{NOTEBOOK}.ipynb"
            out.parent.mkdir(exist_ok=True)
            started = time.monotonic()
            run = subprocess.Popen(
                [
                    str(venv / "bin" / "papermill"),
                    "--log-level",
                    "WARNING",
                    "--no-progress-bar",
                    "-k",
                    "python3",
                    "--cwd",
                    "notebooks",
                    f"notebooks/{NOTEBOOK}.ipynb",
                    str(out),
                ],
                cwd=repo,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            memory.roots.append(run.pid)
            try:
                log, _ = run.communicate(timeout=600)
            finally:
                _stop_group(run)
            notebook_s = time.monotonic() - started
            assert run.returncode == 0, log[-3000:]
        executed = json.loads(out.read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
        print(
            f"\nbinder: fresh venv {build_s:.0f} s, notebook {NOTEBOOK} {notebook_s:.0f} s; peak memory of JupyterLab "
            f"+ the app + papermill and its kernel: RSS {memory.rss / 2**20:.0f} MiB, PSS {memory.pss / 2**20:.0f} MiB "
            f"(load {os.getloadavg()[0]:.1f})"
        )
        assert memory.rss < PEAK_LIMIT, f"peak RSS {memory.rss / 2**20:.0f} MiB: too close to Binder's 2 GB"
    finally:
        _stop_group(lab)
