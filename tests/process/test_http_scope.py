"""The HTTP connection scope the application sees (ASGI HTTP spec 2.4)."""

from __future__ import annotations

import json

import httpx
import pytest
from helpers import RawConnection, raw_request


def get_scope(server, request: bytes) -> dict:
    response = raw_request(server, request)
    assert response.status == 200, response.body
    return json.loads(response.body)


def test_scope_basics(server):
    response = httpx.get(server.url + "/scope?a=1&b=%20x")
    assert response.status_code == 200
    scope = response.json()
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["raw_path_type"] == "bytes"
    assert scope["query_string"] == "a=1&b=%20x"
    assert scope["query_string_type"] == "bytes"
    assert scope["root_path"] == ""
    assert scope["header_types"] == ["bytes/bytes"]
    assert scope["server"] == ["127.0.0.1", server.port]


def test_client_is_the_peer_address(server):
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
        scope = json.loads(conn.read_response().body)
        assert scope["client"] == list(conn.sock.getsockname())


def test_root_path_is_a_prefix_of_path(start_server):
    # Like uvicorn >= 0.26: path and raw_path include the mount point.
    server = start_server("httpapp:app", "--root-path", "/mount")
    scope = httpx.get(server.url + "/scope").json()
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/scope"
    assert scope["raw_path"] == "/mount/scope"


def test_root_path_defaults_to_empty(start_server):
    server = start_server("httpapp:app")
    assert httpx.get(server.url + "/scope").json()["root_path"] == ""


def test_http10_version(server):
    scope = get_scope(server, b"GET /scope HTTP/1.0\r\n\r\n")
    assert scope["http_version"] == "1.0"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_method(server, method):
    request = f"{method} /scope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    assert get_scope(server, request)["method"] == method


def test_path_is_percent_decoded_utf8(server):
    request = b"GET /scope%2Fx/caf%C3%A9%20%E2%9C%93?q=%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n"
    scope = get_scope(server, request)
    assert scope["path"] == "/scope/x/caf\u00e9 \u2713"
    assert scope["raw_path"] == "/scope%2Fx/caf%C3%A9%20%E2%9C%93"
    assert scope["query_string"] == "q=%C3%A9"


def test_path_route_matches_after_decoding(server):
    # /%73cope is /scope once decoded: the app routes on the decoded path.
    scope = get_scope(server, b"GET /%73cope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/%73cope"


def test_empty_query_string(server):
    scope = get_scope(server, b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert scope["query_string"] == ""
    scope = get_scope(server, b"GET /scope? HTTP/1.1\r\nHost: x\r\n\r\n")
    assert scope["query_string"] == ""


def test_headers_lowercased_ordered_duplicates_kept(server):
    request = (
        b"GET /scope HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"X-Custom: One\r\n"
        b"ACCEPT: */*\r\n"
        b"x-custom: Two\r\n"
        b"X-Raw: caf\xc3\xa9 \xff\r\n"
        b"X-Empty:\r\n"
        b"\r\n"
    )
    scope = get_scope(server, request)
    assert scope["headers"] == [
        ["host", "example.com"],
        ["x-custom", "One"],
        ["accept", "*/*"],
        ["x-custom", "Two"],
        ["x-raw", "caf\xc3\xa9 \xff"],  # the raw bytes, as latin-1 in the JSON view
        ["x-empty", ""],
    ]


def test_header_value_whitespace_is_trimmed(server):
    scope = get_scope(server, b"GET /scope HTTP/1.1\r\nHost: x\r\nX-A:   padded \t \r\n\r\n")
    assert ["x-a", "padded"] in scope["headers"]


def test_state_is_a_shallow_copy_of_lifespan_state(server):
    with httpx.Client() as client:
        first = client.get(server.url + "/scope?mutate").json()
        # The request saw (and changed) its own copy.
        assert first["state"]["greeting"] == "changed by a request"
        second = client.get(server.url + "/scope").json()
    assert second["state"]["greeting"] == "hello from lifespan"
    assert "added" not in second["state"]
    # Shallow: the nested dict is the lifespan's own object.
    assert second["state"]["shared"] == {"from": "lifespan", "mutated": True}


def test_state_is_empty_without_lifespan(start_server):
    server = start_server("httpapp:app", "--lifespan", "off")
    assert httpx.get(server.url + "/scope").json()["state"] == {}


def test_extensions(server):
    scope = get_scope(server, b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert scope["extensions"] == ["http.response.pathsend"]
    scope = get_scope(server, b"GET /scope HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
    assert scope["extensions"] == ["http.response.pathsend", "http.response.trailers"]


def test_absolute_form_target(server):
    request = b"GET http://example.com:8080/scope?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"
    scope = get_scope(server, request)
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "x=1"


def test_options_asterisk(server):
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        # The connection stays usable.
        conn.send(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(conn.read_response().body)["path"] == "/scope"
    assert "CALL OPTIONS *" in server.output()


def test_scope_on_keep_alive_connection_is_fresh(server):
    with RawConnection((server.host, server.port)) as conn:
        conn.send(b"GET /scope?one HTTP/1.1\r\nHost: x\r\nX-First: 1\r\n\r\n")
        first = json.loads(conn.read_response().body)
        conn.send(b"GET /scope?two HTTP/1.1\r\nHost: x\r\n\r\n")
        second = json.loads(conn.read_response().body)
    assert ["x-first", "1"] in first["headers"]
    assert second["headers"] == [["host", "x"]]
    assert second["query_string"] == "two"
    assert first["client"] == second["client"]
