"""PresignedHttp.abort() ends a request that a silent object store would hold for minutes."""

from __future__ import annotations

import socket
import threading

import pytest

from anysync.store.presigned import Interrupted, PresignedHttp

SAFETY_NET = 30.0  # against hanging only; the request's own timeout is far longer


def test_abort_ends_a_request_waiting_on_a_silent_store() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    request_arrived = threading.Event()
    held: list[socket.socket] = []

    def silent_store() -> None:
        conn, _ = listener.accept()
        held.append(conn)  # open, read, never answered
        while b"\r\n\r\n" not in conn.recv(65536):
            pass
        request_arrived.set()

    threading.Thread(target=silent_store, daemon=True).start()
    aborted = threading.Event()
    http = PresignedHttp(aborted, attempts=6, timeout=600.0)
    outcome: list[BaseException | bytes] = []

    def fetch() -> None:
        try:
            outcome.append(http.request("GET", f"http://127.0.0.1:{port}/pack?sig=x"))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    try:
        assert request_arrived.wait(SAFETY_NET)
        aborted.set()
        http.abort()
        worker.join(SAFETY_NET)
        assert not worker.is_alive(), "the request still waits after abort()"
        assert len(outcome) == 1 and isinstance(outcome[0], Interrupted), outcome
    finally:
        for s in [listener, *held]:
            s.close()


def test_a_failure_after_abort_is_not_retried() -> None:
    aborted = threading.Event()
    aborted.set()
    with pytest.raises(Interrupted):
        # Nothing listens there: the refused connection is not retried once aborted.
        PresignedHttp(aborted, attempts=6, timeout=600.0).request("GET", "http://127.0.0.1:9/x")
