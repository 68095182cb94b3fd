"""Loopback port checks shared by the emulated devices and their manager."""

from __future__ import annotations

import socket


def port_accepts(port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False
