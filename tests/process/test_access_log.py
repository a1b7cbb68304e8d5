"""The access log and the error log, black-box: what a line carries, in text and JSON.

Servers run ``python -m asgid`` (the ``start_server`` fixture) with one worker
serving ``tests/apps/basic.py``; log lines are read from the server's output
(or, for SIGUSR1, from the file a dictConfig names), polling with deadlines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers import ROOT, Server, StartServer, base_env, only_worker, wait_until

from asgid import _logging
from asgid.config import ACCESS_FIELDS as FIELDS

APP = "basic:app"


def worker_pid(server: Server) -> int:
    return int(only_worker(server.pid).pid)


def wait_for_lines(server: Server, pattern: str, count: int = 1) -> list[str]:
    """The output lines matching ``pattern`` (a regex), once there are ``count``."""

    def lines() -> list[str]:
        return [line for line in server.output().splitlines() if re.search(pattern, line)]

    try:
        wait_until(lambda: len(lines()) >= count, 10)
    except TimeoutError:
        raise AssertionError(f"{pattern!r} not logged:\n{server.output()}") from None
    return lines()


def json_lines(server: Server) -> list[dict[str, Any]]:
    records = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def test_the_default_line_has_client_request_status_size_and_duration(
    start_server: StartServer,
) -> None:
    server = start_server(APP)
    with httpx.Client(timeout=5) as client:
        response = client.get(server.url + "/hello/world?x=1&y=%20")
        assert response.status_code == 200
        missing = client.get(server.url + "/no-response")
        assert missing.status_code == 500
    (line,) = wait_for_lines(server, r'"GET /hello/world')
    pid = worker_pid(server)
    match = re.search(
        rf"\[{pid}\] \[worker 0\] INFO (127\.0\.0\.1):(\d+) - "
        r'"GET /hello/world\?x=1&y=%20 HTTP/1\.1" 200 13 (\d+\.\d)ms$',
        line,
    )
    assert match, line
    (error_line,) = wait_for_lines(server, r'"GET /no-response')
    assert re.search(r'"GET /no-response HTTP/1\.1" 500 \d+ \d+\.\dms$', error_line), error_line


def test_a_custom_format_renders_user_agent_referer_and_request_id(
    start_server: StartServer,
) -> None:
    template = "ACCESS {method} {path}{query} ua={user_agent} ref={referer} id={request_id} " + (
        "{status} {bytes}b {duration:.6f}s {http_version} {client}"
    )
    server = start_server(APP, "--access-log-format", template, "--request-id-header", "X-Trace-Id")
    headers = {
        "user-agent": "probe/1.0 (tests)",
        "referer": "https://example.test/from?a=b",
        "x-trace-id": "trace-42",
        "x-request-id": "not-this-one",
    }
    assert httpx.get(server.url + "/a?b=c", headers=headers, timeout=5).status_code == 200
    assert httpx.get(server.url + "/plain", headers={"user-agent": "x"}, timeout=5).is_success
    (line,) = wait_for_lines(server, "ACCESS GET /a")
    assert re.search(
        r"ACCESS GET /a\?b=c ua=probe/1\.0 \(tests\) ref=https://example\.test/from\?a=b "
        r"id=trace-42 200 13b \d+\.\d{6}s 1\.1 127\.0\.0\.1:\d+$",
        line,
    ), line
    (plain,) = wait_for_lines(server, "ACCESS GET /plain")
    assert " ua=x ref= id= 200 " in plain


def test_json_lines_carry_the_same_fields(start_server: StartServer) -> None:
    server = start_server(APP, "--log-format", "json", "--request-id-header", "x-req")
    headers = {"user-agent": "probe", "referer": "r", "x-req": "abc"}
    assert httpx.get(server.url + "/j?k=v", headers=headers, timeout=5).status_code == 200
    wait_until(lambda: any(r.get("path") == "/j" for r in json_lines(server)), 10)
    records = json_lines(server)
    assert all(isinstance(r, dict) for r in records)
    (access,) = [r for r in records if r.get("path") == "/j"]
    assert set(FIELDS) <= set(access), set(FIELDS) - set(access)
    pid = worker_pid(server)
    expected = {
        "logger": "asgid.access",
        "level": "info",
        "method": "GET",
        "path": "/j",
        "query": "?k=v",
        "http_version": "1.1",
        "status": 200,
        "bytes": 13,
        "user_agent": "probe",
        "referer": "r",
        "request_id": "abc",
        "pid": pid,
        "role": "worker 0",
    }
    assert {key: access[key] for key in expected} == expected
    assert re.fullmatch(r"127\.0\.0\.1:\d+", access["client"])
    assert isinstance(access["duration"], float)
    assert access["duration_ms"] == pytest.approx(access["duration"] * 1000)
    # The message is the text line, so a JSON consumer can show it as it is.
    assert '"GET /j?k=v HTTP/1.1" 200 13' in access["message"]
    # Error-log lines are JSON too, with the process and role.
    master = [r for r in records if r.get("role") == "master"]
    assert master
    assert {r["pid"] for r in master} == {server.pid}
    assert all(r["logger"] == "asgid.error" for r in master)


def test_an_unknown_field_is_a_config_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asgid", APP, "--access-log-format", "{client} {nope}"],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "logging.access_format" in lines[0]
    assert "nope" in lines[0]


def test_error_lines_carry_the_worker_slot_and_pid(start_server: StartServer) -> None:
    server = start_server(APP, "--workers", "2", "--no-access-log")
    wait_until(lambda: len(psutil.Process(server.pid).children()) == 2, 10)
    pids = {c.pid for c in psutil.Process(server.pid).children()}
    with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(2):
            assert client.get(server.url + "/error").status_code == 500
    lines = wait_for_lines(server, "exception in ASGI application", 2)
    for line in lines:
        match = re.search(r"\[(\d+)\] \[worker ([01])\] ERROR exception in ASGI application", line)
        assert match, line
        assert int(match.group(1)) in pids
    # The traceback follows, naming the app's frame.
    assert 'RuntimeError("boom")' in server.output() or "RuntimeError: boom" in server.output()
    started = wait_for_lines(server, r"\[worker [01]\] INFO listening on", 2)
    slots = {re.search(r"\[worker (\d)\]", line).group(1) for line in started}  # type: ignore[union-attr]
    assert slots == {"0", "1"}
    master_lines = wait_for_lines(server, r"\[master\]")
    assert all(f"[{server.pid}] [master]" in line for line in master_lines)


def test_sigusr1_reopens_log_files(start_server: StartServer, tmp_path: Path) -> None:
    log = tmp_path / "asgid.log"
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(process)d %(name)s %(message)s"}},
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "filename": str(log),
                        "formatter": "plain",
                    }
                },
                "loggers": {
                    "asgid.error": {"handlers": ["file"], "level": "INFO", "propagate": False},
                    "asgid.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
                },
            }
        )
    )
    server = start_server(APP, "--log-config", str(config))
    with httpx.Client(timeout=5) as client:
        assert client.get(server.url + "/before").status_code == 200
    wait_until(lambda: log.exists() and '"GET /before' in log.read_text(), 10)
    assert "master started" in log.read_text()

    rotated = tmp_path / "asgid.log.1"
    os.rename(log, rotated)
    server.signal(signal.SIGUSR1)
    wait_until(log.exists, 10)  # the master reopened its handler

    def new_file_gets_access_lines() -> bool:
        # The worker reopens its handler when its loop runs the SIGUSR1 callback:
        # until then its lines still go to the renamed file.
        assert httpx.get(server.url + "/after", timeout=5).status_code == 200
        return '"GET /after' in log.read_text()

    wait_until(new_file_gets_access_lines, 10, 0.1)
    assert "reopening log files" in rotated.read_text()
    assert '"GET /before' not in log.read_text()
    assert '"GET /before' in rotated.read_text()
    # Both handlers (master and worker) write to the new file from now on.
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert "graceful shutdown" in log.read_text()


def test_reopen_keeps_the_old_file_when_the_new_one_cannot_be_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker running as [process].user cannot open a file logrotate made for
    # root; here the new path is a directory, which fails even for root.
    path = tmp_path / "app.log"
    handler = logging.FileHandler(path)
    logger = logging.getLogger("asgid.test-reopen")
    logger.addHandler(handler)
    try:
        path.rename(tmp_path / "app.log.1")
        path.mkdir()
        with caplog.at_level(logging.WARNING, logger="asgid.error"):
            _logging.reopen_files()
        assert "cannot reopen log file" in caplog.text
        logger.warning("still logged")
        handler.flush()
        assert "still logged" in (tmp_path / "app.log.1").read_text()
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_websockets_get_accepted_refused_and_closed_lines(start_server: StartServer) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = start_server("ws_echo:app", "--log-format", "json")
    url = f"ws://{server.host}:{server.port}"
    with connect(f"{url}/echo?room=1", open_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    for path, status in (("/deny", 403), ("/custom-deny", 401)):
        with pytest.raises(InvalidStatus) as refused_here:
            connect(f"{url}{path}", open_timeout=5)
        assert refused_here.value.response.status_code == status

    def websocket_records() -> list[dict[str, Any]]:
        return [r for r in json_lines(server) if r.get("websocket")]

    wait_until(lambda: len(websocket_records()) >= 4, 10)
    accepted, closed, *refused = websocket_records()
    assert accepted["message"].endswith(' - "WebSocket /echo?room=1" [accepted]')
    assert accepted["logger"] == "asgid.access"
    assert closed["websocket"] == "closed"
    assert closed["code"] == 1000
    assert re.search(r'"WebSocket /echo\?room=1" \[closed 1000\] [\d.]+ms$', closed["message"])
    assert [(r["path"], r["status"]) for r in refused] == [("/deny", 403), ("/custom-deny", 401)]
    assert refused[0]["message"].endswith('"WebSocket /deny" 403')


def test_debug_shows_connections_open_and_close(start_server: StartServer) -> None:
    server = start_server(APP, "--log-level", "debug")
    httpx.get(server.url, timeout=5)
    opened = wait_for_lines(server, r"DEBUG 127\.0\.0\.1:\d+ - connection open")
    wait_for_lines(server, r"DEBUG 127\.0\.0\.1:\d+ - connection closed")
    assert "[worker 0]" in opened[0]
