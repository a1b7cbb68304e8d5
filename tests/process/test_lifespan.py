"""The ASGI lifespan protocol in a real worker: startup, state, shutdown, failures."""

from __future__ import annotations

import signal

import httpx
import pytest
from helpers import wait_until

EXIT_BOOT = 3


def assert_no_asgid_traceback(output: str) -> None:
    assert "asgid/worker" not in output
    assert "asgid/cli" not in output
    assert "asgid/supervisor" not in output


def test_startup_failed_message_exits_3(start_server):
    server = start_server("lifespans:startup_failed", wait=False)
    assert server.wait(20) == EXIT_BOOT
    output = server.output()
    assert "database unreachable" in output
    assert "Traceback" not in output


def test_startup_exception_exits_3(start_server):
    server = start_server("lifespans:startup_raises", "--lifespan", "on", wait=False)
    assert server.wait(20) == EXIT_BOOT
    output = server.output()
    assert "cannot start: settings missing" in output
    # The app's own frames are shown, asgid's are not.
    assert 'lifespans.py", line' in output
    assert_no_asgid_traceback(output)


def test_startup_exception_with_lifespan_auto_is_served(start_server):
    # "auto" takes an app that raises before answering for one without lifespan.
    server = start_server("lifespans:startup_raises", "--lifespan", "auto")
    assert httpx.get(server.url + "/").text == "hello"
    assert "cannot start: settings missing" in server.output()


def test_lifespan_on_requires_support(start_server):
    server = start_server("lifespans:no_lifespan", "--lifespan", "on", wait=False)
    assert server.wait(20) == EXIT_BOOT
    assert "unsupported scope lifespan" in server.output()
    assert_no_asgid_traceback(server.output())


def test_lifespan_on_app_that_returns(start_server):
    server = start_server("lifespans:returns_early", "--lifespan", "on", wait=False)
    assert server.wait(20) == EXIT_BOOT
    assert "returned" in server.output()


@pytest.mark.parametrize("app", ["no_lifespan", "returns_early"])
def test_lifespan_auto_tolerates_apps_without_it(start_server, app):
    server = start_server(f"lifespans:{app}", "--lifespan", "auto")
    assert httpx.get(server.url + "/").text == "hello"
    assert "Traceback" not in server.output()
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0


def test_lifespan_off_never_calls_the_app(start_server):
    server = start_server("lifespans:tracked", "--lifespan", "off")
    assert httpx.get(server.url + "/").text == "db=None counter=None"
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert "LIFESPAN" not in server.output()


def test_lifespan_off_with_an_app_that_would_fail(start_server):
    server = start_server("lifespans:startup_raises", "--lifespan", "off")
    assert httpx.get(server.url + "/").text == "hello"


def test_state_reaches_requests(start_server):
    server = start_server("lifespans:tracked")
    with httpx.Client() as client:
        assert client.get(server.url + "/").text == "db=connected counter=[1]"
        # The state dict is copied per request, its values are shared.
        assert client.get(server.url + "/").text == "db=connected counter=[2]"


def test_shutdown_runs_on_sigterm(start_server, tmp_path):
    marker = tmp_path / "shutdown"
    server = start_server("lifespans:tracked", env={"SHUTDOWN_MARKER": str(marker)})
    assert httpx.get(server.url + "/").status_code == 200
    assert not marker.exists()
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert marker.read_text() == "clean shutdown"
    output = server.output()
    events = [line for line in output.splitlines() if line.startswith("LIFESPAN")]
    assert events == [
        "LIFESPAN scope",
        "LIFESPAN lifespan.startup",
        "LIFESPAN lifespan.shutdown",
    ]


def test_shutdown_runs_on_sigint(start_server, tmp_path):
    marker = tmp_path / "shutdown"
    server = start_server("lifespans:tracked", env={"SHUTDOWN_MARKER": str(marker)})
    assert httpx.get(server.url + "/").status_code == 200  # startup has completed
    server.signal(signal.SIGINT)
    assert server.wait(15) == 0
    assert marker.read_text() == "clean shutdown"


def test_shutdown_waits_for_in_flight_requests(start_server, tmp_path):
    marker = tmp_path / "shutdown"
    server = start_server("httpapp:app", env={"SHUTDOWN_MARKER": str(marker)})
    import threading

    result: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: result.append(httpx.get(server.url + "/sleep?s=1", timeout=10))
    )
    thread.start()
    try:
        wait_until(lambda: "CALL GET /sleep" in server.output(), timeout=5)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    finally:
        thread.join(10)
    assert result[0].text == "slept"
    assert result[0].headers["connection"] == "close"  # draining: no keep-alive
    assert marker.read_text() == "shutdown complete"


def test_shutdown_failed_is_logged(start_server):
    server = start_server("lifespans:shutdown_failed")
    assert httpx.get(server.url + "/").status_code == 200  # startup has completed
    server.signal(signal.SIGTERM)
    server.wait(15)
    assert "could not flush the queue" in server.output()


def test_nothing_is_served_before_startup_completes(start_server):
    server = start_server("lifespans:slow_startup")
    # wait_listening() may connect before the app is ready; a request must still
    # be answered only after startup, never refused or failed.
    assert httpx.get(server.url + "/", timeout=10).text == "hello"
    assert "LIFESPAN startup done" in server.output()
