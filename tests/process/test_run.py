"""The programmatic entry points: ``asgid.run()`` and ``await asgid.serve()``.

``serve()`` is tested inside a running event loop in this process (stopped by
cancelling its task) and in a child process (stopped by a signal, the way an
embedding program is); ``run()`` blocks, so it always runs in a child process.
Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from cli_helpers import CFG_APPS, run_command
from harness import Process
from helpers import ROOT, base_env, free_port

import asgid
from asgid.config import ConfigError

# -- serve() in this process's event loop ------------------------------------------


def make_app(events: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    events.append("startup")
                    scope["state"]["who"] = "serve"
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = f"{scope['method']} {scope['path']} {scope['state']['who']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


async def _wait_listening(port: int, task: asyncio.Task[None], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if task.done():
            task.result()  # raises what serve() raised
            raise AssertionError("serve() returned before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise TimeoutError(f"nothing listening on {port} within {timeout}s")


async def _serve_request_and_cancel(events: list[str]) -> tuple[int, str]:
    port = free_port()
    config = asgid.load_config(
        overrides={"app.target": "test:app", "server.bind": (f"127.0.0.1:{port}",)}, environ={}
    )
    task = asyncio.get_running_loop().create_task(asgid.serve(make_app(events), config))
    try:
        await _wait_listening(port, task)
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{port}/inside")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
    return response.status_code, response.text


@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_serve_inside_a_running_loop(runner: Any) -> None:
    events: list[str] = []
    status, text = runner(_serve_request_and_cancel(events))
    assert (status, text) == (200, "GET /inside serve")
    assert events == ["startup", "shutdown"]


def test_serve_with_sockets_passed_in() -> None:
    events: list[str] = []

    async def main() -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        config = asgid.load_config(overrides={"app.target": "test:app"}, environ={})
        task = asyncio.get_running_loop().create_task(
            asgid.serve(make_app(events), config, sockets=[sock])
        )
        try:
            await _wait_listening(port, task)
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(f"http://127.0.0.1:{port}/given")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
            sock.close()  # serve() leaves sockets it was given to their owner
        return response.text

    assert asyncio.run(main()) == "GET /given serve"
    assert events == ["startup", "shutdown"]


# -- serve() and run() in a child process, stopped by a signal ------------------------


class Script(Process):
    """A Python script run in its own session, with its output in a file."""

    def __init__(self, tmp_path: Path, source: str, *args: str) -> None:
        path = tmp_path / "script.py"
        path.write_text(textwrap.dedent(source))
        env = base_env(PYTHONPATH=os.pathsep.join([str(CFG_APPS), str(ROOT)]))
        super().__init__(
            [sys.executable, str(path), *args], log=tmp_path / "script.log", cwd=tmp_path, env=env
        )

    def close(self) -> None:
        self.stop(timeout=0)  # the test has checked what it wanted: no grace


@pytest.fixture
def script(tmp_path: Path) -> Iterator[Any]:
    started: list[Script] = []

    def start(source: str, *args: str) -> Script:
        started.append(Script(tmp_path, source, *args))
        return started[-1]

    yield start
    for item in started:
        item.close()


SERVE_SCRIPT = """
    import asyncio, sys
    import asgid
    from cfgapp import app

    async def main():
        config = asgid.load_config(
            overrides={"app.target": "cfgapp:app", "server.bind": (f"127.0.0.1:{sys.argv[1]}",),
                       "app.root_path": "/embedded"},
            environ={},
        )
        await asgid.serve(app, config)
        print("serve() returned", flush=True)

    asyncio.run(main())
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_on_a_signal(script: Any, signum: int) -> None:
    port = free_port()
    child = script(SERVE_SCRIPT, str(port))
    child.wait_listening(port)
    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert response.json()["root_path"] == "/embedded"
    assert response.json()["state"] == {"started": True}
    os.kill(child.proc.pid, signum)
    assert child.proc.wait(15) == 0, child.output()
    assert "serve() returned" in child.output()


RUN_SCRIPT = """
    import sys
    import asgid
    from cfgapp import app

    target = app if sys.argv[2] == "object" else "cfgapp:app"
    asgid.run(
        target,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        root_path="/run",
        headers=[("x-run", "yes")],
        server_header=False,
        log_level="warning",
        loop="uvloop",
    )
    print("run() returned", flush=True)
"""


@pytest.mark.parametrize("form", ["object", "string"])
def test_run_serves_with_keywords(script: Any, form: str) -> None:
    port = free_port()
    child = script(RUN_SCRIPT, str(port), form)
    child.wait_listening(port)
    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert response.json()["root_path"] == "/run"
    assert response.json()["state"] == {"started": True}
    assert response.headers["x-run"] == "yes"
    assert "server" not in response.headers
    os.kill(child.proc.pid, signal.SIGTERM)
    assert child.proc.wait(15) == 0, child.output()
    assert "run() returned" in child.output()
    assert "listening on" not in child.output()  # log_level="warning"


def test_run_with_a_config_file(script: Any, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "server.toml").write_text(
        f'[server]\nbind = ["127.0.0.1:{port}"]\n[http]\nheaders = [["x-file", "1"]]\n'
    )
    child = script(
        """
        import asgid
        from cfgapp import app
        asgid.run(app, config="server.toml", date_header=False)
        """
    )
    child.wait_listening(port)
    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert response.headers["x-file"] == "1"
    assert "date" not in response.headers
    os.kill(child.proc.pid, signal.SIGTERM)
    assert child.proc.wait(15) == 0, child.output()


def test_run_rejects_an_unknown_keyword_before_serving() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'prot' \(did you mean 'port'\?\)"):
        asgid.run("cfgapp:app", prot=8000)


def test_run_rejects_a_bad_value_before_serving() -> None:
    with pytest.raises(ConfigError, match=r"run\(\): workers\.count: expected a positive"):
        asgid.run("cfgapp:app", workers=0)


def test_run_script_with_a_bad_config_fails_without_serving(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text("[workers]\ncount = 0\n")
    (tmp_path / "main.py").write_text(
        "import asgid\nasgid.run('cfgapp:app', config='server.toml')\n"
    )
    result = run_command([sys.executable, "main.py"], cwd=tmp_path, timeout=20)
    assert result.returncode == 1
    assert "asgid.config._load.ConfigError: server.toml:2: workers.count:" in result.stderr
