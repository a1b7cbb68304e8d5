"""The examples run under asgid and answer over real HTTP.

Each app is imported from the repository root (``--app-dir`` is the root, so
``examples.fastapi_app:app`` imports the way it does for a user who runs
``asgid`` there). The TOML examples are loaded with ``-c`` and their bind is
replaced by a free port with ``--host``/``--port``; the worker count they set
is not relied on.
"""

from __future__ import annotations

import signal

import httpx
import pytest
from cli_helpers import run_asgid
from helpers import ROOT, StartServer

FRAMEWORKS = {
    "fastapi": ("examples.fastapi_app:app", "Hello from FastAPI"),
    "starlette": ("examples.starlette_app:app", "Hello from Starlette"),
}


def check_framework_app(url: str, greeting: str) -> None:
    response = httpx.get(url + "/", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["message"] == greeting  # set by the lifespan, seen through request.state
    assert data["uptime"] >= 0

    payload = {"hello": "world", "n": [1, 2, 3]}
    response = httpx.post(url + "/echo", json=payload, timeout=5)
    assert response.status_code == 200
    assert response.json() == {"echo": payload}

    assert httpx.get(url + "/missing", timeout=5).status_code == 404


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_framework_example(start_server: StartServer, name: str) -> None:
    target, greeting = FRAMEWORKS[name]
    server = start_server(target, app_dir=ROOT)
    check_framework_app(server.url, greeting)
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0, server.output()


def test_starlette_echo_rejects_a_body_that_is_not_json(start_server: StartServer) -> None:
    server = start_server("examples.starlette_app:app", app_dir=ROOT)
    response = httpx.post(server.url + "/echo", content=b"not json", timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": "expected a JSON body"}


def test_fastapi_toml(start_server: StartServer) -> None:
    server = start_server("-c", str(ROOT / "examples" / "fastapi.toml"), app_dir=ROOT)
    check_framework_app(server.url, "Hello from FastAPI")
    assert httpx.get(server.url + "/", timeout=5).headers["x-served-by"] == "asgid"
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0, server.output()


def test_hello_toml(start_server: StartServer) -> None:
    server = start_server("-c", "examples/hello.toml", cwd=ROOT, app_dir=ROOT)
    response = httpx.get(server.url + "/", timeout=5)
    assert (response.status_code, response.text) == (200, "Hello, world!")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert httpx.get(server.url + "/json", timeout=5).json() == {"message": "Hello, world!"}
    echo = httpx.post(server.url + "/echo", content=b"\x00binary\xff", timeout=5)
    assert echo.content == b"\x00binary\xff"
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0, server.output()


@pytest.mark.parametrize("config", ["examples/hello.toml", "examples/fastapi.toml"])
def test_example_configs_check(config: str) -> None:
    result = run_asgid("--check-config", "-c", config, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"asgid: {config} is valid;")
