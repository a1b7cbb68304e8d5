"""The settings schema: every setting asgid has is declared here, once.

Each field of a section dataclass carries its kind, default, CLI flags and
help text in its metadata; loading, validation, the CLI parser and the
generated ``docs/configuration.md`` all read this one declaration. Nothing in
this module touches files, the environment or the command line.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _kinds
from ._kinds import Kind, Share

_META = "asgid"


@dataclass(frozen=True, slots=True)
class Meta:
    kind: Kind
    help: str
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: float | None = None


def setting(
    kind: Kind,
    default: Any,
    help: str,
    *flags: str,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
) -> Any:
    """Declare one setting (a dataclass field with asgid metadata)."""
    meta = Meta(kind=kind, help=help, flags=flags, choices=choices, minimum=minimum)
    return field(default=default, metadata={_META: meta})


@dataclass(frozen=True, slots=True)
class AppSettings:
    target: str = setting(
        _kinds.STR,
        "",
        "The ASGI application as `module:attribute` (required; positional on the CLI).",
    )
    app_dir: str = setting(
        _kinds.STR, ".", "Directory prepended to `sys.path` before importing.", "--app-dir"
    )
    factory: bool = setting(
        _kinds.BOOL,
        False,
        "Treat `target` as a zero-argument callable that returns the app.",
        "--factory",
    )
    lifespan: str = setting(
        _kinds.STR,
        "auto",
        "Run the ASGI lifespan protocol: `auto` tolerates apps without it, "
        "`on` requires it, `off` skips it.",
        "--lifespan",
        choices=("auto", "on", "off"),
    )
    interface: str = setting(
        _kinds.STR,
        "auto",
        "ASGI interface of the app; `auto` detects ASGI 2 (class-style) apps. "
        "`wsgi` is refused with a hint: serve a WSGI app through an adapter such as a2wsgi.",
        "--interface",
        choices=("auto", "wsgi", "asgi2", "asgi3"),
    )
    root_path: str = setting(
        _kinds.STR,
        "",
        "ASGI `root_path` for apps mounted below a path prefix.",
        "--root-path",
    )
    env_file: str = setting(
        _kinds.STR,
        "",
        "A dotenv-style file whose variables are set before the app is imported.",
        "--env-file",
    )


@dataclass(frozen=True, slots=True)
class ServerSettings:
    bind: tuple[str, ...] = setting(
        _kinds.STR_LIST,
        ("127.0.0.1:8000",),
        "Listeners: `host:port`, `[::1]:port`, `unix:/path/to.sock` or `fd://3`. "
        "Also set by uvicorn's `--host`/`--port`/`--uds`/`--fd`.",
        "--bind",
        "-b",
    )
    backlog: int = setting(
        _kinds.INT, 2048, "Listen backlog of each socket.", "--backlog", minimum=1
    )
    reuse_port: bool = setting(
        _kinds.BOOL,
        False,
        "Set SO_REUSEPORT on the listening sockets, so that another process can bind the "
        "same address (a second server, for a blue/green switch). Every worker shares one "
        "socket per address either way.",
        "--reuse-port",
    )
    uds_mode: str = setting(
        _kinds.STR,
        "0666",
        "Permission bits (octal) of Unix socket files asgid creates.",
        "--uds-mode",
    )
    ssl_certfile: str = setting(
        _kinds.STR, "", "TLS certificate chain (PEM); TLS is on when set.", "--ssl-certfile"
    )
    ssl_keyfile: str = setting(_kinds.STR, "", "TLS private key (PEM).", "--ssl-keyfile")
    ssl_keyfile_password: str = setting(
        _kinds.STR, "", "Password of the TLS private key.", "--ssl-keyfile-password"
    )
    ssl_ca_certs: str = setting(
        _kinds.STR, "", "CA bundle used to verify client certificates.", "--ssl-ca-certs"
    )
    ssl_cert_reqs: int = setting(
        _kinds.INT,
        0,
        "Client certificates: 0 = not asked, 1 = optional, 2 = required.",
        "--ssl-cert-reqs",
        minimum=0,
    )
    ssl_ciphers: str = setting(
        _kinds.STR,
        "",
        "OpenSSL cipher string; empty keeps Python's secure default.",
        "--ssl-ciphers",
    )


@dataclass(frozen=True, slots=True)
class WorkersSettings:
    count: int = setting(
        _kinds.WORKER_COUNT,
        1,
        'Number of worker processes, or "auto": one per CPU this process may use (its CPU '
        "affinity and cgroup CPU quota, so a container limited to 2 CPUs gets 2).",
        "--workers",
        "-w",
    )
    loop: str = setting(
        _kinds.STR,
        "auto",
        "The event loop each worker runs: `uvloop` (what `auto` means), or the "
        "standard library's `asyncio` (slower; for apps that need it).",
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
    )
    max_requests: int = setting(
        _kinds.INT,
        0,
        "Recycle a worker after this many requests; 0 never recycles.",
        "--limit-max-requests",
        "--max-requests",
        minimum=0,
    )
    max_requests_jitter: int = setting(
        _kinds.INT,
        0,
        "Add a random 0..N to `max_requests` per worker so they do not recycle together.",
        "--max-requests-jitter",
        "--limit-max-requests-jitter",
        minimum=0,
    )
    timeout: float = setting(
        _kinds.FLOAT,
        30.0,
        "Seconds without a heartbeat before a worker is considered hung and killed.",
        "--timeout",
        "--timeout-worker-healthcheck",
        minimum=1,
    )
    boot_timeout: float = setting(
        _kinds.FLOAT,
        60.0,
        "Seconds a new worker may take to import the app and finish lifespan startup.",
        "--boot-timeout",
        minimum=1,
    )
    graceful_timeout: float = setting(
        _kinds.FLOAT,
        30.0,
        "Seconds a draining worker gets to finish in-flight requests before it is killed.",
        "--timeout-graceful-shutdown",
        "--graceful-timeout",
        minimum=0,
    )
    shutdown_delay: float = setting(
        _kinds.FLOAT,
        0.0,
        "On SIGTERM, first answer 503 on /readyz and keep serving for this many seconds, "
        "then drain: a load balancer (Kubernetes' endpoints) stops sending before the "
        "listeners close. A second SIGTERM (or SIGINT, SIGQUIT) skips the rest of the delay.",
        "--shutdown-delay",
        minimum=0,
    )
    max_memory: int | Share = setting(  # noqa: RUF009 - Share is a frozen dataclass
        _kinds.MEMORY,
        0,
        'Recycle a worker whose RSS exceeds this size (e.g. "512MiB"), or this share of the '
        'memory the container may use divided among the workers ("80%": its cgroup memory '
        "limit, or the machine's memory without one); 0 = no limit.",
        "--max-memory",
    )


@dataclass(frozen=True, slots=True)
class HttpSettings:
    timeout_keep_alive: float = setting(
        _kinds.FLOAT,
        5.0,
        "Seconds an idle keep-alive connection is kept open.",
        "--timeout-keep-alive",
        minimum=0,
    )
    timeout_request_header: float = setting(
        _kinds.FLOAT,
        10.0,
        "Seconds a client has to finish sending a request's headers.",
        "--timeout-request-header",
        minimum=0.1,
    )
    timeout_request_body: float = setting(
        _kinds.FLOAT,
        30.0,
        "Seconds a client may pause between two parts of a request body while the app "
        "waits for it; then 408 and the connection is closed.",
        "--timeout-request-body",
        minimum=0.1,
    )
    timeout_write: float = setting(
        _kinds.FLOAT,
        60.0,
        "Seconds a response may wait on a client that reads none of it; then the "
        "connection is dropped.",
        "--timeout-write",
        minimum=0.1,
    )
    max_body_size: int = setting(
        _kinds.SIZE,
        0,
        'Largest request body (e.g. "10MiB"); above it 413 and the rest is not read; '
        "0 = unlimited.",
        "--max-body-size",
    )
    limit_concurrency: int = setting(
        _kinds.INT,
        0,
        "Requests in progress per worker above which new requests get 503; 0 = unlimited.",
        "--limit-concurrency",
        minimum=0,
    )
    max_header_size: int = setting(
        _kinds.INT,
        65536,
        "Largest request head (request line + headers) in bytes; above it 431.",
        "--max-header-size",
        "--h11-max-incomplete-event-size",
        minimum=256,
    )
    max_request_line: int = setting(
        _kinds.INT,
        8192,
        "Longest request target in bytes; above it 414.",
        "--max-request-line",
        minimum=64,
    )
    max_headers: int = setting(
        _kinds.INT,
        100,
        "Most header fields in one request; above it 431.",
        "--max-headers",
        minimum=1,
    )
    proxy_headers: bool = setting(
        _kinds.BOOL,
        False,
        "Trust X-Forwarded-For/-Proto and Forwarded from `forwarded_allow_ips`.",
        "--proxy-headers",
    )
    forwarded_allow_ips: tuple[str, ...] = setting(
        _kinds.STR_LIST,
        ("127.0.0.1",),
        'Proxies (IPs and CIDRs, or "*") whose forwarding headers are trusted.',
        "--forwarded-allow-ips",
    )
    server_header: bool = setting(_kinds.BOOL, True, "Send `Server: asgid`.", "--server-header")
    date_header: bool = setting(_kinds.BOOL, True, "Send a `Date` header.", "--date-header")
    headers: tuple[tuple[str, str], ...] = setting(
        _kinds.HEADERS,
        (),
        'Default response headers, e.g. [["x-served-by", "asgid"]]; '
        'CLI: `--header "name: value"`, repeatable.',
        "--header",
    )
    http2: bool = setting(
        _kinds.BOOL,
        True,
        "Offer HTTP/2 on TLS listeners: ALPN lists `h2`, then `http/1.1`. uvicorn's "
        "`--http2` and `--http h2` turn it on; `--no-http2` serves HTTP/1.1 only.",
        "--http2",
    )
    http2_cleartext: bool = setting(
        _kinds.BOOL,
        False,
        "Accept HTTP/2 with prior knowledge (h2c: the client opens with the HTTP/2 "
        "connection preface) on cleartext listeners, next to HTTP/1.1 on the same port.",
        "--http2-cleartext",
    )
    http2_max_concurrent_streams: int = setting(
        _kinds.INT,
        100,
        "Streams one HTTP/2 connection may have in progress; more are refused "
        "(RST_STREAM REFUSED_STREAM).",
        "--http2-max-concurrent-streams",
        minimum=1,
    )
    http2_max_control_frames: int = setting(
        _kinds.INT,
        1000,
        "PING, SETTINGS, PRIORITY, empty DATA, tiny WINDOW_UPDATE, unknown frames and "
        "refused streams one HTTP/2 connection may cause per second; above it GOAWAY "
        "ENHANCE_YOUR_CALM (the 2019 flood attacks).",
        "--http2-max-control-frames",
        minimum=10,
    )
    http2_max_resets: int = setting(
        _kinds.INT,
        200,
        "Streams one HTTP/2 client may reset (RST_STREAM) per second; above it GOAWAY "
        "ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).",
        "--http2-max-resets",
        minimum=1,
    )


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    max_size: int = setting(
        _kinds.SIZE,
        16 * 1024 * 1024,
        "Largest incoming message in bytes; larger ones close the connection with 1009.",
        "--ws-max-size",
    )
    max_queue: int = setting(
        _kinds.INT,
        32,
        "Received messages buffered for the app before reading from the client pauses.",
        "--ws-max-queue",
        minimum=1,
    )
    ping_interval: float = setting(
        _kinds.FLOAT,
        20.0,
        "Seconds of silence after which the server pings the client; 0 = never.",
        "--ws-ping-interval",
        minimum=0,
    )
    ping_timeout: float = setting(
        _kinds.FLOAT,
        20.0,
        "Seconds to wait for the pong before closing the connection; 0 = wait forever.",
        "--ws-ping-timeout",
        minimum=0,
    )
    per_message_deflate: bool = setting(
        _kinds.BOOL,
        True,
        "Negotiate permessage-deflate compression when the client offers it.",
        "--ws-per-message-deflate",
    )
    deflate_window_bits: int = setting(
        _kinds.INT,
        12,
        "permessage-deflate: the LZ77 window both sides compress with, as a power of two "
        "(9-15). The websockets library's default 12 is a 4 KiB window instead of zlib's "
        "32 KiB, with nearly the same ratio on typical JSON messages.",
        "--ws-deflate-window-bits",
        minimum=9,
    )
    deflate_mem_level: int = setting(
        _kinds.INT,
        5,
        "permessage-deflate: zlib's memLevel for the server's compressor (1-9); the "
        "websockets library's default 5 uses 16 KiB of hash tables instead of zlib's 128 KiB.",
        "--ws-deflate-mem-level",
        minimum=1,
    )


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    bind: str = setting(
        _kinds.STR,
        "",
        'Where the master serves /metrics, e.g. "127.0.0.1:9100"; empty = off.',
        "--metrics-bind",
    )
    request_metrics: bool = setting(
        _kinds.BOOL,
        True,
        "Count requests, durations and bytes per worker (asgid_requests_total and friends).",
        "--request-metrics",
    )
    ready_min_workers: int = setting(
        _kinds.INT,
        1,
        "/readyz answers 200 only while at least this many workers are ready (and never "
        "while shutting down).",
        "--ready-min-workers",
        minimum=1,
    )


@dataclass(frozen=True, slots=True)
class ControlSettings:
    socket: str = setting(
        _kinds.STR,
        "auto",
        "The control socket `asgid ctl` talks to (a Unix socket path, mode 0600). `auto`: "
        "one named after the config file (`-c`), in `$RUNTIME_DIRECTORY`, `/run/asgid`, "
        "`$XDG_RUNTIME_DIR/asgid` or `/tmp/asgid-UID`, where `asgid ctl -c FILE` finds it; "
        "without a config file `auto` is off. Empty = off. Read at start (a reload does not "
        "move it).",
        "--control-socket",
    )


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = setting(
        _kinds.STR,
        "info",
        "Log level.",
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
    )
    access_log: bool = setting(_kinds.BOOL, True, "Log one line per request.", "--access-log")
    format: str = setting(
        _kinds.STR,
        "text",
        "Log line format.",
        "--log-format",
        choices=("text", "json"),
    )
    access_format: str = setting(
        _kinds.STR,
        '{client} - "{method} {path}{query} HTTP/{http_version}" {status} {bytes} '
        "{duration_ms:.1f}ms",
        "Access log template; fields: client, method, path, query, http_version, status, "
        "bytes, duration, duration_ms, user_agent, referer, request_id.",
        "--access-log-format",
    )
    request_id_header: str = setting(
        _kinds.STR,
        "x-request-id",
        "Request header whose value the access log's `request_id` field shows.",
        "--request-id-header",
    )
    config: str = setting(
        _kinds.STR,
        "",
        "A logging dictConfig file (.json or .toml) that replaces asgid's logging setup.",
        "--log-config",
    )


@dataclass(frozen=True, slots=True)
class ProcessSettings:
    user: str = setting(
        _kinds.STR,
        "",
        "Run workers as this user (name or uid); the master keeps its own.",
        "--user",
    )
    group: str = setting(_kinds.STR, "", "Run workers with this group (name or gid).", "--group")
    umask: str = setting(
        _kinds.STR, "", 'File mode creation mask of workers (octal, e.g. "022").', "--umask"
    )
    pidfile: str = setting(
        _kinds.STR, "", "The master writes its pid here and removes it on exit.", "--pidfile"
    )


@dataclass(frozen=True, slots=True)
class ReloadSettings:
    enabled: bool = setting(
        _kinds.BOOL,
        False,
        "Development: watch the source files and do a rolling reload when one changes "
        "(new workers before old ones go; a change that breaks the app keeps the old ones).",
        "--reload",
    )
    dirs: tuple[str, ...] = setting(
        _kinds.STR_LIST,
        (),
        "Directories to watch; empty = `app.app_dir` and the working directory. CLI: repeatable.",
        "--reload-dir",
    )
    include: tuple[str, ...] = setting(
        _kinds.STR_LIST,
        (),
        "Glob patterns of file names that trigger a reload, added to `*.py`. CLI: repeatable.",
        "--reload-include",
    )
    exclude: tuple[str, ...] = setting(
        _kinds.STR_LIST,
        (),
        "Glob patterns of files or directories never watched, added to the defaults: "
        "`.*` (dot-files: `.git`, `.venv`, editor swap files), `*~`, `*.py[cod]`, "
        "`__pycache__`, `venv`, `site-packages`, `node_modules`. A pattern also listed "
        "in `include` is watched. CLI: repeatable.",
        "--reload-exclude",
    )
    delay: float = setting(
        _kinds.FLOAT,
        0.05,
        "Seconds without a new change before a burst of changes reloads (once).",
        "--reload-delay",
        minimum=0,
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: one frozen section per TOML table."""

    app: AppSettings = field(default_factory=AppSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    workers: WorkersSettings = field(default_factory=WorkersSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    process: ProcessSettings = field(default_factory=ProcessSettings)
    reload: ReloadSettings = field(default_factory=ReloadSettings)


SECTIONS: dict[str, type[Any]] = typing.get_type_hints(Config)


@dataclass(frozen=True, slots=True)
class SettingInfo:
    section: str
    key: str
    default: Any
    meta: Meta

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"


def iter_settings() -> Iterator[SettingInfo]:
    """Every declared setting, in declaration order."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield SettingInfo(section, f.name, f.default, f.metadata[_META])
