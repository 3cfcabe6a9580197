"""Messages and failed calls of the gRPC wire, turned into domain types and errors.

Pure conversions, no connection: remote.py makes the calls and uses these on what
comes back. A failed call maps to anysync.errors by the reason the server sent, else
by its gRPC status code (`error_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from anysync.client.repo.pack import PackedBlob
from anysync.client.repo.refs import RefVersion
from anysync.client.repo.repository import CondemnResult, PackInfo, RepairResult
from anysync.errors import (
    REASON_KEY,
    AlreadyExists,
    AnySyncError,
    AuthError,
    Conflict,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServerUnreachable,
    TlsMismatch,
    by_reason,
)
from anysync.types import BlobId, BlobLocation, KdfParams, PackId, Ref
from anysync.v1 import anysync_pb2 as pb


@dataclass(frozen=True)
class LoginResult:
    user_id: str
    device_id: int
    sealed_token: bytes
    master_keys: bytes
    kdf: KdfParams


@dataclass(frozen=True)
class DeviceInfo:
    id: int
    name: str
    created_at: int
    last_seen_at: int
    revoked: bool
    current: bool
    rights: str = ""  # "append", "write" or "manage"; "" from a server before rights


@dataclass(frozen=True)
class AccountInfo:
    user_id: str
    email: str
    device_id: int
    used_bytes: int
    quota_bytes: int
    master_keys: bytes
    kdf: KdfParams
    rights: str = ""  # the calling device's: "append", "write" or "manage"
    elevated_until: int = 0  # unix seconds; 0 = not elevated
    gc_generation: int = 0
    ref_seq: int = 0
    condemned_bytes: int = 0  # charged bytes condemned, awaiting deletion
    grace_seconds: int = 0
    min_pack_age_seconds: int = 0


def kdf_to(k: KdfParams) -> pb.KdfParams:
    return pb.KdfParams(salt=k.salt, log_n=k.log_n, r=k.r, p=k.p)


def kdf_from(k: pb.KdfParams) -> KdfParams:
    return KdfParams(k.salt, k.log_n, k.r, k.p)


def login_from(r: pb.LoginResponse) -> LoginResult:
    return LoginResult(r.user_id, r.device_id, r.sealed_token, r.master_keys, kdf_from(r.kdf))


def device_from(d: pb.Device) -> DeviceInfo:
    return DeviceInfo(d.id, d.name, d.created_at, d.last_seen_at, d.revoked, d.current, d.rights)


def account_from(r: pb.WhoamiResponse) -> AccountInfo:
    return AccountInfo(
        r.user_id,
        r.email,
        r.device_id,
        r.used_bytes,
        r.quota_bytes,
        r.master_keys,
        kdf_from(r.kdf),
        rights=r.rights,
        elevated_until=r.elevated_until,
        gc_generation=r.gc_generation,
        ref_seq=r.ref_seq,
        condemned_bytes=r.condemned_bytes,
        grace_seconds=r.grace_seconds,
        min_pack_age_seconds=r.min_pack_age_seconds,
    )


def pack_info_from(p: pb.PackInfo) -> PackInfo:
    pack_id = PackId(p.pack_id)
    entries = tuple(BlobLocation(BlobId(e.blob_id), pack_id, e.offset, e.length) for e in p.entries)
    return PackInfo(pack_id, p.size, p.charged, p.created_at, int(p.state), p.condemned_at, entries)


def condemn_result_from(r: pb.CondemnPacksResponse) -> CondemnResult:
    return CondemnResult(
        r.gc_generation, r.condemned, r.skipped_young, r.condemned_bytes, r.reap_at
    )


def ref_version_from(v: pb.RefVersion) -> RefVersion:
    return RefVersion(v.name, v.version, BlobId(v.commit_id), v.seq, v.device_id, v.by_manage, v.at)


def ref_from(r: pb.Ref) -> Ref:
    return Ref(r.name, BlobId(r.commit_id), r.version, r.updated_at, r.updated_by_device)


def locations_from(resp: pb.FindBlobsResponse) -> dict[BlobId, BlobLocation]:
    out = {}
    for f in resp.found:
        bid = BlobId(f.blob_id)
        out[bid] = BlobLocation(bid, PackId(f.pack_id), f.offset, f.length)
    return out


def repair_result_from(r: pb.RepairIndexResponse) -> RepairResult:
    return RepairResult(r.added, r.removed, r.gc_generation)


def pack_entries(entries: Sequence[PackedBlob]) -> list[pb.PackEntry]:
    return [pb.PackEntry(blob_id=e.blob_id.raw, offset=e.offset, length=e.length) for e in entries]


def pack_header(
    size: int, sha256: bytes, entries: Sequence[PackedBlob], maintenance: bool = False
) -> pb.PackHeader:
    return pb.PackHeader(
        size=size,
        sha256=sha256,
        maintenance=maintenance,
        entries=pack_entries(entries),
    )


def error_for(exc: grpc.RpcError, address: str) -> AnySyncError:
    """The error to raise for a failed call to the server at `address`."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    typed = by_reason(_reason(exc))
    if typed is not None:  # the server named the error's type
        return typed(details)
    if code is grpc.StatusCode.UNAVAILABLE:
        if any(w in details.lower() for w in ("handshake", "certificate", "ssl", "tls")):
            return TlsMismatch(
                f"the server at {address} did not present the pinned certificate; if it "
                "was reinstalled, run `anysync login` again with --fingerprint (from "
                "`anysync-server fingerprint` on the server)"
            )
        return ServerUnreachable(
            f"cannot reach the server at {address} ({details.strip() or 'unavailable'}); "
            "is anysync-server running?"
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServerUnreachable(f"the server at {address} did not answer in time")
    # No reason: an error gRPC made itself, one the server sends untyped, or a server
    # from before reasons. The status code is all there is to go by.
    simple: dict[grpc.StatusCode, type[AnySyncError]] = {
        grpc.StatusCode.UNAUTHENTICATED: AuthError,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
        grpc.StatusCode.ABORTED: Conflict,
    }
    if code in simple:
        return simple[code](details)
    if code is grpc.StatusCode.OUT_OF_RANGE:
        return NotFound(f"the server has no such data: {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _untyped_exhausted(details)
    return AnySyncError(f"the server refused the request: {details} ({code.name})")


def _reason(exc: grpc.RpcError) -> str:
    """The reason the server sent with a failed call (anysync.errors); "" for none."""
    trailing_metadata = getattr(exc, "trailing_metadata", None)
    for key, value in (trailing_metadata() if trailing_metadata else None) or ():
        if key == REASON_KEY:
            return str(value)
    return ""


def _untyped_exhausted(details: str) -> AnySyncError:
    """RESOURCE_EXHAUSTED without a reason. A server from before reasons sends its quota
    and login-limit errors so, told apart only by their text, and its full disk; today's
    server names each of its own (quota_exceeded, rate_limited, too_many_streams,
    out_of_space), so only gRPC's own errors come this way (a message over the size
    limit)."""
    if "quota" in details.lower():
        return QuotaExceeded(details)
    if "too many" in details.lower():
        return RateLimited(details)
    return AnySyncError(f"the server cannot take this now: {details}")
