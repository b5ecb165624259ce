"""The leftover-process guard that keeps a test run from waiting on what a test started (tools/leftovers.py)."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from leftovers import marked_processes, stop_leftovers  # noqa: E402

VAR = "LABKIT_LEFTOVER_PROBE"


def test_a_detached_process_is_found_by_its_marker_and_killed():
    value = uuid.uuid4().hex
    # a process that detaches itself into its own session, as Ray's GCS server and raylets do
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], env={**os.environ, VAR: value}, start_new_session=True
    )
    try:
        assert proc.pid in marked_processes(value, VAR)
        start = time.monotonic()
        killed = stop_leftovers(value, grace_s=0.5, var=VAR)
        assert proc.pid in killed and "time.sleep(300)" in killed[proc.pid]
        assert proc.wait(timeout=5) == -9 and time.monotonic() - start < 5
        assert marked_processes(value, VAR) == {}
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_process_that_exits_within_the_grace_period_is_not_reported():
    value = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"], env={**os.environ, VAR: value})
    try:
        assert stop_leftovers(value, grace_s=10, var=VAR) == {}
    finally:
        proc.wait(timeout=10)


def test_the_cli_fails_when_it_had_to_stop_something():
    value = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], env={**os.environ, VAR: value})
    try:
        tool = Path(__file__).resolve().parents[1] / "tools" / "leftovers.py"
        out = subprocess.run([sys.executable, str(tool), value, VAR], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "leftover process stopped" in out.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def test_the_runners_own_multiprocessing_helper_is_not_a_leftover():
    """A fresh process (as pytest is) starts multiprocessing's resource tracker; it lives as long as its parent,
    so the guard run by that parent must not count it, while it still sees it."""
    value = uuid.uuid4().hex
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / 'tools')!r})\n"
        "import multiprocessing.resource_tracker as rt, leftovers\n"
        "import time\n"
        "rt.ensure_running()\n"
        # until the tracker has exec'd, /proc/<pid>/environ can read empty (seen once under load): look again
        "for _ in range(100):\n"
        f"    found = leftovers.marked_processes({value!r}, {VAR!r})\n"
        "    if found:\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        f"print(len(found), all('resource_tracker' in c for c in found.values()), "
        f"leftovers.stop_leftovers({value!r}, grace_s=0.2, var={VAR!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, VAR: value}, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "True", "{}"], out.stdout + out.stderr
