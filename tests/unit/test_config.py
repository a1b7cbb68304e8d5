"""Settings in-process: value kinds, TOML loading, precedence, validation, run() keywords.

The error *output* of the command line (one line on stderr, exit status 2) is
tested in ``test_cli.py`` against a real ``python -m asgid``; here the
``ConfigError`` itself is checked, so a failure points at the loader.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from asgid.config import (
    BindAddress,
    Config,
    ConfigError,
    iter_settings,
    load_config,
    parse_bind,
    parse_size,
)
from asgid.config import _kinds as kinds
from asgid.config._load import bind_from_uvicorn, keyword_names, overrides_from_kwargs

TARGET = {"app.target": "pkg.mod:app"}


def write(tmp_path: Path, text: str, name: str = "server.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path: Path, text: str, **kwargs: Any) -> Config:
    kwargs.setdefault("environ", {})
    return load_config(write(tmp_path, text), **kwargs)


def load_error(tmp_path: Path, text: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    return info.value


# -- kinds -------------------------------------------------------------------

MiB = 1024 * 1024

# (kind, TOML value, parsed value)
TOML_GOOD = [
    (kinds.BOOL, True, True),
    (kinds.BOOL, False, False),
    (kinds.INT, 0, 0),
    (kinds.INT, -3, -3),
    (kinds.INT, 2048, 2048),
    (kinds.FLOAT, 5, 5.0),
    (kinds.FLOAT, 2.5, 2.5),
    (kinds.STR, "", ""),
    (kinds.STR, "x y", "x y"),
    (kinds.STR_LIST, "a", ("a",)),
    (kinds.STR_LIST, ["a", "b"], ("a", "b")),
    (kinds.STR_LIST, [], ()),
    (kinds.HEADERS, [["x-a", "1"]], (("x-a", "1"),)),
    (kinds.HEADERS, ["x-b: two words"], (("x-b", "two words"),)),
    (kinds.HEADERS, [[" x-c ", " 3 "], "x-d:4"], (("x-c", "3"), ("x-d", "4"))),
    (kinds.HEADERS, [], ()),
    (kinds.WORKER_COUNT, 4, 4),
    (kinds.WORKER_COUNT, 1, 1),
    (kinds.WORKER_COUNT, "auto", 0),
    (kinds.SIZE, 0, 0),
    (kinds.SIZE, 512, 512),
    (kinds.SIZE, "512MiB", 512 * MiB),
    (kinds.SIZE, "1GB", 10**9),
    (kinds.SIZE, "1gib", 1024**3),
    (kinds.SIZE, "1.5k", 1500),
    (kinds.SIZE, " 10 KiB ", 10 * 1024),
    (kinds.SIZE, "100", 100),
    (kinds.SIZE, "7b", 7),
    (kinds.MEMORY, "512MiB", 512 * MiB),
    (kinds.MEMORY, 0, 0),
    (kinds.MEMORY, "80%", kinds.Share(80.0)),
    (kinds.MEMORY, " 12.5 % ", kinds.Share(12.5)),
    (kinds.MEMORY, "100%", kinds.Share(100.0)),
]

# (kind, TOML value, a fragment of the message)
TOML_BAD = [
    (kinds.BOOL, "true", "true or false"),
    (kinds.BOOL, 1, "true or false"),
    (kinds.INT, 1.0, "an integer"),
    (kinds.INT, "1", "an integer"),
    (kinds.INT, True, "an integer"),
    (kinds.FLOAT, "1.5", "a number"),
    (kinds.FLOAT, False, "a number"),
    (kinds.STR, 1, "a string"),
    (kinds.STR, ["a"], "a string"),
    (kinds.STR_LIST, [1], "a list of strings"),
    (kinds.STR_LIST, 5, "a list of strings"),
    (kinds.STR_LIST, {"a": "b"}, "a list of strings"),
    (kinds.HEADERS, "x-a: 1", "a list of headers"),
    (kinds.HEADERS, [["x-a"]], "a header as"),
    (kinds.HEADERS, [["x-a", 1]], "a header as"),
    (kinds.HEADERS, [["", "v"]], "a header as"),
    (kinds.HEADERS, ["no colon"], "name: value"),
    (kinds.HEADERS, [["x-a", "b\r\nx-evil: 1"]], "control character"),
    (kinds.WORKER_COUNT, 0, 'a positive integer or "auto"'),
    (kinds.WORKER_COUNT, -2, 'a positive integer or "auto"'),
    (kinds.WORKER_COUNT, "4", 'a positive integer or "auto"'),
    (kinds.WORKER_COUNT, 2.0, 'a positive integer or "auto"'),
    (kinds.WORKER_COUNT, True, 'a positive integer or "auto"'),
    (kinds.SIZE, "12XB", "a size such as"),
    (kinds.SIZE, "MiB", "a size such as"),
    (kinds.SIZE, -1, "a size such as"),
    (kinds.SIZE, 1.5, "a size such as"),
    (kinds.SIZE, True, "a size such as"),
    (kinds.MEMORY, "0%", '"80%"'),
    (kinds.MEMORY, "150%", '"80%"'),
    (kinds.MEMORY, "x%", '"80%"'),
    (kinds.MEMORY, "1 parsec", 'a size such as "512MiB"'),
    (kinds.MEMORY, 0.8, '"80%"'),
]

# (kind, text, parsed value)
TEXT_GOOD = [
    *[(kinds.BOOL, text, True) for text in ("1", "true", "TRUE", "yes", "on", " On ")],
    *[(kinds.BOOL, text, False) for text in ("0", "false", "False", "no", "off")],
    (kinds.INT, "42", 42),
    (kinds.INT, " -1 ", -1),
    (kinds.FLOAT, "2.5", 2.5),
    (kinds.FLOAT, "3", 3.0),
    (kinds.STR, "anything: at all", "anything: at all"),
    (kinds.STR_LIST, "a", ("a",)),
    (kinds.STR_LIST, "10.0.0.1, 10.0.0.0/8,,", ("10.0.0.1", "10.0.0.0/8")),
    (kinds.HEADERS, "X-A:1", (("X-A", "1"),)),
    (kinds.HEADERS, "x-b: with: colons", (("x-b", "with: colons"),)),
    (kinds.WORKER_COUNT, "auto", 0),
    (kinds.WORKER_COUNT, " 3 ", 3),
    (kinds.SIZE, "64MiB", 64 * MiB),
    (kinds.SIZE, "4096", 4096),
    (kinds.MEMORY, "1GiB", 1024**3),
    (kinds.MEMORY, "80%", kinds.Share(80.0)),
]

TEXT_BAD = [
    (kinds.BOOL, "maybe", "true or false"),
    (kinds.BOOL, "", "true or false"),
    (kinds.INT, "4.2", "an integer"),
    (kinds.INT, "ten", "an integer"),
    (kinds.FLOAT, "fast", "a number"),
    (kinds.HEADERS, "no colon here", "name: value"),
    (kinds.HEADERS, ": value", "a header as"),
    (kinds.WORKER_COUNT, "0", 'a positive integer or "auto"'),
    (kinds.WORKER_COUNT, "many", 'a positive integer or "auto"'),
    (kinds.WORKER_COUNT, "-1", 'a positive integer or "auto"'),
    (kinds.SIZE, "lots", "a size such as"),
    (kinds.SIZE, "1 parsec", "a size such as"),
    (kinds.MEMORY, "-5%", '"80%"'),
]


def _id(case: tuple[Any, ...]) -> str:
    return f"{case[0].name}-{case[1]!r}"


@pytest.mark.parametrize("case", TOML_GOOD, ids=_id)
def test_kind_parses_toml(case: tuple[kinds.Kind, Any, Any]) -> None:
    kind, raw, expected = case
    value = kind.from_toml(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("case", TOML_BAD, ids=_id)
def test_kind_rejects_toml(case: tuple[kinds.Kind, Any, str]) -> None:
    kind, raw, fragment = case
    with pytest.raises(ValueError, match=r"expected|control character") as info:
        kind.from_toml(raw)
    assert fragment in str(info.value)


@pytest.mark.parametrize("case", TEXT_GOOD, ids=_id)
def test_kind_parses_text(case: tuple[kinds.Kind, str, Any]) -> None:
    kind, text, expected = case
    value = kind.from_text(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("case", TEXT_BAD, ids=_id)
def test_kind_rejects_text(case: tuple[kinds.Kind, str, str]) -> None:
    kind, text, fragment = case
    with pytest.raises(ValueError, match="expected") as info:
        kind.from_text(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value) or fragment == "a header as"


def test_every_kind_in_the_schema_is_covered_by_these_tests() -> None:
    used = {info.meta.kind for info in iter_settings()}
    for table in (TOML_GOOD, TOML_BAD, TEXT_GOOD):
        assert used <= {case[0] for case in table}


def test_parse_size_is_exported() -> None:
    assert parse_size("2MiB") == 2 * MiB


# -- bind addresses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", BindAddress(host="127.0.0.1", port=8000)),
        (":8000", BindAddress(host="0.0.0.0", port=8000)),
        ("[::1]:9000", BindAddress(host="::1", port=9000)),
        ("localhost:0", BindAddress(host="localhost", port=0)),
        ("unix:/run/asgid.sock", BindAddress(path="/run/asgid.sock")),
        ("fd://3", BindAddress(fd=3)),
    ],
)
def test_parse_bind(text: str, expected: BindAddress) -> None:
    assert parse_bind(text) == expected
    if text != ":8000":
        assert str(parse_bind(text)) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("8000", "expected host:port"),
        ("host:port", "expected host:port"),
        ("host:70000", "expected host:port"),
        ("::1:8000", "IPv6 addresses need brackets"),
        ("unix:", "unix:/path"),
        ("fd://three", "fd://N"),
    ],
)
def test_parse_bind_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=r"expected|need brackets") as info:
        parse_bind(text)
    assert fragment in str(info.value)


def test_bind_from_uvicorn() -> None:
    assert bind_from_uvicorn() == ()
    assert bind_from_uvicorn(port=9000) == ("127.0.0.1:9000",)
    assert bind_from_uvicorn(host="0.0.0.0") == ("0.0.0.0:8000",)
    assert bind_from_uvicorn(host="::", port=1) == ("[::]:1",)
    assert bind_from_uvicorn(uds="/tmp/a.sock", fd=4) == ("unix:/tmp/a.sock", "fd://4")


# -- loading a file --------------------------------------------------------------

FULL = """\
[app]
target = "pkg.mod:app"
app_dir = "src"
lifespan = "on"

[server]
bind = ["127.0.0.1:9001", "unix:/tmp/asgid-test.sock"]
backlog = 128

[workers]
count = "auto"
max_memory = "256MiB"
graceful_timeout = 3

[http]
headers = [["x-served-by", "asgid"], "x-env: test"]
forwarded_allow_ips = "*"

[logging]
level = "debug"
access_log = false
"""


def test_loads_every_section(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    assert config.app.target == "pkg.mod:app"
    assert config.app.app_dir == "src"
    assert config.app.lifespan == "on"
    assert config.server.bind == ("127.0.0.1:9001", "unix:/tmp/asgid-test.sock")
    assert config.server.backlog == 128
    assert config.workers.count == 0
    assert config.workers.max_memory == 256 * MiB
    assert config.workers.graceful_timeout == 3.0
    assert isinstance(config.workers.graceful_timeout, float)
    assert config.http.headers == (("x-served-by", "asgid"), ("x-env", "test"))
    assert config.http.forwarded_allow_ips == ("*",)
    assert config.logging.level == "debug"
    assert config.logging.access_log is False
    # untouched settings keep their declared defaults
    assert config.http.timeout_keep_alive == 5.0
    assert config.server.reuse_port is False


def test_dotted_keys_at_the_top_level(tmp_path: Path) -> None:
    config = load(tmp_path, 'app.target = "a:b"\nworkers.count = 3\n')
    assert config.app.target == "a:b"
    assert config.workers.count == 3


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers.count = 9  # type: ignore[misc]


def test_no_file_uses_defaults_and_overrides() -> None:
    config = load_config(None, TARGET, environ={})
    assert config == dataclasses.replace(
        Config(), app=dataclasses.replace(Config().app, target="pkg.mod:app")
    )


def test_missing_target_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"app\.target: no application given"):
        load_config(None, {}, environ={})


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing), environ={})
    assert str(info.value) == f"{missing}: cannot read config file: No such file or directory"


# -- errors name the file, the line, the key and what was expected ---------------

# (TOML text, line, key, message fragment)
FILE_ERRORS = [
    ('[app]\ntarget = "a:b"\n[workers]\ncont = 2\n', 4, "workers.cont", "did you mean 'count'"),
    ('[app]\ntarget = "a:b"\n\n[worker]\ncount = 2\n', 4, "worker", "did you mean 'workers'"),
    ('worker.count = 2\n[app]\ntarget = "a:b"\n', 1, "worker", "did you mean 'workers'"),
    ('[app]\ntarget = "a:b"\n[workers]\ncount = "two"\n', 4, "workers.count", "positive integer"),
    (
        '[app]\ntarget = "a:b"\n[http]\ntimeout_keep_alive = -1\n',
        4,
        "http.timeout_keep_alive",
        ">= 0",
    ),
    ('[app]\ntarget = "a:b"\n[logging]\nlevel = "loud"\n', 4, "logging.level", "one of critical"),
    ('[app]\ntarget = "a:b"\n[logging]\nlevel = \n', 4, "logging.level", "invalid TOML"),
    ('[app]\ntarget = "a:b"\nworkers.count = 2\n', 3, "app.workers", "the [workers] table"),
    ('[app]\ntarget = "a:b"\n[server]\nbind = ["nope"]\n', 4, "server.bind", "host:port"),
    ('[app]\ntarget = "ab"\n', 2, "app.target", "`module:attribute`"),
    ('[app]\ntarget = "a:b"\n[server]\nbind = ["127.0.0.1:1",\n', 4, "server.bind", "invalid TOML"),
    ('[app]\ntarget = "a:b"\n[workers\n', 3, "workers", "invalid TOML"),
    ("app = 1\n", 1, "app", "expected a table [app]"),
    ('[app]\ntarget = "a:b"\n[app.extra]\nx = 1\n', 3, "app.extra", "unknown setting"),
    (
        '[app]\ntarget = "a:b"\n[server]\nssl_keyfile = "k.pem"\n',
        4,
        "server.ssl_keyfile",
        "ssl_certfile",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), FILE_ERRORS)
def test_file_errors_name_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, fragment: str
) -> None:
    error = load_error(tmp_path, text)
    path = str(tmp_path / "server.toml")
    assert error.source == path
    assert error.line == line
    assert error.key == key
    assert fragment in error.message
    prefix = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
    assert str(error).startswith(prefix)
    assert "\n" not in str(error)


def test_validation_error_blames_where_the_value_was_set(tmp_path: Path) -> None:
    text = '[app]\ntarget = "a:b"\n[server]\nbind = ["127.0.0.1:8000"]\n'
    error = load_error(tmp_path, text, overrides={"server.bind": ("bogus",)})
    assert (error.source, error.line, error.key) == ("command line", None, "server.bind")
    error = load_error(tmp_path, text, environ={"ASGID_SERVER_BIND": "bogus"})
    assert (error.source, error.key) == ("$ASGID_SERVER_BIND", "server.bind")


# -- precedence: defaults < file < environment < command line --------------------

PRECEDENCE = '[app]\ntarget = "a:b"\nroot_path = "/file"\n[workers]\ncount = 2\n'


def test_file_overrides_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, PRECEDENCE)
    assert (config.app.root_path, config.workers.count) == ("/file", 2)


def test_environment_overrides_file(tmp_path: Path) -> None:
    environ = {
        "ASGID_APP_ROOT_PATH": "/env",
        "ASGID_WORKERS_MAX_REQUESTS": "100",
        "ASGID_HTTP_HEADERS": "x-from: env",
        "ASGID_SERVER_BIND": "127.0.0.1:1,127.0.0.1:2",
        "ASGID_LOGGING_ACCESS_LOG": "off",
        "ASGID_NOT_A_SETTING": "ignored",
        "OTHER": "ignored",
    }
    config = load(tmp_path, PRECEDENCE, environ=environ)
    assert config.app.root_path == "/env"
    assert config.workers.count == 2  # not in the environment: the file's
    assert config.workers.max_requests == 100
    assert config.http.headers == (("x-from", "env"),)
    assert config.server.bind == ("127.0.0.1:1", "127.0.0.1:2")
    assert config.logging.access_log is False


def test_command_line_overrides_environment_and_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        PRECEDENCE,
        environ={"ASGID_APP_ROOT_PATH": "/env", "ASGID_WORKERS_COUNT": "3"},
        overrides={"app.root_path": "/cli"},
    )
    assert config.app.root_path == "/cli"
    assert config.workers.count == 3


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    error = load_error(tmp_path, PRECEDENCE, environ={"ASGID_WORKERS_COUNT": "lots"})
    assert str(error) == (
        "$ASGID_WORKERS_COUNT: workers.count: expected a positive integer or \"auto\", got 'lots'"
    )


def test_every_setting_has_an_environment_variable(tmp_path: Path) -> None:
    for info in iter_settings():
        name = f"ASGID_{info.section}_{info.key}".upper()
        number = str(int(info.meta.minimum or 0) + 1)  # a valid value other than 0
        sample = {"boolean": "true", "integer": number, "number": number, "size": "7"}
        sample['integer or "auto"'] = "3"
        text = sample.get(info.meta.kind.name, info.meta.choices[-1] if info.meta.choices else "")
        if not text:
            continue
        config = load(tmp_path, '[app]\ntarget = "a:b"\n', environ={name: text})
        expected = info.meta.kind.from_text(text)
        assert getattr(getattr(config, info.section), info.key) == expected, name


def test_out_of_range_override_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {**TARGET, "workers.timeout": 0.5}, environ={})
    assert str(info.value) == "command line: workers.timeout: expected a value >= 1, got 0.5"


# -- asgid.run() keywords ------------------------------------------------------------


def test_run_keywords_map_to_settings() -> None:
    overrides = overrides_from_kwargs(
        {
            "workers": 2,
            "limit_max_requests": 500,
            "limit_concurrency": 10,
            "timeout_keep_alive": 7,
            "timeout_graceful_shutdown": 3,
            "proxy_headers": True,
            "forwarded_allow_ips": "*",
            "root_path": "/api",
            "lifespan": "off",
            "factory": True,
            "app_dir": "src",
            "env_file": ".env",
            "log_level": "debug",
            "access_log": False,
            "server_header": False,
            "date_header": False,
            "header": [("x-a", "1")],
            "backlog": 64,
            "ssl_certfile": "cert.pem",
            "ssl_keyfile": "key.pem",
            "max_memory": "1GiB",
            "ws_max_size": 1000,
        }
    )
    assert overrides == {
        "workers.count": 2,
        "workers.max_requests": 500,
        "http.limit_concurrency": 10,
        "http.timeout_keep_alive": 7.0,
        "workers.graceful_timeout": 3.0,
        "http.proxy_headers": True,
        "http.forwarded_allow_ips": ("*",),
        "app.root_path": "/api",
        "app.lifespan": "off",
        "app.factory": True,
        "app.app_dir": "src",
        "app.env_file": ".env",
        "logging.level": "debug",
        "logging.access_log": False,
        "http.server_header": False,
        "http.date_header": False,
        "http.headers": (("x-a", "1"),),
        "server.backlog": 64,
        "server.ssl_certfile": "cert.pem",
        "server.ssl_keyfile": "key.pem",
        "workers.max_memory": 1024**3,
        "websocket.max_size": 1000,
    }


def test_run_keywords_uvicorn_listeners() -> None:
    assert overrides_from_kwargs({"host": "0.0.0.0", "port": 9000}) == {
        "server.bind": ("0.0.0.0:9000",)
    }
    assert overrides_from_kwargs({"port": 9001}) == {"server.bind": ("127.0.0.1:9001",)}
    assert overrides_from_kwargs({"uds": "/tmp/s.sock"}) == {"server.bind": ("unix:/tmp/s.sock",)}
    assert overrides_from_kwargs({"bind": ["127.0.0.1:1", "[::1]:2"]}) == {
        "server.bind": ("127.0.0.1:1", "[::1]:2")
    }


def test_run_keywords_accept_uvicorns_implementation_choices() -> None:
    from asgid.config._uvicorn import warnings as uvicorn_warnings

    same = {"http": "httptools", "ws": "websockets-sansio", "use_colors": False}
    assert overrides_from_kwargs(same) == {}
    assert uvicorn_warnings(same) == []
    other = {"http": "h11", "ws": "wsproto", "ssl_version": 17}
    assert overrides_from_kwargs(other) == {}
    assert [text.split(":")[0] for text in uvicorn_warnings(other)] == [
        "--http h11",
        "--ws wsproto",
        "--ssl-version 17",
    ]
    assert uvicorn_warnings({"http": "h2"}) == []  # HTTP/2 is on by default on TLS
    assert overrides_from_kwargs({"http2": True}) == {"http.http2": True}
    assert overrides_from_kwargs({"loop": "asyncio"}) == {"workers.loop": "asyncio"}
    with pytest.raises(ConfigError, match="expected one of auto, uvloop, asyncio"):
        load_config(overrides={**TARGET, **overrides_from_kwargs({"loop": "zuvloop"})})


def test_run_keyword_typo_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        overrides_from_kwargs({"limit_concurency": 5})
    assert str(info.value) == (
        "run(): unknown setting 'limit_concurency' (did you mean 'limit_concurrency'?)"
    )


def test_run_keyword_wrong_type() -> None:
    with pytest.raises(ConfigError) as info:
        overrides_from_kwargs({"workers": "two"})
    assert str(info.value) == (
        "run(): workers.count: expected a positive integer or \"auto\", got 'two'"
    )


def test_run_keyword_out_of_range_is_checked_when_loading() -> None:
    overrides = overrides_from_kwargs({"timeout_keep_alive": -1})
    with pytest.raises(ConfigError, match=r"http\.timeout_keep_alive: expected a value >= 0"):
        load_config(None, {**TARGET, **overrides}, environ={})


def test_every_long_flag_is_a_run_keyword() -> None:
    names = keyword_names()
    for info in iter_settings():
        for flag in info.meta.flags:
            if flag.startswith("--"):
                assert names[flag[2:].replace("-", "_")] == info.path


# -- WEB_CONCURRENCY and unknown ASGID_* variables ------------------------------------


def test_web_concurrency_is_the_default_worker_count(tmp_path: Path) -> None:
    target = {"app.target": "m:app"}
    assert load_config(overrides=target, environ={"WEB_CONCURRENCY": "3"}).workers.count == 3
    config = tmp_path / "server.toml"
    config.write_text("[workers]\ncount = 5\n")
    assert load_config(str(config), target, environ={"WEB_CONCURRENCY": "3"}).workers.count == 5
    environ = {"WEB_CONCURRENCY": "3", "ASGID_WORKERS_COUNT": "4"}
    assert load_config(overrides=target, environ=environ).workers.count == 4
    flags = {**target, "workers.count": 6}
    assert load_config(overrides=flags, environ=environ).workers.count == 6
    with pytest.raises(ConfigError, match=r"\$WEB_CONCURRENCY: workers.count"):
        load_config(overrides=target, environ={"WEB_CONCURRENCY": "many"})


def test_unknown_asgid_variables_get_a_warning() -> None:
    from asgid.config._load import unknown_environment

    assert unknown_environment({"ASGID_WORKERS_COUNT": "2", "PATH": "/bin"}) == []
    assert unknown_environment({"ASGID_HTTP_TIMEOUT_KEEPALIVE": "5"}) == [
        "$ASGID_HTTP_TIMEOUT_KEEPALIVE is not an asgid setting, ignored "
        "(did you mean 'ASGID_HTTP_TIMEOUT_KEEP_ALIVE'?)"
    ]


# -- env files, as python-dotenv reads them ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n# comment\n\nexport B=2\n", {"A": "1", "B": "2"}),
        ("A = spaced value  # comment\n", {"A": "spaced value"}),
        ("A=no#comment\n", {"A": "no#comment"}),
        ("A='single $X \\n'\n", {"A": "single $X \\n"}),
        ('A="a\\nb\\t\\"c\\" \\\\"\n', {"A": 'a\nb\t"c" \\'}),
        ('A="first\nsecond"\nB=2\n', {"A": "first\nsecond", "B": "2"}),
        ("A=${X}/bin\nB=${A}:${NOPE:-fallback}\n", {"A": "/x/bin", "B": "/x/bin:fallback"}),
        ("KEY_ONLY\nA=\n", {"A": ""}),
        ("A=1\nA=2\n", {"A": "2"}),
    ],
)
def test_env_file_syntax(text: str, expected: dict[str, str]) -> None:
    from asgid.worker._app import parse_env

    assert parse_env(text, {"X": "/x"}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A='never closed\n", "1: A: the ' quote is never closed"),
        ("B=1\n1A=2\n", "2: expected KEY=value, got '1A=2'"),
        ('A="x" y\n', "1: A: unexpected text after the closing quote"),
    ],
)
def test_env_file_errors_name_the_line(text: str, message: str) -> None:
    from asgid.worker._app import parse_env

    with pytest.raises(ValueError, match=re.escape(message)):
        parse_env(text, {})
