"""What a listening socket tells about the connections it will accept."""

from __future__ import annotations

import socket
from pathlib import Path

from asgid._sockets import shared_local_address
from asgid.worker._protocol import local_address


def test_a_socket_bound_to_one_address_shares_it_with_its_connections():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert local_address(shared_local_address(sock)) == ("127.0.0.1", port)


def test_a_wildcard_bind_leaves_each_connection_to_look_up_its_own():
    # Bound, never listening: nothing can connect to it.
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        assert shared_local_address(sock) is None


def test_a_unix_socket_shares_its_path(tmp_path: Path):
    path = str(tmp_path / "s")
    if len(path) > 100:  # AF_UNIX paths are limited to ~100 bytes
        path = f"/tmp/asgid-unit-{id(tmp_path)}.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)
        try:
            assert local_address(shared_local_address(sock)) == (path, None)
        finally:
            Path(path).unlink()


def test_ipv6_addresses_lose_flowinfo_and_scope_id():
    assert local_address(("::1", 8000, 0, 0)) == ("::1", 8000)
    assert local_address(None) is None
