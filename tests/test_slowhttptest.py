"""slowhttptest's slow headers, slow body and slow read attacks, through scripts/slowhttptest.

The script serves tests/apps/httpapp.py with 2-second slow-client timeouts,
runs each attack with 300 connections while a normal client keeps requesting,
and fails unless every normal request succeeds and the server closes every
slow connection in time (about 25 s in all). Where slowhttptest is not
installed the script says SKIP and so does this test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "slowhttptest"


@pytest.mark.timeout(150)
def test_slow_clients_are_closed_and_service_stays_available(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--report", str(tmp_path / "report")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script stops the server and tool it started
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=10)
        pytest.fail(f"scripts/slowhttptest did not finish in 120s:\n{output}")
    for line in output.splitlines():
        if line.startswith("slowhttptest: SKIP: "):
            pytest.skip(line.removeprefix("slowhttptest: SKIP: "))
    assert proc.returncode == 0, output  # 1: an attack failed; 2: the run itself broke
    assert "3 attacks in " in output, output
    print(output)  # one line per attack, shown with -rP or -s
