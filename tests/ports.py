"""Free TCP ports on 127.0.0.1 for the servers the tests start."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(count: int, twins: int = 0) -> int:
    """A base port B with B..B+count-1 free, and B+twins..B+twins+count-1 too when twins
    is given (SeaweedFS's `weed mini` listens on each port + 10000 for gRPC)."""
    for _ in range(200):
        base = free_port()
        ports = [base + i for i in range(count)]
        ports += [base + twins + i for i in range(count)] if twins else []
        if max(ports) <= 65535 and all(is_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range")
