"""slowhttptest's slow headers, slow body and slow read attacks, through scripts/slowhttptest.

The script serves tests/apps/httpapp.py with 2-second slow-client timeouts,
runs each attack with 300 connections while a normal client keeps requesting,
and fails unless every normal request succeeds and the server closes every
slow connection in time (about 25 s in all). Where slowhttptest is not
installed the script says SKIP and so does this test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_suite_script


@pytest.mark.timeout(150)
def test_slow_clients_are_closed_and_service_stays_available(tmp_path: Path) -> None:
    output = run_suite_script("slowhttptest", "--report", str(tmp_path / "report"), timeout=120)
    assert "3 attacks in " in output, output
