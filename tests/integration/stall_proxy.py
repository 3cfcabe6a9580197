"""A TCP proxy on loopback that can stall a transfer for real, as a dead network does.

It forwards bytes both ways, unchanged (TLS goes through it and still verifies against
the server's pinned certificate). After `stall_after(up=N)` it forwards N more bytes
client→server and then stops reading from the client, without closing anything: the
client's socket buffers fill and its send blocks, exactly like a link that went silent.
`down=N` does the same server→client. `stalled` is set once the budget has run out and
a byte is being held back; `release()` forwards everything again.
"""

from __future__ import annotations

import contextlib
import socket
import threading

PIECE = 64 * 1024


class _Budget:
    """Bytes one direction may still forward; None = no limit."""

    def __init__(self) -> None:
        self.left: int | None = None


class StallProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._cond = threading.Condition()
        self._up = _Budget()
        self._down = _Budget()
        self._closed = False
        self.stalled = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def stall_after(self, *, up: int | None = None, down: int | None = None) -> None:
        with self._cond:
            self._up.left, self._down.left = up, down
            self.stalled.clear()

    def release(self) -> None:
        with self._cond:
            self._up.left = self._down.left = None
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._cond:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for src, dst, budget in ((client, server, self._up), (server, client, self._down)):
                threading.Thread(
                    target=self._pump, args=(src, dst, budget), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: _Budget) -> None:
        try:
            while data := src.recv(PIECE):
                view = memoryview(data)
                while view:
                    allowed = self._wait_for_budget(budget, len(view))
                    if allowed == 0:
                        return  # closed
                    dst.sendall(view[:allowed])
                    view = view[allowed:]
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def _wait_for_budget(self, budget: _Budget, wanted: int) -> int:
        """How many bytes may go now (blocks while stalled); 0 once the proxy is closed."""
        with self._cond:
            while not self._closed and budget.left == 0:
                self.stalled.set()
                self._cond.wait()
            if self._closed:
                return 0
            if budget.left is None:
                return wanted
            allowed = min(budget.left, wanted)
            budget.left -= allowed
            return allowed
