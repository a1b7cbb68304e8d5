"""Helpers for tests that run ``python -m asgid`` (or a script) to completion.

``start_server`` in conftest covers servers that keep running; these cover
commands that are expected to exit (bad configuration, ``--check-config``) and
scripts that call ``asgid.run()``. Every process gets its own session, a
deadline, and is killed by process group if it overruns.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import Overran, run
from helpers import ROOT, base_env

CFG_APPS = ROOT / "tests" / "cfgapps"


def run_command(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 20.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; fail the test if it is still running at the deadline."""
    try:
        return run(argv, timeout=timeout, cwd=cwd, env=base_env(**(env or {})))
    except Overran as exc:
        raise AssertionError(f"{exc}\nstdout:\n{exc.stdout}\nstderr:\n{exc.stderr}") from None


def run_asgid(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 20.0,
) -> subprocess.CompletedProcess[str]:
    """``python -m asgid ARGS`` to completion."""
    return run_command([sys.executable, "-m", "asgid", *args], env=env, cwd=cwd, timeout=timeout)


def one_line(stderr: str) -> str:
    """The single line a configuration error prints; fails if there is more."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]
