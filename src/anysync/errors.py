"""Typed errors. Each carries a one-line message for the user and an exit code.

The CLI maps them to exit codes in one place; the RPC layers map gRPC status codes to
and from them in one place each (anysync.client.wire, anysync.server.rpcbase: `STATUS`).

An error the server sends also carries its class's `reason`, a stable string in the
call's trailing metadata (REASON_KEY), so that the client rebuilds the same class even
where two classes share a status code (quota exceeded and rate limited). `WIRE_ERRORS`
and `by_reason` are the one table both sides use.
"""

from __future__ import annotations

from typing import ClassVar

# The trailing-metadata key of an error's reason (gRPC keys are lower case).
REASON_KEY = "anysync-reason"


class AnySyncError(Exception):
    """Base of every error a user may see. `str(err)` is the message to print."""

    exit_code = 1
    # The stable name sent over the wire; "" = none: the receiver goes by the status code.
    reason: ClassVar[str] = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(AnySyncError):
    exit_code = 2


class WrongPassword(AnySyncError):
    exit_code = 3
    reason = "wrong_password"

    def __init__(self, message: str = "wrong password") -> None:
        super().__init__(message)


class KeysLocked(AnySyncError):
    """This device's keys are protected (desktop keyring) and cannot be opened now."""

    exit_code = 3


class ServerUnreachable(AnySyncError):
    exit_code = 4


class TlsMismatch(AnySyncError):
    """The server presented a certificate other than the pinned one."""

    exit_code = 4


class AuthError(AnySyncError):
    """Token missing, unknown or revoked."""

    exit_code = 5
    reason = "auth"


class PermissionDenied(AnySyncError):
    exit_code = 5
    reason = "permission_denied"


class RateLimited(AnySyncError):
    exit_code = 5
    reason = "rate_limited"


class IntegrityError(AnySyncError):
    """Stored data failed authentication or does not match its ID: tampered or corrupt."""

    exit_code = 6


class RollbackError(IntegrityError):
    """The server offered a ref head that does not descend from what this device saw."""


class NotFound(AnySyncError):
    exit_code = 7
    reason = "not_found"


class AlreadyExists(AnySyncError):
    exit_code = 7
    reason = "already_exists"


class Conflict(AnySyncError):
    """A compare-and-swap lost the race."""

    exit_code = 8
    reason = "conflict"


class QuotaExceeded(AnySyncError):
    exit_code = 9
    reason = "quota_exceeded"


class TooManyStreams(AnySyncError):
    """A per-address, per-account or server-wide cap on concurrent calls is reached."""

    exit_code = 5
    reason = "too_many_streams"


class StreamIdle(AnySyncError):
    """The server closed an upload that sent no data for too long."""

    exit_code = 4
    reason = "stream_idle"


class ServerOutOfSpace(AnySyncError):
    """The server's disk (its object store or its database) is full."""

    exit_code = 1
    reason = "out_of_space"

    def __init__(self, message: str = "the server is out of disk space") -> None:
        super().__init__(message)


class GcRaced(Conflict):
    """Packs were condemned since this session looked up its blobs (or planned its prune):
    the caller checks again what the server holds, then retries."""

    reason = "gc_generation_changed"


class RefsChanged(Conflict):
    """A ref changed between a prune's mark and its condemnation: mark the new heads."""

    reason = "refs_changed"


class NeedsManage(PermissionDenied):
    """The call deletes or rewrites: it needs a device with the manage right, or a fresh
    password proof (`Elevate`)."""

    reason = "needs_manage"


class AppendOnly(PermissionDenied):
    """The device is append-only: it may add, never delete or rewind."""

    reason = "append_only"


class ClientTooOld(AnySyncError):
    """The account has been pruned; this client does not send its garbage-collection
    generation with each commit, so it may only read."""

    reason = "client_too_old"

    def __init__(self, message: str = "upgrade anysync: this account has been pruned") -> None:
        super().__init__(message)


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


# Every error the server sends typed. Not here: errors the client finds on its own
# (unreachable server, TLS, integrity, local state) and the server's INVALID_ARGUMENT
# errors (UsageError, IntegrityError), which the client reports as its request refused.
WIRE_ERRORS: tuple[type[AnySyncError], ...] = (
    AuthError,
    WrongPassword,
    PermissionDenied,
    RateLimited,
    NotFound,
    AlreadyExists,
    Conflict,
    QuotaExceeded,
    TooManyStreams,
    StreamIdle,
    ServerOutOfSpace,
    GcRaced,
    RefsChanged,
    NeedsManage,
    AppendOnly,
    ClientTooOld,
)
_BY_REASON = {cls.reason: cls for cls in WIRE_ERRORS}
assert len(_BY_REASON) == len(WIRE_ERRORS) and "" not in _BY_REASON, "reasons must be unique"


def by_reason(reason: str) -> type[AnySyncError] | None:
    """The class a wire reason names; None for one this version does not know."""
    return _BY_REASON.get(reason)
