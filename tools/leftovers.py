"""Find and stop the processes a test run left behind, by an environment marker they all inherit.

Every process started under a test run (kernels, Ray's GCS server and raylets, Flower's SuperLink and
SuperNodes, ``panel serve``, Chromium, Dask workers) inherits the run's environment, whatever session or
process group it moves itself to. ``tests/conftest.py`` sets ``LABKIT_TEST_RUN=<id>`` when pytest starts and
calls :func:`stop_leftovers` when it ends; ``.ci/run`` does the same around ``make test`` with its own id,
after a whole-suite time limit. A leftover is reported by name and fails the run: a test that starts
something must stop it, also when it fails.

    python tools/leftovers.py VALUE [VAR]   # stop the processes whose environment has VAR=VALUE
                                            # (VAR defaults to LABKIT_TEST_RUN); exit 1 if it stopped any
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

MARKER = "LABKIT_TEST_RUN"


def marked_processes(value: str, var: str = MARKER) -> dict[int, str]:
    """``{pid: command line}`` of live processes (not this one, nor its parents) whose environment has
    ``var=value``."""
    needle = f"{var}={value}".encode()
    skip = {os.getpid(), os.getppid()}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            if needle not in env:
                continue
            if (entry / "stat").read_text().split(") ")[-1].startswith("Z"):
                continue  # a zombie is already dead; its parent just has not reaped it
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ProcessLookupError):
            continue
        found[int(entry.name)] = cmd[:200]
    return found


#: helpers of the standard library's multiprocessing that live exactly as long as the process that started them
#: (they exit when their parent does): started by the test runner itself, they are not a test's leftovers
OWN_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def own_helpers(found: dict[int, str]) -> set[int]:
    """The pids in ``found`` that are this process's own multiprocessing helpers (see :data:`OWN_HELPERS`)."""
    mine = set()
    for pid, cmd in found.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(") ", 1)[1].split()[1])
        if ppid == os.getpid() and any(h in cmd for h in OWN_HELPERS):
            mine.add(pid)
    return mine


def stop_leftovers(value: str, grace_s: float = 3.0, var: str = MARKER, exclude: set[int] | None = None) -> dict:
    """Wait up to ``grace_s`` for marked processes to exit by themselves, then SIGKILL what is left.
    Returns ``{pid: command line}`` of the processes that had to be killed."""
    exclude = exclude or set()
    deadline = time.monotonic() + grace_s
    left = {}
    while True:
        found = marked_processes(value, var)
        left = {p: c for p, c in found.items() if p not in exclude and p not in own_helpers(found)}
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    killed = stop_leftovers(argv[0], var=argv[1] if len(argv) == 2 else MARKER)
    for pid, cmd in killed.items():
        print(f"leftover process stopped: {pid} {cmd}", file=sys.stderr)
    return 1 if killed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
