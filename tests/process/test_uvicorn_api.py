"""uvicorn's documented programmatic patterns, with ``uvicorn`` replaced by ``asgid``.

Each snippet runs as a script in its own session (``script`` from
test_run.py) and is checked from outside; ``await server.serve()`` also runs
in this process's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers import free_port, wait_until
from test_run import _wait_listening, make_app, script  # noqa: F401 - the fixture

import asgid


def stop(child: Any) -> None:
    os.kill(child.proc.pid, signal.SIGTERM)
    assert child.proc.wait(15) == 0, child.output()


def test_config_and_server_run(script: Any) -> None:  # noqa: F811
    port = free_port()
    child = script(
        f"""
        import asgid

        if __name__ == "__main__":
            config = asgid.Config("cfgapp:app", host="127.0.0.1", port={port},
                                  log_level="info", access_log=True, workers=1)
            server = asgid.Server(config)
            server.run()
            print("run() returned", server.started, flush=True)
        """
    )
    child.wait_listening(port)
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    wait_until(lambda: '"GET / HTTP/1.1" 200' in child.output(), 5)
    stop(child)
    assert "run() returned True" in child.output()


def test_run_with_workers_runs_a_master(script: Any) -> None:  # noqa: F811
    port = free_port()
    child = script(
        f"""
        import asgid

        if __name__ == "__main__":
            asgid.run("cfgapp:app", host="127.0.0.1", port={port}, workers=2, log_level="info")
        """
    )
    child.wait_listening(port)

    def two_ready() -> bool:
        return len(set(re.findall(r"worker (\d) \(pid \d+\) ready", child.output()))) == 2

    wait_until(two_ready, 15)
    assert len(psutil.Process(child.proc.pid).children()) == 2
    stop(child)


def test_run_with_workers_needs_an_import_string() -> None:
    with pytest.raises(asgid.ConfigError, match="import string"):
        asgid.run(make_app([]), workers=2)


UVICORN_LOGGING = """
    import sys
    import asgid

    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"format": "DEFAULT %(levelname)s %(name)s %(message)s"},
            "access": {"format": "ACCESS %(message)s"},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default",
                        "stream": "ext://sys.stdout"},
            "access": {"class": "logging.StreamHandler", "formatter": "access",
                       "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }

    if __name__ == "__main__":
        asgid.run("cfgapp:app", host="127.0.0.1", port=int(sys.argv[1]), log_config=LOGGING,
                  workers=int(sys.argv[2]))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_log_config_for_uvicorn_gets_asgid_lines(script: Any, workers: int) -> None:  # noqa: F811
    port = free_port()
    child = script(UVICORN_LOGGING, str(port), str(workers))
    child.wait_listening(port)
    httpx.get(f"http://127.0.0.1:{port}/ask?x=1", timeout=5)
    pattern = r'ACCESS 127\.0\.0\.1:\d+ - "GET /ask\?x=1 HTTP/1\.1" 200'
    wait_until(lambda: re.search(pattern, child.output()), 5)
    stop(child)
    output = child.output()
    assert re.search(r"DEFAULT INFO uvicorn\.error .*listening on", output), output


def test_log_config_none_leaves_logging_alone(script: Any) -> None:  # noqa: F811
    port = free_port()
    child = script(
        f"""
        import logging
        import asgid

        logging.basicConfig(level=logging.INFO, format="MINE %(name)s %(message)s")
        asgid.run("cfgapp:app", host="127.0.0.1", port={port}, log_config=None)
        """
    )
    child.wait_listening(port)
    httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    wait_until(lambda: "MINE asgid.access" in child.output(), 5)
    stop(child)
    assert "MINE asgid.error listening on" in child.output()


@pytest.mark.parametrize("suffix", [".yaml", ".ini"])
def test_yaml_and_ini_log_configs(script: Any, tmp_path: Path, suffix: str) -> None:  # noqa: F811
    config = tmp_path / f"logging{suffix}"
    if suffix == ".yaml":
        config.write_text(
            "version: 1\n"
            "formatters: {plain: {format: 'YAMLLOG %(name)s %(message)s'}}\n"
            "handlers: {out: {class: logging.StreamHandler, formatter: plain,"
            " stream: 'ext://sys.stdout'}}\n"
            "loggers: {uvicorn.error: {handlers: [out], level: INFO, propagate: false},"
            " uvicorn.access: {handlers: [out], level: INFO, propagate: false}}\n"
        )
    else:
        config.write_text(
            "[loggers]\nkeys=root,error\n[handlers]\nkeys=out\n[formatters]\nkeys=plain\n"
            "[logger_root]\nlevel=WARNING\nhandlers=\n"
            "[logger_error]\nlevel=INFO\nhandlers=out\nqualname=uvicorn.error\npropagate=0\n"
            "[handler_out]\nclass=StreamHandler\nformatter=plain\nargs=(sys.stdout,)\n"
            "[formatter_plain]\nformat=INILOG %(name)s %(message)s\n"
        )
    port = free_port()
    child = script(
        f"""
        import asgid
        asgid.run("cfgapp:app", host="127.0.0.1", port={port}, log_config={str(config)!r})
        """
    )
    child.wait_listening(port)
    prefix = "YAMLLOG" if suffix == ".yaml" else "INILOG"
    wait_until(lambda: f"{prefix} uvicorn.error listening on" in child.output(), 5)
    stop(child)


def test_server_serve_stops_when_should_exit_is_set() -> None:
    async def main() -> tuple[int, bool]:
        port = free_port()
        server = asgid.Server(asgid.Config(make_app([]), host="127.0.0.1", port=port))
        task = asyncio.get_running_loop().create_task(server.serve())
        try:
            await _wait_listening(port, task)
            assert server.started
            async with httpx.AsyncClient(timeout=5) as client:
                status = (await client.get(f"http://127.0.0.1:{port}/")).status_code
            server.should_exit = True
            await asyncio.wait_for(task, 10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return status, task.done()

    status, done = asyncio.run(main())
    assert status == 200
    assert done


def test_config_repr_and_attributes() -> None:
    config = asgid.Config("cfgapp:app", host="0.0.0.0", port=9000, workers=3, reload=True)
    assert config.workers == 3
    assert config.should_reload
    assert repr(config) == "Config(cfgapp:app, bind=[0.0.0.0:9000], workers=3)"
