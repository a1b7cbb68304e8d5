"""``--reload``: a file change is a rolling reload, and nothing ever goes dark.

Black-box tests on a throwaway project in ``tmp_path`` (the server's working
directory, so only it is watched), plus unit tests of the path filter.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Process
from helpers import ROOT, Server, StartServer, base_env, free_port, wait_until
from supervision import get, wait_for_log, wait_for_workers, write_app

from asgid.supervisor._watch import PathFilter, Spec

# -- what counts as a change -----------------------------------------------------------


def test_the_filter_watches_python_files_and_skips_what_nobody_edits(tmp_path: Path) -> None:
    root = str(tmp_path)
    wanted = PathFilter(include=(), exclude=())
    assert wanted(f"{root}/app/main.py", root)
    assert not wanted(f"{root}/app/templates/index.html", root)
    for skipped in (
        ".git/HEAD",
        ".venv/lib/site.py",
        "venv/lib/python3.11/site-packages/x.py",
        "app/__pycache__/main.cpython-311.pyc",
        "app/.main.py.swp",
        "app/main.py~",
        "node_modules/x/index.py",
        "app/main.pyc",
    ):
        assert not wanted(f"{root}/{skipped}", root), skipped
    assert not wanted("/elsewhere/main.py", root)


def test_include_and_exclude_add_to_the_defaults(tmp_path: Path) -> None:
    root = str(tmp_path)
    wanted = PathFilter(include=("*.html", ".env"), exclude=("generated_*.py", "migrations"))
    assert wanted(f"{root}/templates/index.html", root)
    assert wanted(f"{root}/.env", root)  # included beats the default `.*`
    assert wanted(f"{root}/app/main.py", root)
    assert not wanted(f"{root}/app/generated_models.py", root)
    assert not wanted(f"{root}/app/migrations/0001.py", root)


def test_config_and_env_files_always_count(tmp_path: Path) -> None:
    config, env = tmp_path / "server.toml", tmp_path / "conf" / ".env"
    spec = Spec.from_config(_config(app_dir=str(tmp_path), env_file=str(env)), str(config))
    wanted = spec.filter()
    assert wanted(str(config), str(tmp_path))
    assert wanted(str(env), str(tmp_path))


def test_default_dirs_are_the_app_dir_and_the_working_directory(tmp_path: Path) -> None:
    inside = tmp_path / "src"
    spec = Spec.from_config(_config(app_dir=str(inside)), None)
    assert set(spec.dirs) == {os.path.abspath("."), str(inside)}
    outside = Spec.from_config(_config(app_dir="/"), None)
    assert outside.dirs == ("/",)  # one directory holding the other is watched once


def _config(**app: str):  # type: ignore[no-untyped-def]
    from asgid.config import load_config

    overrides = {f"app.{key}": value for key, value in app.items()}
    return load_config(overrides={"app.target": "live:app", **overrides}, environ={})


# -- the reload, black box ---------------------------------------------------------------


def start_live(
    start_server: StartServer, project: Path, *args: str, env: dict[str, str] | None = None
) -> Server:
    return start_server(
        "live:app",
        "--reload",
        "--timeout-graceful-shutdown",
        "5",
        *args,
        app_dir=project,
        cwd=project,
        env=env,
    )


def serves(server: Server, body: str, timeout: float = 10.0) -> None:
    """Wait until new connections get ``body``."""
    wait_until(lambda: _answer(server) == body, timeout)


def _answer(server: Server) -> str:
    try:
        return get(server)
    except (OSError, AssertionError):
        return ""


def reloads(server: Server) -> int:
    return len(re.findall(r"reload finished", server.output()))


def test_edits_are_served_with_no_failed_request(start_server: StartServer, tmp_path: Path) -> None:
    write_app(tmp_path / "live.py", "version 0")
    server = start_live(start_server, tmp_path, "--workers", "2", "--reload-delay", "0.1")
    wait_for_log(server, "watching")
    failures: list[str] = []
    answered: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                answered.add(get(server))
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))
            stop.wait(0.01)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for version in range(1, 6):
            write_app(tmp_path / "live.py", f"version {version}")
            started = time.monotonic()
            wait_until(lambda v=version: f"version {v}" in answered, 10)  # type: ignore[misc]
            assert time.monotonic() - started < 5
    finally:
        stop.set()
        thread.join(10)
    assert failures == []
    # A worker booting for one edit may already import the next one, which is
    # then served without a reload of its own: at most one reload per edit.
    assert 1 <= reloads(server) <= 5
    wait_for_workers(server, 2)
    assert "changed: live.py; reloading" in server.output()


def test_a_broken_edit_keeps_the_old_code_until_it_is_fixed(
    start_server: StartServer, tmp_path: Path
) -> None:
    app = tmp_path / "live.py"
    write_app(app, "good")
    server = start_live(start_server, tmp_path)
    wait_for_log(server, "watching")
    app.write_text(app.read_text() + "\ndef broken(:\n")
    output = wait_for_log(server, "reload failed")
    assert output.count("SyntaxError") == 1  # said once, by the master
    assert get(server) == "good"
    write_app(app, "fixed")
    serves(server, "fixed")


def test_excluded_files_trigger_nothing_and_included_ones_do(
    start_server: StartServer, tmp_path: Path
) -> None:
    write_app(tmp_path / "live.py", "one")
    server = start_live(
        start_server, tmp_path, "--reload-exclude", "scratch_*.py", "--reload-include", "*.txt"
    )
    wait_for_log(server, "watching")
    (tmp_path / "scratch_notes.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("not watched\n")
    (tmp_path / "data.txt").write_text("watched\n")
    wait_for_log(server, "reload finished")
    assert "changed: data.txt; reloading" in server.output()
    assert "scratch_notes.py" not in server.output()
    assert reloads(server) == 1


def test_a_burst_of_changes_reloads_once(start_server: StartServer, tmp_path: Path) -> None:
    write_app(tmp_path / "live.py", "one")
    package = tmp_path / "pkg"
    package.mkdir()
    server = start_live(start_server, tmp_path, "--reload-delay", "0.5")
    wait_for_log(server, "watching")
    for n in range(200):  # like a `git checkout` of a big change
        (package / f"module_{n}.py").write_text(f"N = {n}\n")
    wait_for_log(server, "reload finished")
    assert "and 195 more; reloading" in server.output()
    quiet_until = time.monotonic() + 1.5
    wait_until(lambda: time.monotonic() > quiet_until, 3)
    assert reloads(server) == 1


def test_the_config_file_is_watched(start_server: StartServer, tmp_path: Path) -> None:
    write_app(tmp_path / "live.py", "one")
    config = tmp_path / "server.toml"
    port = free_port()
    config.write_text(
        f'[app]\ntarget = "live:app"\n[server]\nbind = ["127.0.0.1:{port}"]\n'
        "[reload]\nenabled = true\n[workers]\ncount = 1\n"
    )
    server = start_server(
        "-c", str(config), port=port, no_bind=True, app_dir=tmp_path, cwd=tmp_path
    )
    wait_for_workers(server, 1)
    wait_for_log(server, "watching")
    config.write_text(config.read_text().replace("count = 1", "count = 2"))
    wait_for_workers(server, 2)
    assert "changed: server.toml; reloading" in server.output()


def test_polling_when_watchfiles_is_missing(start_server: StartServer, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "watchfiles.py").write_text("raise ImportError('not installed here')\n")
    project = tmp_path / "project"
    project.mkdir()
    write_app(project / "live.py", "one")
    pythonpath = os.pathsep.join([str(shadow), str(ROOT)])
    server = start_live(start_server, project, env={"PYTHONPATH": pythonpath})
    wait_for_log(server, "watchfiles is not installed: polling for changes")
    wait_for_log(server, "watching")  # the first scan is taken: a change from here on counts
    write_app(project / "live.py", "two")
    serves(server, "two")


def test_run_with_reload_from_a_script(tmp_path: Path) -> None:
    write_app(tmp_path / "live.py", "one")
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import asgid

            if __name__ == "__main__":
                asgid.run("live:app", host="127.0.0.1", port={port}, reload=True,
                          reload_dirs=["{tmp_path}"], reload_delay=0.1, workers=2)
            """
        )
    )
    log = tmp_path / "serve.log"
    proc = Process([sys.executable, str(script)], log=log, cwd=tmp_path, env=base_env())
    server = ScriptServer("127.0.0.1", port, log)
    try:
        serves(server, "one", timeout=15)  # type: ignore[arg-type]
        wait_for_log(server, "watching")  # type: ignore[arg-type]
        write_app(tmp_path / "live.py", "two")
        serves(server, "two")  # type: ignore[arg-type]
        assert len(set(re.findall(r"worker (\d) \(pid \d+\) ready", log.read_text()))) == 2
    finally:
        proc.stop()
    assert proc.returncode == 0, log.read_text()


@dataclass
class ScriptServer:
    """What the helpers need of a server started by a script: where, and its log."""

    host: str
    port: int
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def test_run_with_reload_needs_an_import_string() -> None:
    import asgid
    from asgid.config import ConfigError

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    with pytest.raises(ConfigError, match="import string"):
        asgid.run(app, reload=True)


WS_APP = """
VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({{"type": message["type"] + ".complete"}})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({{"type": "websocket.accept"}})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({{"type": "websocket.send", "text": VERSION}})
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": VERSION.encode()}})
"""


def test_open_websockets_get_1012_and_do_not_hold_the_reload(
    start_server: StartServer, tmp_path: Path
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    (tmp_path / "live.py").write_text(WS_APP.format(version="one"))
    server = start_live(start_server, tmp_path)
    wait_for_log(server, "watching")
    with connect(f"ws://{server.host}:{server.port}/ws", open_timeout=10) as ws:
        ws.send("version?")
        assert ws.recv(timeout=5) == "one"
        (tmp_path / "live.py").write_text(WS_APP.format(version="two"))
        serves(server, "two")  # the new worker serves while the old one drains
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012  # service restart: reconnect
    with connect(f"ws://{server.host}:{server.port}/ws", open_timeout=10) as ws:
        ws.send("version?")
        assert ws.recv(timeout=5) == "two"
