"""The client's side of the wire: gRPC over TLS with a pinned certificate.

The only client module that imports generated protobuf code. Converts messages to
domain types explicitly and maps failed calls to anysync.errors in one place (`_error`):
by the reason the server sent, else by the gRPC status code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from anysync import tls
from anysync.client.repo.pack import PackedBlob
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
    UsageError,
    by_reason,
)
from anysync.store.presigned import DirectFailed, Interrupted, PresignedHttp
from anysync.types import BlobId, BlobLocation, KdfParams, PackId, Ref
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as rpc

log = logging.getLogger(__name__)

DEFAULT_PORT = 65065
MESSAGE_LIMIT = 16 * 1024 * 1024
STREAM_PIECE = 1024 * 1024
TIMEOUT = 120.0
# Presigned transfers: attempts and backoff before falling back to the server's stream.
DIRECT_ATTEMPTS = int(os.environ.get("ANYSYNC_DIRECT_ATTEMPTS", "6"))
DIRECT_TIMEOUT = 60.0

T = TypeVar("T")


def split_address(address: str) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        return address.strip("[]"), DEFAULT_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise UsageError(f"not a server address: {address!r} (expected HOST:PORT)") from None


def fetch_certificate(address: str) -> bytes:
    """The server's certificate as PEM, before trusting it (to pin it)."""
    host, port = split_address(address)
    try:
        return ssl.get_server_certificate((host, port), timeout=15).encode("ascii")
    except (OSError, ssl.SSLError) as exc:
        raise ServerUnreachable(
            f"cannot reach the server at {address}: {exc.strerror or exc}; "
            "is anysync-server running and the address right?"
        ) from None


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


@dataclass(frozen=True)
class AccountInfo:
    user_id: str
    email: str
    device_id: int
    used_bytes: int
    quota_bytes: int
    master_keys: bytes
    kdf: KdfParams


class Remote:
    """One server connection. Thread-safe (gRPC channels are)."""

    def __init__(self, address: str, cert_pem: bytes, token: bytes | None = None) -> None:
        self.address = address
        host, port = split_address(address)
        creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        self._channel = grpc.secure_channel(
            f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
            creds,
            options=[
                # We trust exactly the pinned certificate; the name check adds nothing.
                ("grpc.ssl_target_name_override", tls.dns_name_for_verification(cert_pem)),
                ("grpc.max_receive_message_length", MESSAGE_LIMIT),
                ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ],
        )
        self._metadata = (("authorization", f"Bearer {token.hex()}"),) if token else ()
        # The direct data path (presigned URLs to an S3 store) is used until it fails;
        # then packs go through the server for the rest of this connection.
        self._direct = os.environ.get("ANYSYNC_DIRECT_STORE", "1") != "0"
        self._urls: dict[PackId, tuple[str, float]] = {}
        self._urls_lock = threading.Lock()
        self._aborted = threading.Event()
        self._http = PresignedHttp(self._aborted, DIRECT_ATTEMPTS, DIRECT_TIMEOUT)
        self._accounts = rpc.AccountsStub(self._channel)
        self._devices = rpc.DevicesStub(self._channel)
        self._storage = rpc.StorageStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def abort(self) -> None:
        """Ctrl-C: end every transfer in flight at once, on any thread; later calls raise
        Interrupted. Closing the channel cancels its active RPCs; the direct path's
        sockets are shut down and its backoff sleeps cut short."""
        self._aborted.set()
        self._channel.close()
        self._http.abort()

    def _call(self, method: Callable[..., T], request: Any, **kwargs: Any) -> T:
        if self._aborted.is_set():
            raise Interrupted()
        try:
            return method(request, metadata=self._metadata, timeout=TIMEOUT, **kwargs)
        except grpc.RpcError as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: grpc.RpcError) -> AnySyncError:
        """The error to raise for a failed RPC: an aborted call's is the abort's."""
        return Interrupted() if self._aborted.is_set() else self._error(exc)

    def _error(self, exc: grpc.RpcError) -> AnySyncError:
        code: grpc.StatusCode = exc.code()
        details: str = exc.details() or ""
        typed = by_reason(_reason(exc))
        if typed is not None:  # the server named the error's type
            return typed(details)
        if code is grpc.StatusCode.UNAVAILABLE:
            if any(w in details.lower() for w in ("handshake", "certificate", "ssl", "tls")):
                return TlsMismatch(
                    f"the server at {self.address} did not present the pinned certificate; "
                    "if the server was re-installed, log in again to pin its new fingerprint"
                )
            return ServerUnreachable(
                f"cannot reach the server at {self.address} ({details.strip() or 'unavailable'}); "
                "is anysync-server running?"
            )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServerUnreachable(f"the server at {self.address} did not answer in time")
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

    # ---------------------------------------------------------------- accounts

    def pre_login(self, email: str) -> KdfParams:
        resp = self._call(self._accounts.PreLogin, pb.PreLoginRequest(email=email))
        return _kdf_from(resp.kdf)

    def signup(
        self,
        *,
        email: str,
        invite: str,
        user_id: str,
        kdf: KdfParams,
        login_secret: bytes,
        master_keys: bytes,
        device_name: str,
        device_public_key: bytes,
    ) -> LoginResult:
        req = pb.SignupRequest(
            email=email,
            invite=invite,
            user_id=user_id,
            kdf=_kdf_to(kdf),
            login_secret=login_secret,
            master_keys=master_keys,
            device_name=device_name,
            device_public_key=device_public_key,
        )
        return _login_from(self._call(self._accounts.Signup, req))

    def login(
        self, *, email: str, login_secret: bytes, device_name: str, device_public_key: bytes
    ) -> LoginResult:
        req = pb.LoginRequest(
            email=email,
            login_secret=login_secret,
            device_name=device_name,
            device_public_key=device_public_key,
        )
        return _login_from(self._call(self._accounts.Login, req))

    def change_password(
        self,
        *,
        old_login_secret: bytes,
        new_login_secret: bytes,
        new_kdf: KdfParams,
        new_master_keys: bytes,
    ) -> None:
        req = pb.ChangePasswordRequest(
            old_login_secret=old_login_secret,
            new_login_secret=new_login_secret,
            new_kdf=_kdf_to(new_kdf),
            new_master_keys=new_master_keys,
        )
        self._call(self._accounts.ChangePassword, req)

    # ---------------------------------------------------------------- devices

    def list_devices(self) -> list[DeviceInfo]:
        resp = self._call(self._devices.ListDevices, pb.ListDevicesRequest())
        return [
            DeviceInfo(d.id, d.name, d.created_at, d.last_seen_at, d.revoked, d.current)
            for d in resp.devices
        ]

    def revoke_device(self, device_id: int) -> None:
        self._call(self._devices.RevokeDevice, pb.RevokeDeviceRequest(device_id=device_id))

    def whoami(self) -> AccountInfo:
        r = self._call(self._devices.Whoami, pb.WhoamiRequest())
        return AccountInfo(
            r.user_id,
            r.email,
            r.device_id,
            r.used_bytes,
            r.quota_bytes,
            r.master_keys,
            _kdf_from(r.kdf),
        )

    # ---------------------------------------------------------------- storage

    def find_blobs(self, ids: Sequence[BlobId]) -> dict[BlobId, BlobLocation]:
        if not ids:
            return {}
        resp = self._call(
            self._storage.FindBlobs, pb.FindBlobsRequest(blob_ids=[i.raw for i in ids])
        )
        out = {}
        for f in resp.found:
            bid = BlobId(f.blob_id)
            out[bid] = BlobLocation(bid, PackId(f.pack_id), f.offset, f.length)
        return out

    def upload_pack(self, data: bytes, sha256: bytes, entries: Sequence[PackedBlob]) -> PackId:
        header = pb.PackHeader(
            size=len(data),
            sha256=sha256,
            entries=[
                pb.PackEntry(blob_id=e.blob_id.raw, offset=e.offset, length=e.length)
                for e in entries
            ],
        )
        if self._direct:
            req = pb.BeginUploadRequest(header=header, md5=hashlib.md5(data).digest())  # noqa: S324 - S3's ETag
            begin = self._call(self._storage.BeginUpload, req)
            if not begin.direct:
                self._direct = False
            else:
                try:
                    self._http.request("PUT", begin.url, data=data)
                except DirectFailed as exc:
                    self._give_up_direct(exc)
                else:
                    resp = self._call(
                        self._storage.CommitUpload, pb.CommitUploadRequest(pack_id=begin.pack_id)
                    )
                    log.info("pack %s went directly to the object store", resp.pack_id.hex()[:8])
                    return PackId(resp.pack_id)

        def messages() -> Iterator[pb.UploadPackRequest]:
            yield pb.UploadPackRequest(header=header)
            view = memoryview(data)
            for start in range(0, len(data), STREAM_PIECE):
                yield pb.UploadPackRequest(data=bytes(view[start : start + STREAM_PIECE]))

        resp = self._call(self._storage.UploadPack, messages())
        return PackId(resp.pack_id)

    def _give_up_direct(self, exc: Exception) -> None:
        log.warning(
            "cannot reach the object store directly (%s); moving packs through the server instead",
            exc,
        )
        self._direct = False

    def _pack_url(self, pack_id: PackId) -> str | None:
        with self._urls_lock:
            cached = self._urls.get(pack_id)
        if cached and cached[1] > time.time() + 60:
            return cached[0]
        resp = self._call(self._storage.GetPackUrl, pb.GetPackUrlRequest(pack_id=pack_id.raw))
        if not resp.direct:
            self._direct = False
            return None
        with self._urls_lock:
            self._urls[pack_id] = (resp.url, float(resp.expires_at))
        return str(resp.url)

    def read_pack(self, pack_id: PackId, offset: int, length: int) -> bytes:
        if self._direct:
            url = self._pack_url(pack_id)
            if url is not None:
                end = "" if length == 0 else str(offset + length - 1)
                try:
                    data = self._http.request(
                        "GET", url, headers={"Range": f"bytes={offset}-{end}"}
                    )
                except DirectFailed as exc:
                    self._give_up_direct(exc)
                else:
                    if length and len(data) != length:
                        raise NotFound(f"pack {pack_id.hex()[:8]} is shorter than its index says")
                    return data
        req = pb.ReadPackRequest(pack_id=pack_id.raw, offset=offset, length=length)
        if self._aborted.is_set():
            raise Interrupted()
        try:
            parts = [
                m.data
                for m in self._storage.ReadPack(req, metadata=self._metadata, timeout=TIMEOUT)
            ]
        except grpc.RpcError as exc:
            if self._aborted.is_set():
                raise Interrupted() from None
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE):
                # The server's details may name its store-internal object key: never
                # shown, only logged for whoever debugs with -v.
                log.debug("reading pack %s: %s", pack_id.hex()[:8], exc.details())
                raise NotFound(
                    f"pack {pack_id.hex()[:8]} is missing or damaged on the server"
                ) from None
            raise self._error(exc) from None
        data = b"".join(parts)
        if length and len(data) != length:
            raise NotFound(f"pack {pack_id.hex()[:8]} is shorter than its index says")
        return data

    def list_refs(self, prefix: str = "") -> list[Ref]:
        resp = self._call(self._storage.ListRefs, pb.ListRefsRequest(prefix=prefix))
        return [_ref_from(r) for r in resp.refs]

    def get_ref(self, name: str) -> Ref | None:
        try:
            return _ref_from(self._call(self._storage.GetRef, pb.GetRefRequest(name=name)))
        except NotFound:
            return None

    def watch_refs(self, names: Sequence[str] = ()) -> RefWatch:
        call = self._storage.WatchRefs(
            pb.WatchRefsRequest(names=list(names)), metadata=self._metadata
        )
        return RefWatch(self, call)

    def update_ref(self, name: str, expected_version: int, commit_id: BlobId) -> Ref:
        req = pb.UpdateRefRequest(
            name=name, expected_version=expected_version, commit_id=commit_id.raw
        )
        return _ref_from(self._call(self._storage.UpdateRef, req))


class RefWatch:
    """A WatchRefs stream: iterate for ref updates (None = heartbeat); cancel() ends it."""

    def __init__(self, remote: Remote, call: Any) -> None:
        self._remote = remote
        self._call = call

    def __iter__(self) -> Iterator[Ref | None]:
        try:
            for r in self._call:
                yield _ref_from(r) if r.name else None
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:
                return
            raise self._remote._error(exc) from None

    def cancel(self) -> None:
        self._call.cancel()


def _reason(exc: grpc.RpcError) -> str:
    """The reason the server sent with a failed call (anysync.errors); "" for none."""
    trailing_metadata = getattr(exc, "trailing_metadata", None)
    for key, value in (trailing_metadata() if trailing_metadata else None) or ():
        if key == REASON_KEY:
            return str(value)
    return ""


def _untyped_exhausted(details: str) -> AnySyncError:
    """RESOURCE_EXHAUSTED without a reason. A server from before reasons sends its quota
    and login-limit errors so, told apart only by their text; today's server sends only
    errors of its own this way (its disk is full), and gRPC a message over the size limit."""
    if "quota" in details.lower():
        return QuotaExceeded(details)
    if "too many" in details.lower():
        return RateLimited(details)
    return AnySyncError(f"the server cannot take this now: {details}")


def _kdf_to(k: KdfParams) -> pb.KdfParams:
    return pb.KdfParams(salt=k.salt, log_n=k.log_n, r=k.r, p=k.p)


def _kdf_from(k: pb.KdfParams) -> KdfParams:
    return KdfParams(k.salt, k.log_n, k.r, k.p)


def _login_from(r: pb.LoginResponse) -> LoginResult:
    return LoginResult(r.user_id, r.device_id, r.sealed_token, r.master_keys, _kdf_from(r.kdf))


def _ref_from(r: pb.Ref) -> Ref:
    return Ref(r.name, BlobId(r.commit_id), r.version, r.updated_at, r.updated_by_device)


def default_device_name() -> str:
    return socket.gethostname()
