"""The master: sockets, worker processes, health, reloads, systemd."""

from ._master import Master, preflight

__all__ = ["Master", "preflight"]
