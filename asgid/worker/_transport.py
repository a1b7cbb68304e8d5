"""Ending a connection whose peer has stopped reading."""

from __future__ import annotations

import asyncio
import socket
import struct

_RESET_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on with 0 s: close() sends RST


def reset(transport: asyncio.WriteTransport) -> None:
    """Drop a connection whose peer reads nothing, and what it would not read.

    ``abort()`` discards only asyncio's buffer: the kernel would go on
    sending what it holds to the peer from FIN-WAIT-1 (megabytes per socket
    on a fast link) until its own timers give up. A zero linger time makes
    the close a reset that frees it at once.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
        except OSError:
            pass  # already gone
    transport.abort()
