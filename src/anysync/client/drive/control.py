"""How the CLI talks to a running drive daemon: a Unix socket in the abstract namespace
(named after the drive's state directory: a file path could pass the 108-byte limit of
socket paths), answering only processes of the same user (SO_PEERCRED) or root; one
JSON request line, one JSON answer line, then the connection closes.

Requests (paths are relative to the drive's root, UTF-8 with surrogateescape):
    {"op": "status"}                        → the daemon's status (Drive.status)
    {"op": "state", "paths": [...]}         → {"states": [...]} one per path
    {"op": "pin", "path": P, "on": bool}    → {} once a pinned sub-tree is downloaded
    {"op": "evict", "path": P, "unpin": b}  → {} (refused for pinned files without unpin)
    {"op": "flush"}                         → {} once every closed change is committed
Errors: {"error": CODE, "message": one line}; CODE is "pinned", "not-found",
"not-committed", "unavailable" or "bad-request".

Why not extended attributes on the mount, as SeaDrive and OpenVFS do: `ls -l` asks every
file for security.selinux and its ACL; each question is a round trip into this Python
daemon, and 100,000 files took 10 s instead of under one (measured). Answering ENOSYS to
every xattr request makes the kernel stop asking for the rest of the mount.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI side runs without trio (the drive is an optional extra)
    import trio

    from anysync.client.drive.daemon import Drive

log = logging.getLogger(__name__)

MAX_REQUEST = 16 * 1024 * 1024


class ControlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_path(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


def decode_path(text: object) -> bytes:
    if not isinstance(text, str):
        raise ControlError("bad-request", "a path must be a string")
    path = text.encode("utf-8", "surrogateescape").strip(b"/")
    if any(part in (b"", b".", b"..") for part in path.split(b"/")) and path:
        raise ControlError("bad-request", f"not a path inside the drive: {text!r}")
    return path


# ---------------------------------------------------------------------- daemon side


def address(root: Path) -> str:
    return "\0anysync-drive-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]


def _peer_uid(conn: trio.socket.SocketType) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def serve(drive: Drive, root: Path, *, task_status: Any) -> None:
    import trio

    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(address(root))
    listener.listen(16)
    task_status.started()
    me = os.getuid()
    async with trio.open_nursery() as nursery:
        while True:
            conn, _ = await listener.accept()
            if _peer_uid(conn) not in (me, 0):
                conn.close()  # another user's process: the drive is not theirs
                continue
            nursery.start_soon(_answer, drive, trio.SocketStream(conn))


async def _answer(drive: Drive, stream: trio.SocketStream) -> None:
    async with stream:
        buf = b""
        while b"\n" not in buf and len(buf) < MAX_REQUEST:
            piece = await stream.receive_some(65536)
            if not piece:
                return
            buf += piece
        try:
            request = json.loads(buf.partition(b"\n")[0])
            if not isinstance(request, dict):
                raise ControlError("bad-request", "a request is a JSON object")
            answer: dict[str, Any] = await _dispatch(drive, request)
        except ControlError as exc:
            answer = {"error": exc.code, "message": exc.message}
        except ValueError:
            answer = {"error": "bad-request", "message": "a request is one line of JSON"}
        await stream.send_all(json.dumps(answer).encode() + b"\n")


async def _dispatch(drive: Drive, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "status":
        return drive.status()
    if op == "state":
        paths = request.get("paths")
        if not isinstance(paths, list):
            raise ControlError("bad-request", "state needs a list of paths")
        return {"states": [await drive.state_at(decode_path(p)) for p in paths]}
    if op == "pin":
        await drive.set_pin(
            await drive.existing(decode_path(request.get("path"))), bool(request.get("on"))
        )
        return {}
    if op == "evict":
        path = await drive.existing(decode_path(request.get("path")))
        unpin = bool(request.get("unpin"))
        if drive.pinned(path) and not unpin:
            raise ControlError("pinned", "it is pinned")
        await drive.evict(path, unpin=unpin)
        return {}
    if op == "flush":
        if not await drive.flush():
            raise ControlError("not-committed", "changes could not be committed")
        return {}
    raise ControlError("bad-request", f"unknown request {op!r}")


# ---------------------------------------------------------------------- CLI side


def call(root: Path, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """One request to the daemon of the drive whose state is in `root`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(address(root))
        except OSError as exc:
            raise ControlError(
                "unavailable", f"the drive daemon does not answer ({exc.strerror})"
            ) from None
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            piece = s.recv(65536)
            if not piece:
                raise ControlError("unavailable", "the drive daemon hung up")
            buf += piece
    answer = json.loads(buf)
    if not isinstance(answer, dict):
        raise ControlError("unavailable", "the drive daemon answered nonsense")
    if "error" in answer:
        raise ControlError(str(answer["error"]), str(answer.get("message", "")))
    return answer
