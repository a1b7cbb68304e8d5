"""Unit tests for the sans-IO HTTP/1.1 core (no process, no socket)."""

from __future__ import annotations

import pytest

from asgid.worker._h1 import (
    STATUS_LINES,
    BadRequest,
    InvalidMessage,
    Response,
    ResponseDefaults,
    check_head,
    http_date,
    split_target,
)

HOST = (b"host", b"example.com")

# -- check_head -------------------------------------------------------------------


def check(version, headers):
    """check_head on a request of ``version``, with the keep-alive httptools would
    report for it (no Connection field: only HTTP/1.1 keeps the connection)."""
    checked_version, head = check_head(headers, version == "1.1", lambda: version)
    assert checked_version == version
    return head


def test_check_head_accepts_a_plain_http11_request():
    head = check("1.1", [HOST, (b"accept", b"*/*")])
    assert not head.chunked
    assert not head.expect_continue
    assert not head.trailers
    assert head.upgrade is None


def test_check_head_http10_needs_no_host():
    check("1.0", [])


@pytest.mark.parametrize(
    "host",
    [b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:8000", b"[::1]", b"a-b.c_d"],
)
def test_check_head_accepts_valid_hosts(host):
    check("1.1", [(b"host", host)])


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="missing"),
        pytest.param([HOST, HOST], id="duplicated"),
        pytest.param([(b"host", b"exa mple.com")], id="space"),
        pytest.param([(b"host", b"a/b")], id="slash"),
        pytest.param([(b"host", b"a@b")], id="userinfo"),
        pytest.param([(b"host", b"h:port")], id="bad-port"),
        pytest.param([(b"host", b"[::1")], id="open-bracket"),
    ],
)
def test_check_head_rejects_bad_host_on_http11(headers):
    with pytest.raises(BadRequest) as info:
        check("1.1", headers)
    assert info.value.status == 400
    assert "host" in info.value.reason.lower()


def test_check_head_rejects_duplicated_host_on_http10():
    with pytest.raises(BadRequest):
        check("1.0", [HOST, HOST])


@pytest.mark.parametrize("version", ["2.0", "1.2", "3.0", "0.1"])
def test_check_head_unsupported_version_is_505(version):
    with pytest.raises(BadRequest) as info:
        check(version, [HOST])
    assert info.value.status == 505


def test_check_head_http09_is_400():
    with pytest.raises(BadRequest) as info:
        check("0.9", [])
    assert info.value.status == 400
    assert "version" in info.value.reason


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b" chunked "])
def test_check_head_chunked(value):
    assert check("1.1", [HOST, (b"transfer-encoding", value)]).chunked


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"transfer-encoding", b"gzip")], id="gzip"),
        pytest.param([(b"transfer-encoding", b"chunked, gzip")], id="chunked-gzip"),
        pytest.param([(b"transfer-encoding", b"identity")], id="identity"),
        pytest.param(
            [(b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")],
            id="repeated",
        ),
    ],
)
def test_check_head_rejects_other_transfer_codings(headers):
    with pytest.raises(BadRequest) as info:
        check("1.1", [HOST, *headers])
    assert info.value.status == 400  # chunked missing, not final, or twice


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"transfer-encoding", b"gzip, chunked")], id="gzip-chunked"),
        pytest.param(
            [(b"transfer-encoding", b"gzip"), (b"transfer-encoding", b"chunked")],
            id="split-gzip-chunked",
        ),
        pytest.param([(b"transfer-encoding", b"x-custom , chunked")], id="unknown"),
    ],
)
def test_check_head_answers_501_to_codings_it_does_not_implement(headers):
    with pytest.raises(BadRequest) as info:
        check("1.1", [HOST, *headers])
    assert info.value.status == 501  # RFC 9112 6.1: well formed, not implemented


def test_check_head_rejects_chunked_on_http10():
    with pytest.raises(BadRequest) as info:
        check("1.0", [(b"transfer-encoding", b"chunked")])
    assert "1.0" in info.value.reason


def test_check_head_expect_continue_only_on_http11():
    assert check("1.1", [HOST, (b"expect", b"100-Continue")]).expect_continue
    assert not check("1.0", [(b"expect", b"100-continue")]).expect_continue
    assert not check("1.1", [HOST, (b"expect", b"something")]).expect_continue


def test_check_head_te_trailers_and_upgrade():
    head = check("1.1", [HOST, (b"te", b"Trailers"), (b"upgrade", b"WebSocket")])
    assert head.trailers
    assert head.upgrade == b"websocket"


def test_check_head_reads_the_version_only_when_keep_alive_leaves_it_open():
    def unread():
        raise AssertionError("the version was read")

    assert check_head([HOST], True, unread) == ("1.1", check("1.1", [HOST]))
    # An HTTP/1.0 request kept open by its Connection (or Proxy-Connection) field:
    for name in (b"connection", b"proxy-connection"):
        version, head = check_head([(name, b"keep-alive")], True, lambda: "1.0")
        assert version == "1.0"
    version, head = check_head(
        [(b"connection", b"keep-alive"), (b"expect", b"100-continue")], True, lambda: "1.0"
    )
    assert (version, head.expect_continue) == ("1.0", False)
    with pytest.raises(BadRequest, match=r"not allowed in HTTP/1\.0"):
        check_head(
            [(b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked")],
            True,
            lambda: "1.0",
        )


# -- split_target ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        (b"GET", b"/", (b"/", b"")),
        (b"GET", b"/a/b?x=1&y=2", (b"/a/b", b"x=1&y=2")),
        (b"GET", b"/a%20b?", (b"/a%20b", b"")),
        (b"GET", b"/a?b?c", (b"/a", b"b?c")),
        (b"GET", b"http://example.com/p?q=1", (b"/p", b"q=1")),
        (b"GET", b"https://example.com:8443/p/q", (b"/p/q", b"")),
        (b"GET", b"http://example.com", (b"/", b"")),
        (b"GET", b"http://example.com?q=1", (b"/", b"q=1")),
        (b"GET", b"http://example.com/a?x=/b", (b"/a", b"x=/b")),
        (b"OPTIONS", b"*", (b"*", b"")),
        (b"CONNECT", b"example.com:443", (b"example.com:443", b"")),
    ],
)
def test_split_target(method, target, expected):
    assert split_target(method, target) == expected


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"*"),
        (b"POST", b"*"),
        (b"GET", b"p"),
        (b"GET", b""),
        (b"GET", b"example.com:443"),
        (b"GET", b"://x/"),
    ],
)
def test_split_target_rejects(method, target):
    with pytest.raises(BadRequest) as info:
        split_target(method, target)
    assert info.value.status == 400


# -- ResponseDefaults ------------------------------------------------------------


def test_http_date_is_imf_fixdate():
    assert http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"


def test_status_lines_are_precomputed():
    assert STATUS_LINES[200] == b"HTTP/1.1 200 OK\r\n"
    assert STATUS_LINES[404] == b"HTTP/1.1 404 Not Found\r\n"
    assert STATUS_LINES[599] == b"HTTP/1.1 599 \r\n"


def test_defaults_suffix():
    defaults = ResponseDefaults(headers=[("X-A", "b")])
    defaults.set_date(0)
    assert defaults.suffix == (
        b"server: asgid\r\nx-a: b\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    )
    assert ResponseDefaults(server_header=False, date_header=False).suffix == b""


# -- Response ---------------------------------------------------------------------


def make(
    *,
    method=b"GET",
    version="1.1",
    keep_alive=True,
    trailers_allowed=False,
    defaults=None,
):
    if defaults is None:
        defaults = ResponseDefaults(date_header=False)
    return Response(
        defaults,
        method=method,
        version=version,
        keep_alive=keep_alive,
        trailers_allowed=trailers_allowed,
    )


def start(response, status=200, headers=(), **extra):
    response.start({"type": "http.response.start", "status": status, "headers": headers, **extra})


def test_whole_body_gets_content_length():
    response = make()
    start(response, headers=[(b"content-type", b"text/plain")])
    data = response.body(b"hello", False)
    assert data == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nserver: asgid\r\n"
        b"content-length: 5\r\n\r\nhello"
    )
    assert response.complete
    assert response.keep_alive
    assert response.body_bytes == 5


def test_whole_body_empty_gets_content_length_zero():
    response = make()
    start(response)
    assert response.body(b"", False).endswith(b"content-length: 0\r\n\r\n")


def test_whole_body_keeps_the_app_content_length():
    response = make()
    start(response, headers=[(b"Content-Length", b"5")])
    data = response.body(b"hello", False)
    assert data.lower().count(b"content-length") == 1
    assert data.endswith(b"\r\n\r\nhello")


def test_not_keep_alive_adds_connection_close():
    response = make(keep_alive=False)
    start(response)
    assert b"connection: close\r\n" in response.body(b"x", False)


def test_app_connection_close_turns_keep_alive_off():
    response = make()
    start(response, headers=[(b"connection", b"close")])
    data = response.body(b"x", False)
    assert not response.keep_alive
    assert data.lower().count(b"connection:") == 1


def test_app_transfer_encoding_is_dropped():
    response = make()
    start(response, headers=[(b"transfer-encoding", b"chunked")])
    data = response.body(b"abc", False)
    assert b"transfer-encoding" not in data
    assert data.endswith(b"content-length: 3\r\n\r\nabc")


def test_streamed_http11_is_chunked():
    response = make()
    start(response)
    first = response.body(b"hello", True)
    assert first == (
        b"HTTP/1.1 200 OK\r\nserver: asgid\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    assert not response.complete
    assert response.body(b"", True) == b""  # an empty chunk would end the body
    assert response.body(b" world", True) == b"6\r\n world\r\n"
    assert response.body(b"!", False) == b"1\r\n!\r\n0\r\n\r\n"
    assert response.complete
    assert response.keep_alive
    assert response.body_bytes == 12


def test_streamed_with_content_length_is_not_chunked():
    response = make()
    start(response, headers=[(b"content-length", b"6")])
    first = response.body(b"abc", True)
    assert b"transfer-encoding" not in first
    assert first.lower().count(b"content-length") == 1
    assert first.endswith(b"\r\n\r\nabc")
    assert response.body(b"def", False) == b"def"
    assert response.complete
    assert response.keep_alive


def test_streamed_longer_than_content_length_is_invalid():
    response = make()
    start(response, headers=[(b"content-length", b"4")])
    response.body(b"abc", True)
    with pytest.raises(InvalidMessage, match="content-length"):
        response.body(b"de", False)


def test_streamed_shorter_than_content_length_closes_the_connection():
    response = make()
    start(response, headers=[(b"content-length", b"4")])
    response.body(b"abc", True)
    response.body(b"", False)
    assert response.complete
    assert not response.keep_alive


def test_whole_body_content_length_mismatch_is_invalid():
    response = make()
    start(response, headers=[(b"content-length", b"10")])
    with pytest.raises(InvalidMessage, match="does not match"):
        response.body(b"short", False)


@pytest.mark.parametrize("value", [b"abc", b"-1", b"", b" 5", b"+5", b"5_0"])
def test_invalid_content_length_from_app(value):
    response = make()
    with pytest.raises(InvalidMessage):
        start(response, headers=[(b"content-length", value)])


def test_repeated_content_length_from_app():
    response = make()
    with pytest.raises(InvalidMessage):
        start(response, headers=[(b"content-length", b"1"), (b"content-length", b"1")])


def test_streamed_http10_is_close_delimited():
    response = make(version="1.0")
    start(response)
    first = response.body(b"hello", True)
    assert b"transfer-encoding" not in first
    assert b"content-length" not in first
    assert b"connection: close\r\n" in first
    assert first.endswith(b"\r\n\r\nhello")
    assert response.body(b" world", False) == b" world"
    assert response.complete
    assert not response.keep_alive


def test_http10_keep_alive_is_announced():
    response = make(version="1.0", keep_alive=True)
    start(response)
    data = response.body(b"abc", False)
    assert data.endswith(b"content-length: 3\r\nconnection: keep-alive\r\n\r\nabc")
    assert response.keep_alive
    file_response = make(version="1.0", keep_alive=True)
    start(file_response)
    assert file_response.head_for_file(3).endswith(b"connection: keep-alive\r\n\r\n")
    streamed = make(version="1.0", keep_alive=True, defaults=ResponseDefaults(date_header=False))
    start(streamed, headers=[(b"content-length", b"3")])
    assert b"connection: keep-alive\r\n" in streamed.body(b"a", True)


def test_http11_keep_alive_is_implicit():
    response = make(keep_alive=True)
    start(response)
    assert b"connection" not in response.body(b"abc", False)


def test_http10_whole_body_keeps_content_length():
    response = make(version="1.0", keep_alive=False)
    start(response)
    data = response.body(b"abc", False)
    assert data.endswith(b"content-length: 3\r\nconnection: close\r\n\r\nabc")


def test_head_response_has_length_but_no_body():
    response = make(method=b"HEAD")
    start(response)
    data = response.body(b"hello", False)
    assert data.endswith(b"content-length: 5\r\n\r\n")
    assert response.complete


def test_head_streamed_sends_no_body_and_no_chunks():
    response = make(method=b"HEAD")
    start(response)
    data = response.body(b"hello", True)
    assert data.endswith(b"\r\n\r\n")
    assert b"transfer-encoding" not in data
    assert response.body(b"more", False) == b""
    assert response.complete


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status):
    response = make()
    start(response, status=status)
    data = response.body(b"ignored", False)
    assert data.endswith(b"\r\n\r\n")
    assert b"content-length" not in data
    assert b"ignored" not in data


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_streamed(status):
    response = make()
    start(response, status=status)
    data = response.body(b"a", True) + response.body(b"b", False)
    assert data.endswith(b"\r\n\r\n")
    assert b"transfer-encoding" not in data
    assert response.complete
    assert response.keep_alive


def test_pending_head_is_streamed_framing():
    response = make()
    start(response)
    head = response.pending_head()
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert response.pending_head() == b""
    assert response.body(b"x", False) == b"1\r\nx\r\n0\r\n\r\n"


def test_trailers_when_allowed():
    response = make(trailers_allowed=True)
    start(response, headers=[(b"trailer", b"x-sum")], trailers=True)
    data = response.body(b"abc", False)
    assert b"transfer-encoding: chunked\r\n" in data
    assert data.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n")
    assert not response.complete
    assert response.trailers([(b"x-sum", b"1")], True) == b"x-sum: 1\r\n"
    assert response.trailers([(b"x-more", b"2")], False) == b"x-more: 2\r\n\r\n"
    assert response.complete


def test_trailers_with_content_length_switch_to_chunked():
    response = make(trailers_allowed=True)
    headers = [(b"x-before", b"1"), (b"Content-Length", b"3"), (b"x-after", b"2")]
    start(response, headers=headers, trailers=True)
    data = response.body(b"abc", False)
    assert b"content-length" not in data.lower()
    assert b"\r\nx-before: 1\r\nx-after: 2\r\n" in data
    assert b"\r\ntransfer-encoding: chunked\r\n" in data
    assert data.endswith(b"3\r\nabc\r\n0\r\n")


def test_trailers_not_allowed_are_dropped():
    response = make(trailers_allowed=False)
    start(response, trailers=True)
    assert response.body(b"abc", False).endswith(b"3\r\nabc\r\n0\r\n\r\n")
    assert not response.complete
    assert response.trailers([(b"x-sum", b"1")], False) == b""
    assert response.complete


def test_trailers_out_of_order():
    response = make(trailers_allowed=True)
    start(response, trailers=True)
    with pytest.raises(InvalidMessage):
        response.trailers([], False)  # before the body
    response.body(b"x", False)
    response.trailers([], False)
    with pytest.raises(InvalidMessage):
        response.trailers([], False)  # after the last one
    undeclared = make(trailers_allowed=True)
    start(undeclared)
    undeclared.body(b"x", False)
    with pytest.raises(InvalidMessage):
        undeclared.trailers([], False)


def test_trailer_injection_rejected():
    response = make(trailers_allowed=True)
    start(response, trailers=True)
    response.body(b"x", False)
    with pytest.raises(InvalidMessage):
        response.trailers([(b"x-a", b"1\r\nx-b: 2")], False)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ((b"x-a", b"b\r\nset-cookie: evil"), "CR, LF or NUL"),
        ((b"x-a", b"b\nx: y"), "CR, LF or NUL"),
        ((b"x-a", b"b\rx: y"), "CR, LF or NUL"),
        ((b"x-a", b"b\0c"), "CR, LF or NUL"),
        ((b"x-a\r\nx-b", b"c"), "not a token"),
        ((b"x a", b"c"), "not a token"),
        ((b"x-a:", b"c"), "not a token"),
        ((b"", b"c"), "not a token"),
        ((b"x\x80", b"c"), "not a token"),
    ],
)
def test_header_injection_rejected(header, error):
    response = make()
    with pytest.raises(InvalidMessage, match=error):
        start(response, headers=[header])


def test_header_names_are_checked_every_time():
    start(make(), headers=[(b"X-Good", b"1")])
    with pytest.raises(InvalidMessage, match="not a token"):
        start(make(), headers=[(b"X-Good ", b"1")])
    start(make(), headers=[(b"x-good", b"1")])


@pytest.mark.parametrize("headers", [[("x-a", "b")], [(b"x-a",)], [b"x-a: b"], [(b"x-a", 1)], 5])
def test_header_types_checked(headers):
    response = make()
    with pytest.raises(InvalidMessage):
        start(response, headers=headers)


@pytest.mark.parametrize("status", ["200", 200.0, 99, 100, 101, 199, 600, None, True])
def test_invalid_status(status):
    response = make()
    with pytest.raises(InvalidMessage, match="status"):
        start(response, status=status)


def test_start_twice_is_invalid():
    response = make()
    start(response)
    with pytest.raises(InvalidMessage, match="twice"):
        start(response)


def test_body_before_start_and_after_end_are_invalid():
    response = make()
    with pytest.raises(InvalidMessage, match="before"):
        response.body(b"x", False)
    start(response)
    response.body(b"x", False)
    with pytest.raises(InvalidMessage, match="after"):
        response.body(b"y", False)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("body", ["text", 5, None, ["a"]])
@pytest.mark.parametrize("streamed", [False, True])
def test_body_must_be_bytes(version, body, streamed):
    response = make(version=version)
    start(response)
    if streamed:
        response.body(b"first", True)
    with pytest.raises(InvalidMessage, match="bytes"):
        response.body(body, False)


def test_body_must_be_bytes_with_content_length():
    response = make()
    start(response, headers=[(b"content-length", b"8")])
    response.body(b"abcd", True)
    with pytest.raises(InvalidMessage, match="bytes"):
        response.body("efgh", False)


def test_bytes_like_bodies_are_accepted():
    response = make()
    start(response)
    assert response.body(bytearray(b"ab"), True).endswith(b"2\r\nab\r\n")
    assert response.body(memoryview(b"cd"), False) == b"2\r\ncd\r\n0\r\n\r\n"


def test_app_server_header_overrides_the_default():
    response = make()
    start(response, headers=[(b"Server", b"custom")])
    data = response.body(b"", False)
    assert data.lower().count(b"server:") == 1
    assert b"Server: custom\r\n" in data


def test_app_date_and_default_header_override():
    defaults = ResponseDefaults(headers=[("x-served-by", "asgid")])
    defaults.set_date(0)
    response = make(defaults=defaults)
    start(response, headers=[(b"date", b"yesterday"), (b"X-Served-By", b"app")])
    data = response.body(b"", False)
    assert data.lower().count(b"date:") == 1
    assert b"date: yesterday\r\n" in data
    assert data.lower().count(b"x-served-by:") == 1
    assert b"X-Served-By: app\r\n" in data
    assert b"server: asgid\r\n" in data


def test_date_header_is_sent_and_refreshed():
    defaults = ResponseDefaults(server_header=False)
    defaults.set_date(0)
    response = make(defaults=defaults)
    start(response)
    assert b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in response.body(b"", False)
    defaults.set_date(784111777)
    response = make(defaults=defaults)
    start(response)
    assert b"date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" in response.body(b"", False)


def test_head_for_file():
    response = make()
    start(response)
    head = response.head_for_file(1234)
    assert head.endswith(b"content-length: 1234\r\n\r\n")
    assert response.complete
    assert response.body_bytes == 1234


def test_head_for_file_length_mismatch():
    response = make()
    start(response, headers=[(b"content-length", b"5")])
    with pytest.raises(InvalidMessage):
        response.head_for_file(6)


def test_head_for_file_after_body_is_invalid():
    response = make()
    start(response)
    response.body(b"x", True)
    with pytest.raises(InvalidMessage):
        response.head_for_file(6)
