"""The command line: error output and exit codes, precedence, uvicorn's flag names.

Everything about what a user sees runs a real ``python -m asgid``: a broken
config must print one line (file, line, key, what was expected) and exit 2,
never a traceback; servers are checked over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cli_helpers import CFG_APPS, one_line, run_asgid
from harness import Process
from helpers import StartServer, base_env, free_port, wait_until

from asgid.cli import build_parser, overrides_from_args
from asgid.config import load_config

APP = "cfgapp:app"


def write_config(tmp_path: Path, body: str, *, port: int | None = None) -> Path:
    """A config for cfgapp, bound to a free port so a config that wrongly loads
    cannot collide with anything; ``body`` is appended as written."""
    path = tmp_path / "server.toml"
    header = (
        f'[app]\ntarget = "{APP}"\napp_dir = "{CFG_APPS}"\n\n'
        f'[server]\nbind = ["127.0.0.1:{port or free_port()}"]\n\n'
    )
    path.write_text(header + body)
    return path


def get_json(url: str, **kwargs: Any) -> tuple[httpx.Response, dict[str, Any]]:
    response = httpx.get(url, timeout=5, **kwargs)
    assert response.status_code == 200, response.text
    return response, response.json()


# -- a bad configuration: one line, the file, the line, the key, exit 2 ----------

# (TOML appended after 7 lines of [app] and [server], line, key, what was expected)
BAD_CONFIGS = {
    "unknown key": ("[workers]\ncont = 2\n", 9, "workers.cont", "did you mean 'count'?"),
    "unknown section": (
        "[worker]\ncount = 2\n",
        8,
        "worker",
        "unknown section (did you mean 'workers'?)",
    ),
    "unknown section, no match": (
        "[zzz]\ncount = 2\n",
        8,
        "zzz",
        "unknown section; expected one of app, server, workers, http,",
    ),
    "wrong type": (
        '[workers]\ncount = "two"\n',
        9,
        "workers.count",
        'a positive integer or "auto"',
    ),
    "out of range": (
        "[http]\n\ntimeout_keep_alive = -1\n",
        10,
        "http.timeout_keep_alive",
        "expected a value >= 0, got -1",
    ),
    "bad choice": (
        '[logging]\nlevel = "loud"\n',
        9,
        "logging.level",
        "expected one of critical, error, warning, info, debug, trace, got 'loud'",
    ),
    "toml syntax": ("[logging]\nlevel = info\n", 9, "logging.level", "invalid TOML"),
    "unclosed array": (
        '[http]\nforwarded_allow_ips = ["10.0.0.1",\n',
        9,
        "http.forwarded_allow_ips",
        "invalid TOML",
    ),
    "bad size": ('[workers]\nmax_memory = "1 parsec"\n', 9, "workers.max_memory", '"512MiB"'),
    "bad bind": ("", 6, "server.bind", "expected host:port"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_prints_one_line_and_exits_2(
    tmp_path: Path, case: tuple[str, int, str, str]
) -> None:
    body, line, key, expected = case
    path = write_config(tmp_path, body)
    if key == "server.bind":
        path.write_text(path.read_text().replace('bind = ["127.0.0.1:', 'bind = ["127.0.0.1;'))
    result = run_asgid("-c", str(path))
    assert result.returncode == 2, result.stderr
    message = one_line(result.stderr)
    assert message.startswith(f"asgid: error: {path}:{line}: ")
    if key:
        assert f":{line}: {key}: " in message
    assert expected in message
    assert result.stdout == ""


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    result = run_asgid("-c", str(missing))
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"asgid: error: {missing}: cannot read config file: No such file or directory"
    )


def test_version_says_whether_the_hot_path_is_compiled() -> None:
    import asgid
    import asgid.worker._protocol as hot_path

    compiled = not hot_path.__file__.endswith(".py")  # scripts/compile: a .so beside it
    result = run_asgid("--version")
    assert result.returncode == 0
    how = "compiled" if compiled else "pure Python"
    assert result.stdout == f"asgid {asgid.__version__} ({how} hot path)\n"


def test_no_app_given() -> None:
    result = run_asgid()
    assert result.returncode == 2
    assert "app.target: no application given" in one_line(result.stderr)


def test_bad_flag_value_names_the_setting() -> None:
    result = run_asgid(APP, "--workers", "0", "--app-dir", str(CFG_APPS))
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "asgid: error: command line: workers.count: "
        "expected a positive integer or \"auto\", got '0'"
    )


def test_bad_flag_choice_is_a_usage_error() -> None:
    result = run_asgid(APP, "--log-level", "loud")
    assert result.returncode == 2
    assert "invalid choice: 'loud'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_environment_value_names_the_variable() -> None:
    result = run_asgid(APP, "--check-config", env={"ASGID_HTTP_TIMEOUT_KEEP_ALIVE": "soon"})
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "asgid: error: $ASGID_HTTP_TIMEOUT_KEEP_ALIVE: http.timeout_keep_alive: "
        "expected a number, got 'soon'"
    )


@pytest.mark.parametrize(
    ("name", "text", "line", "expected"),
    [
        ("logging.json", '{"version": 1,\n "handlers": }', 2, "invalid JSON"),
        ("logging.toml", "version = 1\n[handlers\n", 2, "invalid logging config"),
        ("logging.json", '{"version": 1, "handlers": {"h": {"class": "nope.Nope"}}}', None, "h"),
    ],
)
def test_bad_log_config_file(
    tmp_path: Path, name: str, text: str, line: int | None, expected: str
) -> None:
    log_config = tmp_path / name
    log_config.write_text(text)
    result = run_asgid(APP, "--app-dir", str(CFG_APPS), "--log-config", str(log_config))
    assert result.returncode == 2
    where = f"{log_config}:{line}" if line else str(log_config)
    message = one_line(result.stderr)
    assert message.startswith(f"asgid: error: {where}: logging.config: ")
    assert expected in message


# -- --check-config -------------------------------------------------------------


def test_check_config_validates_and_imports_without_serving(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, "[workers]\ncount = 2\n", port=port)
    result = run_asgid("--check-config", "-c", str(path), timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"asgid: {path} is valid; {APP} imported"
    with pytest.raises(ConnectionRefusedError):  # nothing was left listening
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_check_config_reports_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[workers]\ncount = 0\n")
    result = run_asgid("--check-config", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:9: workers.count:" in one_line(result.stderr)


def test_check_config_missing_module_exits_4(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    path.write_text(path.read_text().replace(APP, "no_such_module:app"))
    result = run_asgid("--check-config", "-c", str(path))
    assert result.returncode == 4
    assert one_line(result.stderr) == "asgid: error: could not import module 'no_such_module'"


def test_check_config_missing_attribute_exits_4() -> None:
    result = run_asgid("--check-config", "cfgapp:nope", "--app-dir", str(CFG_APPS))
    assert result.returncode == 4
    assert one_line(result.stderr) == (
        "asgid: error: attribute 'nope' not found in module 'cfgapp'"
    )


def test_check_config_app_raising_on_import_exits_4(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import os\n\nvalue = 1 / 0\n")
    result = run_asgid("--check-config", "broken:app", "--app-dir", str(tmp_path))
    assert result.returncode == 4
    assert result.stderr.startswith("asgid: error: error while importing 'broken':")
    assert "ZeroDivisionError" in result.stderr
    assert 'broken.py", line 3' in result.stderr


# -- precedence on a real server: file < environment < command line --------------


def test_command_line_overrides_the_file(tmp_path: Path, start_server: StartServer) -> None:
    file_port = free_port()
    path = write_config(
        tmp_path, '[http]\nserver_header = false\nheaders = ["x-from: file"]\n', port=file_port
    )
    path.write_text(path.read_text().replace('app_dir = "', 'root_path = "/file"\napp_dir = "'))
    server = start_server(
        "-c", str(path), "--root-path", "/cli", "--server-header", app_dir=CFG_APPS
    )
    response, data = get_json(server.url)
    assert data["root_path"] == "/cli"
    assert response.headers["server"] == "asgid"
    assert response.headers["x-from"] == "file"  # not overridden: the file's
    assert server.port != file_port  # --host/--port replaced the file's bind
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{file_port}/", timeout=2)


def test_environment_overrides_the_file_and_the_command_line_overrides_both(
    tmp_path: Path, start_server: StartServer
) -> None:
    path = write_config(tmp_path, "[http]\nserver_header = true\n")
    path.write_text(path.read_text().replace('app_dir = "', 'root_path = "/file"\napp_dir = "'))
    env = {"ASGID_APP_ROOT_PATH": "/env", "ASGID_HTTP_SERVER_HEADER": "false"}

    from_env = start_server("-c", str(path), app_dir=CFG_APPS, env=env)
    response, data = get_json(from_env.url)
    assert data["root_path"] == "/env"
    assert "server" not in response.headers

    from_cli = start_server(
        "-c", str(path), "--root-path", "/cli", "--server-header", app_dir=CFG_APPS, env=env
    )
    response, data = get_json(from_cli.url)
    assert data["root_path"] == "/cli"
    assert response.headers["server"] == "asgid"


def test_sigterm_stops_cleanly_with_exit_0(start_server: StartServer) -> None:
    server = start_server(APP, app_dir=CFG_APPS)
    get_json(server.url)
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0


# -- uvicorn's flag names ----------------------------------------------------------

# (command-line arguments, {setting: value}) as uvicorn users write them
UVICORN_FLAGS: list[tuple[list[str], dict[str, Any]]] = [
    (["--host", "0.0.0.0", "--port", "9000"], {"server.bind": ("0.0.0.0:9000",)}),
    (["--port", "9000"], {"server.bind": ("127.0.0.1:9000",)}),
    (["--host", "::1", "--port", "9000"], {"server.bind": ("[::1]:9000",)}),
    (["--uds", "/tmp/asgid.sock"], {"server.bind": ("unix:/tmp/asgid.sock",)}),
    (["--fd", "3"], {"server.bind": ("fd://3",)}),
    (["--workers", "4"], {"workers.count": 4}),
    (["--limit-max-requests", "1000"], {"workers.max_requests": 1000}),
    (["--limit-max-requests-jitter", "50"], {"workers.max_requests_jitter": 50}),
    (["--limit-concurrency", "64"], {"http.limit_concurrency": 64}),
    (["--timeout-keep-alive", "7"], {"http.timeout_keep_alive": 7.0}),
    (["--timeout-graceful-shutdown", "12"], {"workers.graceful_timeout": 12.0}),
    (["--proxy-headers"], {"http.proxy_headers": True}),
    (["--no-proxy-headers"], {"http.proxy_headers": False}),
    (
        ["--forwarded-allow-ips", "10.0.0.1,10.1.0.0/16"],
        {"http.forwarded_allow_ips": ("10.0.0.1", "10.1.0.0/16")},
    ),
    (["--forwarded-allow-ips", "*"], {"http.forwarded_allow_ips": ("*",)}),
    (["--root-path", "/api"], {"app.root_path": "/api"}),
    (["--lifespan", "off"], {"app.lifespan": "off"}),
    (["--factory"], {"app.factory": True}),
    (["--interface", "asgi3"], {"app.interface": "asgi3"}),
    (["--app-dir", "src"], {"app.app_dir": "src"}),
    (["--env-file", ".env"], {"app.env_file": ".env"}),
    (["--log-level", "trace"], {"logging.level": "trace"}),
    (["--log-config", "logging.json"], {"logging.config": "logging.json"}),
    (["--access-log"], {"logging.access_log": True}),
    (["--no-access-log"], {"logging.access_log": False}),
    (["--server-header"], {"http.server_header": True}),
    (["--no-server-header"], {"http.server_header": False}),
    (["--date-header"], {"http.date_header": True}),
    (["--no-date-header"], {"http.date_header": False}),
    (
        ["--header", "X-A:1", "--header", "x-b: two"],
        {"http.headers": (("X-A", "1"), ("x-b", "two"))},
    ),
    (["--backlog", "128"], {"server.backlog": 128}),
    (["--ws-max-size", "1048576"], {"websocket.max_size": 1048576}),
    (["--ssl-keyfile", "key.pem"], {"server.ssl_keyfile": "key.pem"}),
    (["--ssl-certfile", "cert.pem"], {"server.ssl_certfile": "cert.pem"}),
    (["--ssl-keyfile-password", "secret"], {"server.ssl_keyfile_password": "secret"}),
    (["--ssl-ca-certs", "ca.pem"], {"server.ssl_ca_certs": "ca.pem"}),
    (["--ssl-cert-reqs", "2"], {"server.ssl_cert_reqs": 2}),
    (["--ssl-ciphers", "ECDHE+AESGCM"], {"server.ssl_ciphers": "ECDHE+AESGCM"}),
    (["--timeout-worker-healthcheck", "10"], {"workers.timeout": 10.0}),
    (
        ["--ssl-version", "17", "--loop", "uvloop", "--http", "httptools", "--no-use-colors"],
        {"workers.loop": "uvloop"},
    ),
    (["--ws", "websockets", "--use-colors"], {}),
    (["--reload"], {"reload.enabled": True}),
    (["--reload-dir", "src", "--reload-dir", "lib"], {"reload.dirs": ("src", "lib")}),
    (["--reload-include", "*.html"], {"reload.include": ("*.html",)}),
    (["--reload-exclude", "*.tmp"], {"reload.exclude": ("*.tmp",)}),
    (["--reload-delay", "0.5"], {"reload.delay": 0.5}),
    (["--loop", "asyncio"], {"workers.loop": "asyncio"}),
    (["--loop", "auto"], {"workers.loop": "auto"}),
    (["--http", "h11"], {}),
    (["--http", "auto"], {}),
    (["--http", "h2"], {}),
    (["--http2"], {"http.http2": True}),
    (["--no-http2"], {"http.http2": False}),
    (["--ws", "wsproto"], {}),
    (["--ws", "websockets-sansio"], {}),
    (["--ws", "none"], {}),
    (["--ws-max-queue", "8"], {"websocket.max_queue": 8}),
    (["--ws-ping-interval", "5"], {"websocket.ping_interval": 5.0}),
    (["--ws-ping-timeout", "6"], {"websocket.ping_timeout": 6.0}),
    (["--ws-per-message-deflate", "false"], {"websocket.per_message_deflate": False}),
    (["--ws-per-message-deflate", "True"], {"websocket.per_message_deflate": True}),
    (["--ws-per-message-deflate"], {"websocket.per_message_deflate": True}),
    (["--h11-max-incomplete-event-size", "16384"], {"http.max_header_size": 16384}),
    (["--reset-contextvars"], {}),
    (["--interface", "asgi2"], {"app.interface": "asgi2"}),
]

# Every option `uvicorn --help` lists (uvicorn 0.55), so the table above is complete.
UVICORN_055_OPTIONS = [
    "--host",
    "--port",
    "--uds",
    "--fd",
    "--reload",
    "--reload-dir",
    "--reload-include",
    "--reload-exclude",
    "--reload-delay",
    "--workers",
    "--loop",
    "--http",
    "--http2",
    "--ws",
    "--ws-max-size",
    "--ws-max-queue",
    "--ws-ping-interval",
    "--ws-ping-timeout",
    "--ws-per-message-deflate",
    "--lifespan",
    "--interface",
    "--env-file",
    "--log-config",
    "--log-level",
    "--access-log",
    "--no-access-log",
    "--use-colors",
    "--no-use-colors",
    "--proxy-headers",
    "--no-proxy-headers",
    "--server-header",
    "--no-server-header",
    "--date-header",
    "--no-date-header",
    "--forwarded-allow-ips",
    "--root-path",
    "--limit-concurrency",
    "--backlog",
    "--limit-max-requests",
    "--limit-max-requests-jitter",
    "--timeout-keep-alive",
    "--timeout-graceful-shutdown",
    "--timeout-worker-healthcheck",
    "--ssl-keyfile",
    "--ssl-certfile",
    "--ssl-keyfile-password",
    "--ssl-version",
    "--ssl-cert-reqs",
    "--ssl-ca-certs",
    "--ssl-ciphers",
    "--header",
    "--version",
    "--app-dir",
    "--h11-max-incomplete-event-size",
    "--reset-contextvars",
    "--factory",
    "--help",
]


def test_the_table_covers_every_uvicorn_option() -> None:
    tested = {arg for argv, _ in UVICORN_FLAGS for arg in argv if arg.startswith("--")}
    assert set(UVICORN_055_OPTIONS) - tested - {"--version", "--help"} == set()


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["--http", "h11"], "--http h11: asgid parses HTTP/1.1 with httptools"),
        (["--ws", "wsproto"], "--ws wsproto: asgid serves WebSockets with the websockets"),
        (["--ssl-version", "2"], "--ssl-version 2: asgid negotiates TLS 1.2 or newer"),
        (["--use-colors"], "--use-colors: asgid never colours its log lines"),
    ],
)
def test_uvicorn_options_served_differently_warn_once(argv: list[str], warning: str) -> None:
    result = run_asgid(APP, "--app-dir", str(CFG_APPS), "--check-config", *argv)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"asgid: warning: {warning}")


@pytest.mark.parametrize(
    "argv",
    [
        ["--http", "httptools"],
        ["--ws", "websockets-sansio"],
        ["--no-use-colors"],
        ["--reset-contextvars"],
        ["--loop", "asyncio"],
    ],
)
def test_uvicorn_options_that_mean_the_same_are_quiet(argv: list[str]) -> None:
    result = run_asgid(APP, "--app-dir", str(CFG_APPS), "--check-config", *argv)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_abbreviated_flags_are_refused() -> None:
    result = run_asgid(APP, "--app-dir", str(CFG_APPS), "--check-config", "--pid", "x.pid")
    assert result.returncode == 2
    assert "unrecognized arguments: --pid" in result.stderr


def test_help_shows_choices_and_defaults() -> None:
    result = run_asgid("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "[choices: critical, error, warning, info, debug, trace] [default: info]" in text
    assert "[default: 2048]" in text  # --backlog


def test_a_wsgi_interface_is_refused_with_a_hint() -> None:
    result = run_asgid(APP, "--app-dir", str(CFG_APPS), "--interface", "wsgi")
    assert result.returncode == 2
    assert "app.interface: asgid serves ASGI applications" in result.stderr


@pytest.mark.parametrize(
    ("argv", "expected"), UVICORN_FLAGS, ids=[" ".join(argv) for argv, _ in UVICORN_FLAGS]
)
def test_uvicorn_flag(argv: list[str], expected: dict[str, Any]) -> None:
    args = build_parser().parse_args([APP, *argv])
    overrides = overrides_from_args(args)
    assert overrides == {"app.target": APP, **expected}


def test_uvicorn_flags_load_into_a_valid_config() -> None:
    argv = [item for args, _ in UVICORN_FLAGS for item in args]
    args = build_parser().parse_args([APP, *argv])
    config = load_config(None, overrides_from_args(args), environ={})
    assert config.server.bind == ("[::1]:9000", "unix:/tmp/asgid.sock", "fd://3")
    assert config.workers.count == 4
    assert config.http.headers == (("X-A", "1"), ("x-b", "two"))


def test_gunicorn_flags() -> None:
    args = build_parser().parse_args(
        [
            *(APP, "-b", "127.0.0.1:1", "--bind", "unix:/tmp/g.sock", "-w", "3"),
            *("--max-requests", "9", "--max-requests-jitter", "2"),
            *("--timeout", "40", "--graceful-timeout", "5"),
        ]
    )
    assert overrides_from_args(args) == {
        "app.target": APP,
        "server.bind": ("127.0.0.1:1", "unix:/tmp/g.sock"),
        "workers.count": 3,
        "workers.max_requests": 9,
        "workers.max_requests_jitter": 2,
        "workers.timeout": 40.0,
        "workers.graceful_timeout": 5.0,
    }


def test_a_uvicorn_command_line_serves(tmp_path: Path, start_server: StartServer) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CFG_GREETING=hello from env file\n")
    server = start_server(
        APP,
        *("--workers", "1", "--limit-max-requests", "1000", "--limit-concurrency", "100"),
        *("--timeout-keep-alive", "5", "--timeout-graceful-shutdown", "5"),
        *("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1", "--root-path", "/api"),
        *("--lifespan", "on", "--env-file", str(env_file), "--log-level", "info"),
        *("--no-access-log", "--no-server-header", "--no-date-header", "--header", "x-a: 1"),
        *("--backlog", "128", "--loop", "uvloop", "--http", "httptools"),
        app_dir=CFG_APPS,
    )
    response, data = get_json(server.url + "/", headers={"x-forwarded-for": "203.0.113.7"})
    assert data["root_path"] == "/api"
    assert data["state"] == {"started": True}
    assert data["env"] == {"CFG_GREETING": "hello from env file"}
    assert "server" not in response.headers
    assert "date" not in response.headers
    assert response.headers["x-a"] == "1"
    echo = httpx.post(server.url + "/echo", content=b"ping", timeout=5)
    assert echo.content == b"ping"
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert '"GET /' not in server.output()  # --no-access-log


def test_factory(start_server: StartServer) -> None:
    server = start_server("cfgapp:create_app", "--factory", app_dir=CFG_APPS)
    _, data = get_json(server.url)
    assert data["state"] == {"started": True}


def test_env_file_variables_reach_the_app(tmp_path: Path, start_server: StartServer) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text(
        "# comment\n\nCFG_PLAIN=plain\nexport CFG_EXPORTED=yes\n"
        'CFG_QUOTED="two words"\nCFG_COMMENTED=value # trailing comment\n'
    )
    server = start_server(APP, "--env-file", str(env_file), app_dir=CFG_APPS)
    _, data = get_json(server.url)
    assert data["env"] == {
        "CFG_PLAIN": "plain",
        "CFG_EXPORTED": "yes",
        "CFG_QUOTED": "two words",
        "CFG_COMMENTED": "value",
    }


def test_env_file_never_overrides_the_environment(
    tmp_path: Path, start_server: StartServer
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text(
        'CFG_PLAIN=from the file\nCFG_QUOTED="a\\nb \\"c\\" ${CFG_PLAIN}"\n'
        "CFG_EXPORTED='literal \\n $CFG_PLAIN'\n"
    )
    server = start_server(
        APP,
        "--env-file",
        str(env_file),
        app_dir=CFG_APPS,
        env={"CFG_PLAIN": "from the shell"},
    )
    _, data = get_json(server.url)
    assert data["env"]["CFG_PLAIN"] == "from the shell"  # as python-dotenv: the shell wins
    assert data["env"]["CFG_QUOTED"] == 'a\nb "c" from the shell'
    assert data["env"]["CFG_EXPORTED"] == "literal \\n $CFG_PLAIN"


def test_unknown_asgid_variables_are_warned(tmp_path: Path) -> None:
    result = run_asgid(
        APP,
        "--app-dir",
        str(CFG_APPS),
        "--check-config",
        env={"ASGID_WORKER_COUNT": "3", "ASGID_WORKERS_COUNT": "2"},
    )
    assert result.returncode == 0, result.stderr
    assert (
        "asgid: warning: $ASGID_WORKER_COUNT is not an asgid setting, ignored "
        "(did you mean 'ASGID_WORKERS_COUNT'?)"
    ) in result.stderr
    assert "ASGID_WORKERS_COUNT is not" not in result.stderr


def test_unix_socket(tmp_path: Path, start_server: StartServer) -> None:
    path = tmp_path / "asgid.sock"
    server = start_server(APP, "--uds", str(path), app_dir=CFG_APPS, no_bind=True, wait=False)
    wait_until(lambda: path.exists() or server.proc.poll() is not None, timeout=15)
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, timeout=5) as client:
        wait_until(lambda: _uds_ready(client), timeout=15)
        assert client.get("http://asgid/").json()["state"] == {"started": True}


def _uds_ready(client: httpx.Client) -> bool:
    try:
        client.get("http://asgid/")
    except httpx.TransportError:
        return False
    return True


def test_inherited_fd(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    app_dir = str(CFG_APPS)
    server = Process(
        [sys.executable, "-m", "asgid", APP, "--fd", str(listener.fileno()), "--app-dir", app_dir],
        log=tmp_path / "asgid.log",
        env=base_env(),
        pass_fds=(listener.fileno(),),
    )
    listener.close()  # the child holds its own copy
    try:
        wait_until(lambda: "listening on" in server.output(), timeout=15)
        _, data = get_json(f"http://127.0.0.1:{port}/")
        assert data["state"] == {"started": True}
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    finally:
        server.stop()


def test_tls_flags(tmp_path: Path, start_server: StartServer) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    server = start_server(
        APP,
        *("--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)),
        *("--ssl-ciphers", "ECDHE+AESGCM", "--ssl-version", "17"),
        app_dir=CFG_APPS,
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    _, data = get_json(f"https://127.0.0.1:{server.port}/", verify=context)
    assert data["state"] == {"started": True}
    with pytest.raises(httpx.ConnectError):  # the certificate is checked, TLS is really on
        httpx.get(f"https://127.0.0.1:{server.port}/", timeout=5)


# -- logging -------------------------------------------------------------------------

LOG_DICT = {
    "version": 1,
    "formatters": {"custom": {"format": "CUSTOM %(name)s %(message)s"}},
    "handlers": {
        "file": {"class": "logging.FileHandler", "formatter": "custom", "filename": "FILENAME"}
    },
    "loggers": {"asgid": {"handlers": ["file"], "level": "INFO"}},
}


def _toml_dict_config(filename: str) -> str:
    return (
        "version = 1\n"
        '[formatters.custom]\nformat = "CUSTOM %(name)s %(message)s"\n'
        f'[handlers.file]\nclass = "logging.FileHandler"\nformatter = "custom"\n'
        f"filename = {json.dumps(filename)}\n"
        '[loggers.asgid]\nhandlers = ["file"]\nlevel = "INFO"\n'
    )


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_log_config_file(tmp_path: Path, start_server: StartServer, suffix: str) -> None:
    log_file = tmp_path / "custom.log"
    config = tmp_path / f"logging{suffix}"
    if suffix == ".json":
        config.write_text(json.dumps(LOG_DICT).replace("FILENAME", str(log_file)))
    else:
        config.write_text(_toml_dict_config(str(log_file)))
    server = start_server(APP, "--log-config", str(config), app_dir=CFG_APPS)
    get_json(server.url + "/hello")
    wait_until(lambda: log_file.exists() and "/hello" in log_file.read_text(), timeout=10)
    lines = log_file.read_text().splitlines()
    assert any(line.startswith("CUSTOM asgid.error listening on") for line in lines), lines
    assert any(
        line.startswith("CUSTOM asgid.access ") and '"GET /hello HTTP/1.1" 200' in line
        for line in lines
    ), lines


def test_log_format_json(start_server: StartServer) -> None:
    server = start_server(APP, "--log-format", "json", app_dir=CFG_APPS)
    get_json(server.url + "/json-line?x=1")
    wait_until(lambda: "/json-line" in server.output(), timeout=10)
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    records = [json.loads(line) for line in server.output().splitlines()]  # every line is JSON
    assert records
    for record in records:
        assert {"time", "level", "logger", "pid", "message"} <= record.keys()
        assert isinstance(record["pid"], int)
    access = [r for r in records if r["logger"] == "asgid.access"]
    assert len(access) == 1
    assert '"GET /json-line?x=1 HTTP/1.1" 200' in access[0]["message"]
    assert any(r["message"].startswith("listening on http://127.0.0.1:") for r in records)


def test_log_level_warning_hides_info(start_server: StartServer) -> None:
    server = start_server(APP, "--log-level", "warning", app_dir=CFG_APPS)
    get_json(server.url)
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert "listening on" not in server.output()


def test_address_in_use_exits_1() -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: asgid cannot share it
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_asgid(APP, "--port", str(port), "--app-dir", str(CFG_APPS))
    assert result.returncode == 1
    assert "Address already in use" in one_line(result.stderr)


@pytest.mark.parametrize(("flag", "loop"), [((), "uvloop"), (("--loop", "asyncio"), "asyncio")])
def test_loop_and_fresh_contexts(
    start_server: StartServer, flag: tuple[str, ...], loop: str
) -> None:
    # --reset-contextvars is quiet because this already holds: every request
    # starts in a fresh context, whatever lifespan or earlier requests set.
    server = start_server("contexts:app", *flag)
    with httpx.Client(base_url=server.url, timeout=5) as client:  # one keep-alive connection
        answers = [client.get("/").json() for _ in range(3)]
    assert answers == [{"loop": loop, "seen": "unset"}] * 3
