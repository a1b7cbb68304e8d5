"""Proxy headers: unit tests of _proxy, then the worker end to end."""

from __future__ import annotations

import httpx
import pytest
from helpers import wait_until

from asgid.worker._proxy import TrustedProxies, apply_proxy_headers

CLIENT = ("10.0.0.1", 5000)


def apply(trusted, headers, client=CLIENT, scheme="http"):
    encoded = [(k.encode(), v.encode()) for k, v in headers]
    return apply_proxy_headers(TrustedProxies(trusted), encoded, client, scheme)


# -- TrustedProxies -------------------------------------------------------------------


def test_trusted_addresses_and_networks():
    trusted = TrustedProxies(["127.0.0.1", "192.168.0.0/16", "::1", "fd00::/8"])
    assert "127.0.0.1" in trusted
    assert "192.168.3.4" in trusted
    assert "::1" in trusted
    assert "fd12::5" in trusted
    assert "127.0.0.2" not in trusted
    assert "192.169.0.1" not in trusted
    assert "fe80::1" not in trusted
    assert "not-an-ip" not in trusted
    assert "" not in trusted
    assert None not in trusted


def test_trusted_addresses_are_normalised():
    trusted = TrustedProxies(["0:0:0:0:0:0:0:1"])
    assert "::1" in trusted


def test_trust_everyone():
    trusted = TrustedProxies(["*"])
    assert "8.8.8.8" in trusted
    assert "anything" in trusted


def test_nothing_trusted():
    assert "127.0.0.1" not in TrustedProxies([])


def test_cidr_with_host_bits_is_accepted():
    assert "10.1.2.3" in TrustedProxies(["10.1.2.200/24"])


@pytest.mark.parametrize("entry", ["not-an-ip", "10.0.0.0/33", "1.2.3"])
def test_invalid_entries_raise(entry):
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        TrustedProxies([entry])


# -- apply_proxy_headers -------------------------------------------------------------


def test_untrusted_client_is_ignored():
    headers = [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https")]
    assert apply(["127.0.0.1"], headers) == (CLIENT, "http")


def test_untrusted_client_forwarded_is_ignored():
    assert apply(["127.0.0.1"], [("forwarded", "for=1.2.3.4;proto=https")]) == (CLIENT, "http")


def test_no_client_address():
    headers = [("x-forwarded-for", "1.2.3.4")]
    assert apply_proxy_headers(TrustedProxies(["*"]), headers, None, "http") == (None, "http")


def test_x_forwarded_for_and_proto():
    headers = [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https")]
    assert apply(["10.0.0.1"], headers) == (("1.2.3.4", 0), "https")


def test_trusted_without_headers_changes_nothing():
    assert apply(["10.0.0.1"], []) == (CLIENT, "http")


def test_rightmost_untrusted_address_wins():
    # The client wrote 6.6.6.6 itself; 1.2.3.4 was added by our trusted proxy 10.0.0.2.
    headers = [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")]
    assert apply(["10.0.0.0/8"], headers)[0] == ("1.2.3.4", 0)


def test_repeated_x_forwarded_for_headers_form_one_list():
    headers = [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4, 10.0.0.2")]
    assert apply(["10.0.0.0/8"], headers)[0] == ("1.2.3.4", 0)


def test_all_trusted_chain_gives_the_leftmost():
    headers = [("x-forwarded-for", "10.0.0.5, 10.0.0.2")]
    assert apply(["10.0.0.0/8"], headers)[0] == ("10.0.0.5", 0)


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [("https", "https"), ("HTTPS", "https"), ("http", "http"), ("ftp", "http"), ("", "http")],
)
def test_proto_values(proto, scheme):
    assert apply(["*"], [("x-forwarded-proto", proto)])[1] == scheme


def test_proto_last_value_wins():
    assert apply(["*"], [("x-forwarded-proto", "http, https")])[1] == "https"


@pytest.mark.parametrize(("proto", "scheme"), [("https", "wss"), ("http", "ws"), ("wss", "wss")])
def test_websocket_schemes(proto, scheme):
    assert apply(["*"], [("x-forwarded-proto", proto)], scheme="ws")[1] == scheme


def test_https_can_be_downgraded_by_a_trusted_proxy():
    assert apply(["*"], [("x-forwarded-proto", "http")], scheme="https")[1] == "http"


@pytest.mark.parametrize(
    ("value", "client", "scheme"),
    [
        ("for=1.2.3.4", ("1.2.3.4", 0), "http"),
        ("for=1.2.3.4;proto=https", ("1.2.3.4", 0), "https"),
        ('for="1.2.3.4:8080";proto=https', ("1.2.3.4", 0), "https"),
        ('for="[2001:db8::1]:4711"', ("2001:db8::1", 0), "http"),
        ('For="[2001:db8::1]"', ("2001:db8::1", 0), "http"),
        ("for=6.6.6.6, for=1.2.3.4;proto=https, for=10.0.0.2", ("1.2.3.4", 0), "https"),
        ("by=10.0.0.2;for=1.2.3.4;host=example.com", ("1.2.3.4", 0), "http"),
        ("proto=https", CLIENT, "https"),
    ],
)
def test_forwarded(value, client, scheme):
    assert apply(["10.0.0.0/8"], [("forwarded", value)]) == (client, scheme)


@pytest.mark.parametrize("forwarded_first", [False, True])
@pytest.mark.parametrize(
    ("x_forwarded", "expected"),
    [
        ([("x-forwarded-for", "1.2.3.4")], (("1.2.3.4", 0), "http")),
        ([("x-forwarded-for", "10.0.0.5")], (("10.0.0.5", 0), "http")),
        ([("x-forwarded-proto", "http")], (CLIENT, "http")),
        (
            [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "http")],
            (("1.2.3.4", 0), "http"),
        ),
    ],
)
def test_x_forwarded_headers_take_precedence_over_forwarded(forwarded_first, x_forwarded, expected):
    headers = [*x_forwarded, ("forwarded", "for=5.6.7.8;proto=https")]
    if forwarded_first:
        headers.reverse()
    assert apply(["10.0.0.0/8"], headers) == expected


def test_repeated_forwarded_headers_form_one_list():
    headers = [("forwarded", "for=6.6.6.6"), ("forwarded", "for=1.2.3.4, for=10.0.0.2")]
    assert apply(["10.0.0.0/8"], headers)[0] == ("1.2.3.4", 0)


def test_whitespace_and_empty_entries():
    headers = [("x-forwarded-for", " 1.2.3.4 ,  , 10.0.0.2 ")]
    assert apply(["10.0.0.0/8"], headers)[0] == ("1.2.3.4", 0)


# -- end to end ------------------------------------------------------------------------

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def scope_of(server, headers):
    return httpx.get(server.url + "/scope", headers=headers).json()


def test_proxy_headers_off_by_default(start_server):
    server = start_server("httpapp:app")
    scope = scope_of(server, FORWARDED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_proxy_headers_from_trusted_address(start_server):
    server = start_server("httpapp:app", "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")
    scope = scope_of(server, FORWARDED)
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"
    # The headers themselves still reach the app.
    assert ["x-forwarded-for", "203.0.113.7"] in scope["headers"]


def test_proxy_headers_trusted_by_default_from_localhost(start_server):
    server = start_server("httpapp:app", "--proxy-headers")
    assert scope_of(server, FORWARDED)["client"] == ["203.0.113.7", 0]


def test_proxy_headers_from_trusted_network(start_server):
    server = start_server(
        "httpapp:app", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8,127.0.0.0/8"
    )
    scope = scope_of(server, {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'})
    assert scope["client"] == ["2001:db8::1", 0]
    assert scope["scheme"] == "https"


def test_proxy_headers_from_untrusted_address_are_ignored(start_server):
    server = start_server("httpapp:app", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8")
    scope = scope_of(server, FORWARDED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["client"][1] != 0
    assert scope["scheme"] == "http"
    scope = scope_of(server, {"Forwarded": "for=203.0.113.7;proto=https"})
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_proxy_headers_trust_everyone(start_server):
    server = start_server("httpapp:app", "--proxy-headers", "--forwarded-allow-ips", "*")
    assert scope_of(server, FORWARDED)["client"] == ["203.0.113.7", 0]


def test_proxy_headers_in_the_access_log(start_server):
    server = start_server("httpapp:app", "--proxy-headers")
    scope_of(server, FORWARDED)
    wait_until(lambda: '203.0.113.7:0 - "GET /scope HTTP/1.1" 200' in server.output(), timeout=5)
