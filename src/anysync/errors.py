"""Typed errors. Each carries a one-line message for the user and an exit code.

The CLI maps them to exit codes in one place; the RPC layers map gRPC status codes to
and from them in one place each (anysync.client.remote, anysync.server.service).
"""

from __future__ import annotations


class AnySyncError(Exception):
    """Base of every error a user may see. `str(err)` is the message to print."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(AnySyncError):
    exit_code = 2


class WrongPassword(AnySyncError):
    exit_code = 3

    def __init__(self, message: str = "wrong password") -> None:
        super().__init__(message)


class ServerUnreachable(AnySyncError):
    exit_code = 4


class TlsMismatch(AnySyncError):
    """The server presented a certificate other than the pinned one."""

    exit_code = 4


class AuthError(AnySyncError):
    """Token missing, unknown or revoked."""

    exit_code = 5


class PermissionDenied(AnySyncError):
    exit_code = 5


class RateLimited(AnySyncError):
    exit_code = 5


class IntegrityError(AnySyncError):
    """Stored data failed authentication or does not match its ID: tampered or corrupt."""

    exit_code = 6


class RollbackError(IntegrityError):
    """The server offered a ref head that does not descend from what this device saw."""


class NotFound(AnySyncError):
    exit_code = 7


class AlreadyExists(AnySyncError):
    exit_code = 7


class Conflict(AnySyncError):
    """A compare-and-swap lost the race."""

    exit_code = 8


class QuotaExceeded(AnySyncError):
    exit_code = 9


class LocalStateError(AnySyncError):
    """The client's own files are missing or unreadable."""

    exit_code = 10


class HostilePath(IntegrityError):
    """A path coming out of the repository that would escape the target."""


class RestoreIncomplete(AnySyncError):
    """Some files could not be restored; the rest are complete."""

    exit_code = 11


class DiskFull(AnySyncError):
    exit_code = 12


class PartialSnapshot(AnySyncError):
    """The snapshot was saved, but some paths could not be read: they are not in it.

    Not raised: `anysync backup` prints the snapshot and the skipped paths, then exits
    with this code."""

    exit_code = 13
