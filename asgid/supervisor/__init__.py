"""The master: sockets, worker processes, health, reloads, systemd."""

from ._master import Master

__all__ = ["Master"]
