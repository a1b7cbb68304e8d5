"""Which forwarding headers to believe, and what they say.

Pure functions over the request's client address and headers: a client whose
address is in ``forwarded_allow_ips`` may tell us the original client and
scheme through ``X-Forwarded-For``/``X-Forwarded-Proto`` or ``Forwarded``
(RFC 7239); anyone else is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """A set of addresses and networks allowed to forward client information."""

    __slots__ = ("_all", "_hosts", "_networks")

    def __init__(self, entries: Iterable[str]) -> None:
        self._all = False
        self._hosts: set[str] = set()
        self._networks: list[_Network] = []
        for entry in entries:
            if entry == "*":
                self._all = True
            elif "/" in entry:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                self._hosts.add(str(ipaddress.ip_address(entry)))

    def __contains__(self, host: object) -> bool:
        if self._all:
            return True
        if not isinstance(host, str):
            return False
        if host in self._hosts:
            return True
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def _parse_forwarded(value: str) -> tuple[list[str], str | None]:
    """``for`` addresses (in order) and the last ``proto`` of a Forwarded header."""
    hosts: list[str] = []
    proto = None
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, raw = pair.strip().partition("=")
            raw = raw.strip().strip('"')
            key = key.strip().lower()
            if key == "for" and raw:
                if raw.startswith("["):
                    raw = raw[1 : raw.find("]")] if "]" in raw else raw[1:]
                elif raw.count(":") == 1:
                    raw = raw.partition(":")[0]
                hosts.append(raw)
            elif key == "proto" and raw:
                proto = raw.lower()
    return hosts, proto


def apply_proxy_headers(
    trusted: TrustedProxies,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    scheme: str,
) -> tuple[tuple[str, int] | None, str]:
    """The ``(client, scheme)`` the request should see.

    The client is the right-most address in the forwarding chain that is not
    itself a trusted proxy: addresses to its left were written by the client
    and can be forged.
    """
    if client is None or client[0] not in trusted:
        return client, scheme
    chain: list[str] = []
    proto: str | None = None
    forwarded: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            chain.extend(h.strip() for h in value.decode("latin-1").split(","))
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
        elif name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
    if forwarded and not chain and proto is None:
        # X-Forwarded-* win over Forwarded, whatever order the headers come in.
        chain, proto = _parse_forwarded(",".join(forwarded))
    if proto in ("http", "https", "ws", "wss"):
        websocket = scheme in ("ws", "wss")
        secure = proto in ("https", "wss")
        scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    for host in reversed(chain):
        if host and host not in trusted:
            return (host, 0), scheme
    if chain and chain[0]:
        return (chain[0], 0), scheme
    return client, scheme
