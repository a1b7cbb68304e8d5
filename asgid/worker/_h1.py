"""HTTP/1.1 semantics without I/O: request-head checks and response framing.

This module owns what RFC 9112 says about a request head once httptools has
tokenised it (Host, Transfer-Encoding, request-target forms) and how an ASGI
response becomes bytes (status line, default headers, Content-Length or
chunked framing, HEAD/204/304 bodies, trailers). It never touches a socket, the
clock or the event loop: callers pass bytes and messages in and write what
comes back, so every rule here is unit-tested without a process.
"""

from __future__ import annotations

import http
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class BadRequest(Exception):
    """The request is malformed: answer ``status`` and close the connection."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class InvalidMessage(Exception):
    """The application sent an ASGI message that breaks the protocol."""


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


STATUS_LINES: dict[int, bytes] = {code: _status_line(code) for code in range(100, 600)}
_FINAL_STATUS_LINES = {code: STATUS_LINES[code] for code in range(200, 600)}  # an app's to send

_HOST_RE = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?$")
_SCHEME_RE = re.compile(rb"^[A-Za-z][A-Za-z0-9+.\-]*://")
_NO_BODY_STATUSES = frozenset({204, 304})
_CONNECTION_FIELDS = (b"connection", b"proxy-connection")  # httptools reads keep-alive from both
_VALID_HOSTS: set[bytes] = set()
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # RFC 9110 5.6.2, lower-cased
_VALID_NAMES: set[bytes] = set()  # lower-cased field names the app sent that were tokens
# Single bytes are looked for as ints: on CPython 3.11 `b"\r" in value` first tries
# the needle as an int and builds a TypeError to discard, costing ~300 ns a test.
CR, LF, NUL, PERCENT = 13, 10, 0, 37


def check_field(lower_name: bytes, value: bytes, what: str) -> None:
    """Raise ``InvalidMessage`` unless a response field can go on the wire as is.

    The name must be a token and the value free of CR, LF and NUL (RFC 9110
    5.5), or the app could split the response or smuggle a header.
    """
    if lower_name not in _VALID_NAMES:
        if not _TOKEN_RE.fullmatch(lower_name):
            raise InvalidMessage(f"{what} name {lower_name!r} is not a token")
        if len(_VALID_NAMES) < 512:
            _VALID_NAMES.add(lower_name)  # apps send the same few names on every response
    if CR in value or LF in value or NUL in value:
        raise InvalidMessage(f"{what} {lower_name!r} has CR, LF or NUL in its value")


def content_length(value: bytes, declared: int) -> int:
    """A response's Content-Length field as a number; ``declared``: the one already
    seen, or -1. Raises ``InvalidMessage`` for a second one, ValueError for garbage."""
    if declared >= 0:
        raise InvalidMessage("more than one content-length header")
    if not value.isdigit():  # int() would also take " 5", "+5" and "5_0"
        raise ValueError(f"content-length {value!r} is not a number")
    return int(value)


def checked_body(body: object, *, started: bool, done: bool) -> bytes:
    """``body`` as bytes, or ``InvalidMessage`` unless ``http.response.body`` may carry it now."""
    if not started or done:
        raise InvalidMessage(
            "http.response.body sent "
            + ("after the body completed" if started else "before http.response.start")
        )
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidMessage(f"http.response.body: 'body' must be bytes, not {type(body).__name__}")
    return bytes(body)  # a copy only of what is not bytes already


def split_target(method: bytes, target: bytes) -> tuple[bytes, bytes]:
    """Return ``(raw_path, query_string)`` for a request-target, or raise.

    Accepts origin-form (``/p?q``), absolute-form (``http://h/p?q``), the
    asterisk form for OPTIONS and the authority form for CONNECT (RFC 9112 3.2).
    """
    if target[:1] == b"/":
        path, _, query = target.partition(b"?")
        return path, query
    if target == b"*":
        if method != b"OPTIONS":
            raise BadRequest("the asterisk request-target is only allowed with OPTIONS")
        return b"*", b""
    if method == b"CONNECT":
        return target, b""
    if _SCHEME_RE.match(target):
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        question = rest.find(b"?")
        if slash < 0 or (0 <= question < slash):
            path_and_query = b"/" + rest[question:] if question >= 0 else b"/"
        else:
            path_and_query = rest[slash:]
        path, _, query = path_and_query.partition(b"?")
        return path, query
    raise BadRequest(f"invalid request-target {target[:64]!r}")


class RequestHead:
    """What the connection needs to know about a request beyond the scope.

    Read-only once ``check_head`` returns it: most requests share ``PLAIN_HEAD``.
    """

    __slots__ = ("chunked", "content_length", "expect_continue", "trailers", "upgrade")

    def __init__(self) -> None:
        self.content_length = b""  # as sent (httptools checked it is digits); b"" when absent
        self.expect_continue = False
        self.trailers = False
        self.chunked = False
        self.upgrade: bytes | None = None


PLAIN_HEAD = RequestHead()  # no body framing, no Expect, TE or Upgrade: most requests
_HEAD_FIELDS = frozenset(
    (b"host", b"transfer-encoding", b"content-length", b"expect", b"te", b"upgrade")
).union(_CONNECTION_FIELDS)


def check_head(
    headers: list[tuple[bytes, bytes]], keep_alive: bool, read_version: Callable[[], str]
) -> tuple[str, RequestHead]:
    """Validate a parsed request head (RFC 9112 sections 3.2, 6, 7); return its
    HTTP version and what the connection must act on.

    ``headers`` are ``(lower-cased name, value)`` pairs in order, ``keep_alive``
    is what httptools says of the connection, and ``read_version`` returns the
    version httptools parsed. Raises ``BadRequest`` for what httptools lets
    through: a missing, repeated or malformed Host on HTTP/1.1, a transfer
    coding other than a lone final ``chunked``, ``chunked`` on HTTP/1.0, and
    HTTP versions asgid cannot serve.
    """
    head = PLAIN_HEAD
    hosts = 0
    codings: list[bytes] | None = None
    connection = False
    for name, value in headers:
        if name not in _HEAD_FIELDS:
            continue
        if name == b"host":
            hosts += 1
            if value not in _VALID_HOSTS:
                if not _HOST_RE.match(value):
                    raise BadRequest("invalid Host header")
                if len(_VALID_HOSTS) < 256:
                    _VALID_HOSTS.add(value)  # clients repeat their Host on every request
            continue
        if name in _CONNECTION_FIELDS:
            connection = True
            continue
        if head is PLAIN_HEAD:
            head = RequestHead()
        if name == b"transfer-encoding":
            if codings is None:
                codings = []
            codings += [c for c in (part.strip().lower() for part in value.split(b",")) if c]
        elif name == b"content-length":
            head.content_length = value
        elif name == b"expect":
            head.expect_continue = value.lower() == b"100-continue"
        elif name == b"te":
            head.trailers = b"trailers" in value.lower()
        else:
            head.upgrade = value.lower()
    # httptools formats the version as a new string on each call, a tenth of
    # a small request's cost, so it is asked only when the answer is not
    # known: of the versions it parses (0.9, 1.0, 1.1, 2.0), only 1.1 keeps
    # the connection open without a Connection field saying so.
    version = "1.1" if keep_alive and not connection else read_version()
    if version != "1.1":
        if version == "0.9":
            raise BadRequest("request line has no HTTP version")
        if version != "1.0":
            raise BadRequest(f"HTTP/{version} is not supported", status=505)
        if head.expect_continue:
            head.expect_continue = False  # HTTP/1.0 has no 100 Continue
    if codings:
        _check_codings(version, codings)
        head.chunked = True
    if hosts > 1:
        raise BadRequest("more than one Host header")
    if hosts == 0 and version == "1.1":
        raise BadRequest("HTTP/1.1 request without a Host header")
    return version, head


# The methods llhttp parses; any other is refused by httptools before asgid sees it.
_PARSED_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND "
    b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
    b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE "
    b"QUERY".split()
)
_METHOD_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110 9.1)


def unknown_method(data: bytes) -> bool:
    """Whether a request httptools refused for its method begins ``data`` with a
    well-formed method it does not know (501, RFC 9110 9.1) rather than garbage
    (400). When the refused request is not the first in ``data`` (pipelined),
    this says False and the answer stays 400."""
    method = data.split(b" ", 1)[0]
    return bool(_METHOD_RE.fullmatch(method)) and method not in _PARSED_METHODS


def _check_codings(version: str, codings: list[bytes]) -> None:
    """Transfer codings (RFC 9112 6.1): a lone, final ``chunked`` is what asgid reads.

    ``chunked`` missing, not last, or twice leaves the body's end unknown:
    400. Other codings before it (``gzip, chunked``) are well formed but not
    implemented: 501.
    """
    if version == "1.0":
        raise BadRequest("transfer codings are not allowed in HTTP/1.0")
    if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        raise BadRequest("the final transfer coding must be a single 'chunked'")
    if len(codings) > 1:
        unknown = b", ".join(codings[:-1]).decode("latin-1")
        raise BadRequest(f"transfer coding {unknown!r} is not implemented", status=501)


def http_date(epoch: float) -> bytes:
    """IMF-fixdate, as the Date header wants it."""
    import email.utils

    return email.utils.formatdate(epoch, usegmt=True).encode("ascii")


# What a response field name is to HTTP/1.1 framing (ResponseDefaults.learn).
_FIELD, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _DEFAULT = range(5)
_NAME_KINDS = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
}


class ResponseDefaults:
    """Headers every response carries; the worker refreshes the date once a second."""

    __slots__ = (
        "_date_line",
        "_static",
        "_static_lines",
        "date",
        "date_header",
        "kinds",
        "names",
        "suffix",
    )

    def __init__(
        self,
        *,
        server_header: bool = True,
        date_header: bool = True,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        static = []
        if server_header:
            static.append((b"server", b"asgid"))
        static.extend((n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers)
        self.names = frozenset(name for name, _ in static) | ({b"date"} if date_header else set())
        # What HTTP/1.1 makes of a response field name, as the app spelled it (see learn()).
        self.kinds: dict[bytes, int] = {}
        self._static = static
        self._static_lines = b"".join(b"%s: %s\r\n" % pair for pair in static)
        self.date_header = date_header
        self._date_line = self.suffix = self.date = b""
        self.set_date(0.0)

    def learn(self, name: bytes) -> int:
        """What HTTP/1.1 makes of a response field ``name``: ``_FIELD`` (nothing), framing,
        connection, or one of the defaults. Raises ``InvalidMessage`` unless it is a token.

        Apps send the same few names on every response, spelled the same way:
        up to 512 answers are kept in ``kinds``, so a known name costs one lookup.
        """
        lower = name.lower()
        check_field(lower, b"", "response header")
        kind = _NAME_KINDS.get(lower, _DEFAULT if lower in self.names else _FIELD)
        if len(self.kinds) < 512:
            self.kinds[name] = kind
        return kind

    def set_date(self, epoch: float) -> None:
        if self.date_header:
            self.date = http_date(epoch)
            self._date_line = b"date: " + self.date + b"\r\n"
        self.suffix = self._static_lines + self._date_line

    def fields(self, names: set[bytes] | None) -> list[tuple[bytes, bytes]]:
        """The default header fields (HTTP/2) minus those in ``names``."""
        pairs = [pair for pair in self._static if names is None or pair[0] not in names]
        if self.date_header and (names is None or b"date" not in names):
            pairs.append((b"date", self.date))
        return pairs

    def without(self, names: set[bytes]) -> bytes:
        """The default header lines minus those the application overrode."""
        lines = [b"%s: %s\r\n" % pair for pair in self._static if pair[0] not in names]
        if b"date" not in names:
            lines.append(self._date_line)
        return b"".join(lines)


# Framing of the response body.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = 0, 1, 2, 3


class Response:
    """Turns one request's ASGI ``http.response.*`` messages into bytes.

    ``start()`` checks the start message and remembers the head; the first
    ``body()`` returns head and body together, so a small response leaves in
    one write with an exact Content-Length. ``pending_head()`` hands out a head
    that is still waiting (the application started the response and then
    awaited something else). ``complete`` turns true with the last message.
    """

    __slots__ = (
        "_body_done",
        "_defaults",
        "_expected",
        "_framing",
        "_head",
        "_is_head",
        "_length_at",
        "_trailers_allowed",
        "_trailers_declared",
        "_written",
        "body_bytes",
        "complete",
        "keep_alive",
        "started",
        "status",
        "version",
    )

    _length_at: int  # set with _expected: where its line is in the head
    _written: int  # body bytes framed by Content-Length; set when that framing is chosen

    def __init__(
        self,
        defaults: ResponseDefaults,
        method: bytes,
        version: str,
        keep_alive: bool,
        trailers_allowed: bool = False,
    ) -> None:
        self._defaults = defaults
        self._is_head = method == b"HEAD"
        self.version = version
        self.keep_alive = keep_alive
        self._trailers_allowed = trailers_allowed
        self._trailers_declared = False
        self._body_done = False
        self.started = False
        self.complete = False
        self.status = 0
        self._head: list[bytes] | None = None
        self._framing = _NONE
        self._expected = -1  # the Content-Length the app declared; -1 when none
        self.body_bytes = 0

    # -- messages ---------------------------------------------------------

    def start(self, message: Mapping[str, Any]) -> None:
        if self.started:
            raise InvalidMessage("http.response.start sent twice")
        status = message["status"]
        status_line = _FINAL_STATUS_LINES.get(status) if type(status) is int else None
        if status_line is None:
            raise InvalidMessage(f"http.response.start: invalid status {status!r}")
        parts = [status_line]
        defaults = self._defaults
        kinds = defaults.kinds
        overridden: set[bytes] | None = None
        try:
            for name, value in message.get("headers", ()):
                try:
                    kind = kinds[name]
                except KeyError:
                    kind = defaults.learn(name)  # or raises: not a token
                if CR in value or LF in value or NUL in value:
                    check_field(name.lower(), value, "response header")  # raises
                if kind:
                    if kind == _CONTENT_LENGTH:
                        self._expected = content_length(value, self._expected)
                        self._length_at = len(parts)  # where its line begins, if chunked wins
                    elif kind == _TRANSFER_ENCODING:
                        continue  # framing is the server's business
                    elif kind == _CONNECTION:
                        if value.lower() == b"close":
                            self.keep_alive = False
                        continue
                    else:  # one of the defaults: the app's replaces it
                        if overridden is None:
                            overridden = set()
                        overridden.add(name.lower())
                parts += (name, b": ", value, b"\r\n")
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidMessage(f"http.response.start: invalid headers ({exc})") from None
        parts.append(defaults.suffix if overridden is None else defaults.without(overridden))
        if message.get("trailers", False):
            self._trailers_declared = True
        self.status = status
        self.started = True
        self._head = parts

    def body(self, body: object, more_body: object) -> bytes:
        """Bytes to write for one ``http.response.body`` message (fields as the app sent them)."""
        if type(body) is not bytes or not self.started or self._body_done:
            body = checked_body(body, started=self.started, done=self._body_done)
        self.body_bytes += len(body)
        head = self._head
        if head is None:
            return self._frame(body, more_body)
        self._head = None
        if more_body or self._trailers_declared:
            self._choose_framing(head)
            return b"".join(head) + self._frame(body, more_body)
        # The whole response in one message: frame it with an exact Content-Length.
        self._body_done = self.complete = True
        has_body = self.status not in _NO_BODY_STATUSES
        if self._expected < 0:
            if has_body and (body or not self._is_head):
                head.append(b"content-length: %d\r\n" % len(body))
        elif self._expected != len(body) and has_body and not self._is_head:
            raise InvalidMessage(
                f"response body of {len(body)} bytes does not match content-length {self._expected}"
            )
        if not self.keep_alive or self.version != "1.1":
            head.append(self._connection_line())
        head.append(b"\r\n")
        if has_body and not self._is_head:
            head.append(body)
        return b"".join(head)

    def trailers(self, headers: Iterable[tuple[bytes, bytes]], more: object) -> bytes:
        if not self._trailers_declared or not self._body_done or self.complete:
            raise InvalidMessage("http.response.trailers sent out of order")
        lines = []
        for name, value in headers:
            check_field(name.lower(), value, "trailer")
            lines.append(name + b": " + value + b"\r\n")
        if not more:
            self.complete = True
            lines.append(b"\r\n")
        return b"".join(lines) if self._writes_trailers else b""

    def pending_head(self) -> bytes:
        """A started head not yet written, framed for a streamed body."""
        head = self._head
        if head is None:
            return b""
        self._head = None
        self._choose_framing(head)
        return b"".join(head)

    def head_for_file(self, size: int) -> bytes:
        """The whole head for a ``http.response.pathsend`` of ``size`` bytes."""
        head = self._head
        if head is None or self._trailers_declared:
            raise InvalidMessage("http.response.pathsend sent out of order")
        self._head = None
        if self._expected < 0:
            if self.status not in _NO_BODY_STATUSES:
                head.append(b"content-length: %d\r\n" % size)
        elif self._expected != size:
            raise InvalidMessage(
                f"content-length {self._expected} does not match the file's {size} bytes"
            )
        self._body_done = self.complete = True
        self.body_bytes = size
        head.append(self._connection_line())
        head.append(b"\r\n")
        return b"".join(head)

    def _connection_line(self) -> bytes:
        if not self.keep_alive:
            return b"connection: close\r\n"
        # An HTTP/1.0 client keeps the connection only when the response says so.
        return b"connection: keep-alive\r\n" if self.version == "1.0" else b""

    @property
    def sends_body(self) -> bool:
        return not self._is_head and self.status not in _NO_BODY_STATUSES

    @property
    def _writes_trailers(self) -> bool:
        return self._framing == _CHUNKED and self._trailers_allowed

    # -- framing ----------------------------------------------------------

    def _choose_framing(self, head: list[bytes]) -> None:
        if not self.sends_body:
            self._framing = _NONE
        elif self._expected >= 0 and not (self._trailers_declared and self._trailers_allowed):
            self._framing = _LENGTH
            self._written = 0
        elif self.version == "1.1":
            self._framing = _CHUNKED
            if self._expected >= 0:  # trailers are coming: chunked framing wins
                del head[self._length_at : self._length_at + 4]  # name, ": ", value, CRLF
            head.append(b"transfer-encoding: chunked\r\n")
        else:
            self._framing = _UNTIL_CLOSE
            self.keep_alive = False
        head.append(self._connection_line())
        head.append(b"\r\n")

    def _frame(self, body: bytes, more_body: object) -> bytes:
        framing = self._framing
        if framing == _CHUNKED:
            data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n" if self._writes_trailers else b"0\r\n\r\n"
        elif framing == _LENGTH:
            self._written += len(body)
            if self._written > self._expected:
                raise InvalidMessage(
                    f"response body longer than its content-length {self._expected}"
                )
            if not more_body and self._written != self._expected:
                self.keep_alive = False  # the client is owed bytes it will never get
            data = body
        elif framing == _UNTIL_CLOSE:
            data = body
        else:
            data = b""
        if not more_body:
            self._body_done = True
            self.complete = not self._trailers_declared
        return data
