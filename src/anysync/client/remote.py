"""The client's side of the wire: gRPC over TLS with a pinned certificate.

With wire.py, the only client modules that import generated protobuf code; wire.py
converts messages to domain types and maps failed calls to anysync.errors. Packs go
directly to and from an S3 store through presigned URLs (anysync.store.presigned) while
that works, else through the server's stream. That module (http.client, anysync.store)
is imported when a pack first goes that way: a command that moves no pack so (most
do not; none does against a local store) saves its ~20 ms of CPU (issue #15).
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from anysync import tls
from anysync.client.repo.pack import PackedBlob
from anysync.client.repo.refs import RefVersion
from anysync.client.repo.repository import (
    PACK_CONDEMNED,
    PACK_LIVE,
    PACK_REAPING,
    CondemnResult,
    PackInfo,
    PackListing,
    RepairResult,
)
from anysync.client.wire import (
    AccountInfo,
    DeviceInfo,
    LoginResult,
    account_from,
    condemn_result_from,
    device_from,
    error_for,
    kdf_from,
    kdf_to,
    locations_from,
    login_from,
    pack_entries,
    pack_header,
    pack_info_from,
    ref_from,
    ref_version_from,
    repair_result_from,
)
from anysync.errors import AnySyncError, NotFound, ServerUnreachable, UsageError
from anysync.types import BlobId, BlobLocation, KdfParams, PackId, Ref
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as rpc

if TYPE_CHECKING:
    from anysync.store.presigned import PresignedHttp

# Callers take the wire's domain types from here, with the calls that return them.
__all__ = [
    "PACK_CONDEMNED",
    "PACK_LIVE",
    "PACK_REAPING",
    "AccountInfo",
    "CondemnResult",
    "DeviceInfo",
    "DirectSettings",
    "LoginResult",
    "PackInfo",
    "PackListing",
    "RefVersion",
    "RefWatch",
    "Remote",
    "RepairResult",
    "fetch_certificate",
    "split_address",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 65065
MESSAGE_LIMIT = 16 * 1024 * 1024
STREAM_PIECE = 1024 * 1024
TIMEOUT = 120.0
DIRECT_TIMEOUT = 60.0
# ListRefHistory's page: the server's own maximum.
HISTORY_PAGE = 10_000

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
class DirectSettings:
    """The direct data path's settings, read from the environment once per Remote."""

    enabled: bool = True
    # Attempts (with backoff) before packs fall back to the server's stream.
    attempts: int = 6

    @classmethod
    def from_env(cls) -> DirectSettings:
        try:
            attempts = int(os.environ.get("ANYSYNC_DIRECT_ATTEMPTS", "6"))
        except ValueError:
            raise UsageError("ANYSYNC_DIRECT_ATTEMPTS must be a whole number") from None
        return cls(os.environ.get("ANYSYNC_DIRECT_STORE", "1") != "0", max(1, attempts))


class Remote:
    """One server connection. Thread-safe (gRPC channels are)."""

    def __init__(
        self,
        address: str,
        cert_pem: bytes,
        token: bytes | None = None,
        direct: DirectSettings | None = None,
    ) -> None:
        direct = direct or DirectSettings.from_env()
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
        self._direct = direct.enabled
        self._urls: dict[PackId, tuple[str, float]] = {}
        self._urls_lock = threading.Lock()
        self._aborted = threading.Event()
        self._attempts = direct.attempts
        self._http_lock = threading.Lock()
        self._http_client: PresignedHttp | None = None
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
        with self._http_lock:
            http = self._http_client
        if http is not None:
            http.abort()

    def _direct_request(self, method: str, url: str, **kwargs: Any) -> bytes | None:
        """A presigned request to the object store; None when it failed, and packs go
        through the server from now on. The HTTP client is made on first use."""
        from anysync.store.presigned import DirectFailed, PresignedHttp

        with self._http_lock:
            if self._http_client is None:
                self._http_client = PresignedHttp(self._aborted, self._attempts, DIRECT_TIMEOUT)
            http = self._http_client
        try:
            return http.request(method, url, **kwargs)
        except DirectFailed as exc:
            log.warning(
                "cannot reach the object store directly (%s); moving packs through the "
                "server instead",
                exc,
            )
            self._direct = False
            return None

    def _call(self, method: Callable[..., T], request: Any, **kwargs: Any) -> T:
        if self._aborted.is_set():
            raise _interrupted()
        try:
            return method(request, metadata=self._metadata, timeout=TIMEOUT, **kwargs)
        except grpc.RpcError as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: grpc.RpcError) -> AnySyncError:
        """The error to raise for a failed RPC: an aborted call's is the abort's."""
        return _interrupted() if self._aborted.is_set() else error_for(exc, self.address)

    # ---------------------------------------------------------------- accounts

    def pre_login(self, email: str) -> KdfParams:
        resp = self._call(self._accounts.PreLogin, pb.PreLoginRequest(email=email))
        return kdf_from(resp.kdf)

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
            kdf=kdf_to(kdf),
            login_secret=login_secret,
            master_keys=master_keys,
            device_name=device_name,
            device_public_key=device_public_key,
        )
        return login_from(self._call(self._accounts.Signup, req))

    def login(
        self, *, email: str, login_secret: bytes, device_name: str, device_public_key: bytes
    ) -> LoginResult:
        req = pb.LoginRequest(
            email=email,
            login_secret=login_secret,
            device_name=device_name,
            device_public_key=device_public_key,
        )
        return login_from(self._call(self._accounts.Login, req))

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
            new_kdf=kdf_to(new_kdf),
            new_master_keys=new_master_keys,
        )
        self._call(self._accounts.ChangePassword, req)

    # ---------------------------------------------------------------- devices

    def list_devices(self) -> list[DeviceInfo]:
        resp = self._call(self._devices.ListDevices, pb.ListDevicesRequest())
        return [device_from(d) for d in resp.devices]

    def revoke_device(self, device_id: int) -> None:
        self._call(self._devices.RevokeDevice, pb.RevokeDeviceRequest(device_id=device_id))

    def rename_device(self, device_id: int, name: str) -> None:
        req = pb.RenameDeviceRequest(device_id=device_id, name=name)
        self._call(self._devices.RenameDevice, req)

    def whoami(self) -> AccountInfo:
        return account_from(self._call(self._devices.Whoami, pb.WhoamiRequest()))

    def set_device_rights(self, device_id: int, rights: str) -> None:
        req = pb.SetDeviceRightsRequest(device_id=device_id, rights=rights)
        self._call(self._devices.SetDeviceRights, req)

    def elevate(self, login_secret: bytes) -> int:
        """Act with the manage right for a while; returns until when (unix seconds)."""
        resp = self._call(self._devices.Elevate, pb.ElevateRequest(login_secret=login_secret))
        return int(resp.elevated_until)

    # ---------------------------------------------------------------- storage

    def find_blobs(self, ids: Sequence[BlobId]) -> dict[BlobId, BlobLocation]:
        return self.find_blobs_at(ids)[0] if ids else {}

    def find_blobs_at(self, ids: Sequence[BlobId]) -> tuple[dict[BlobId, BlobLocation], int]:
        """The blobs the account holds among `ids`, and the gc_generation of the
        transaction that read them (a session's fence: prune-design.md §7). Asking
        about no blob still asks, for the generation."""
        req = pb.FindBlobsRequest(blob_ids=[i.raw for i in ids])
        resp = self._call(self._storage.FindBlobs, req)
        return locations_from(resp), int(resp.gc_generation)

    def list_packs(self, include_entries: bool, include_condemned: bool = False) -> PackListing:
        """Every pack of the account (live ones only unless include_condemned), read in
        one server transaction."""
        req = pb.ListPacksRequest(
            include_entries=include_entries, include_condemned=include_condemned
        )
        read = self._storage.ListPacks
        messages = self._call(lambda r, **kw: list(read(r, **kw)), req)
        packs = [pack_info_from(p) for m in messages for p in m.packs]
        first = messages[0] if messages else pb.ListPacksResponse()
        return PackListing(int(first.gc_generation), int(first.ref_seq), packs)

    def condemn_packs(
        self, pack_ids: Sequence[PackId], expected_generation: int, expected_ref_seq: int
    ) -> CondemnResult:
        req = pb.CondemnPacksRequest(
            pack_ids=[p.raw for p in pack_ids],
            expected_generation=expected_generation,
            expected_ref_seq=expected_ref_seq,
        )
        return condemn_result_from(self._call(self._storage.CondemnPacks, req))

    def repair_index(
        self, pack_id: PackId, entries: Sequence[PackedBlob], expected_generation: int
    ) -> RepairResult:
        """Make the server's index rows of a pack exactly `entries` (from its decrypted
        header). Removing rows is fenced like condemning: `expected_generation`."""
        req = pb.RepairIndexRequest(
            pack_id=pack_id.raw,
            entries=pack_entries(entries),
            expected_generation=expected_generation,
        )
        return repair_result_from(self._call(self._storage.RepairIndex, req))

    def list_ref_history(self, name: str = "", after_seq: int = 0) -> tuple[list[RefVersion], int]:
        """Every version of ref `name` (every ref's when empty) after `after_seq`,
        oldest first, and the account's ref_seq when the last page was read."""
        versions: list[RefVersion] = []
        while True:
            req = pb.ListRefHistoryRequest(name=name, after_seq=after_seq, limit=HISTORY_PAGE)
            resp = self._call(self._storage.ListRefHistory, req)
            page = [ref_version_from(v) for v in resp.versions]
            versions += page
            if len(page) < HISTORY_PAGE:
                return versions, int(resp.ref_seq)
            after_seq = page[-1].seq

    def upload_pack(
        self,
        data: bytes,
        sha256: bytes,
        entries: Sequence[PackedBlob],
        maintenance: bool = False,
    ) -> PackId:
        """Store a pack; `maintenance` (a manage device's forget or prune) may pass the
        quota by the server's headroom."""
        header = pack_header(len(data), sha256, entries, maintenance)
        if self._direct:
            req = pb.BeginUploadRequest(header=header, md5=hashlib.md5(data).digest())  # noqa: S324 - S3's ETag
            begin = self._call(self._storage.BeginUpload, req)
            if not begin.direct:
                self._direct = False
            elif self._direct_request("PUT", begin.url, data=data) is not None:
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
        data = self._read_direct(pack_id, offset, length) if self._direct else None
        if data is None:
            data = self._read_streamed(pack_id, offset, length)
        if length and len(data) != length:
            raise NotFound(f"pack {pack_id.hex()[:8]} is shorter than its index says")
        return data

    def _read_direct(self, pack_id: PackId, offset: int, length: int) -> bytes | None:
        """The range from the object store; None: ask the server instead."""
        url = self._pack_url(pack_id)
        if url is None:
            return None
        end = "" if length == 0 else str(offset + length - 1)
        return self._direct_request("GET", url, headers={"Range": f"bytes={offset}-{end}"})

    def _read_streamed(self, pack_id: PackId, offset: int, length: int) -> bytes:
        req = pb.ReadPackRequest(pack_id=pack_id.raw, offset=offset, length=length)
        read = self._storage.ReadPack
        try:
            return b"".join(self._call(lambda r, **kw: [m.data for m in read(r, **kw)], req))
        except NotFound as exc:
            # The server's message may name its store-internal object key: never shown,
            # only logged for whoever debugs with -v.
            log.debug("reading pack %s: %s", pack_id.hex()[:8], exc.message)
            raise NotFound(
                f"pack {pack_id.hex()[:8]} is missing or damaged on the server"
            ) from None

    def list_refs(self, prefix: str = "") -> list[Ref]:
        return self.list_refs_at(prefix)[0]

    def list_refs_at(self, prefix: str = "") -> tuple[list[Ref], int]:
        """The refs under `prefix` and the account's ref_seq when they were read."""
        resp = self._call(self._storage.ListRefs, pb.ListRefsRequest(prefix=prefix))
        return [ref_from(r) for r in resp.refs], int(resp.ref_seq)

    def get_ref(self, name: str) -> Ref | None:
        try:
            return ref_from(self._call(self._storage.GetRef, pb.GetRefRequest(name=name)))
        except NotFound:
            return None

    def watch_refs(self, names: Sequence[str] = ()) -> RefWatch:
        call = self._storage.WatchRefs(
            pb.WatchRefsRequest(names=list(names)), metadata=self._metadata
        )
        return RefWatch(call, self.address)

    def update_ref(
        self,
        name: str,
        expected_version: int,
        commit_id: BlobId,
        gc_generation: int | None = None,
    ) -> Ref:
        """Move a ref. `gc_generation`: the session's fence; the server refuses with
        GcRaced if anything was condemned since (None: not sent, for sessions that
        never asked FindBlobs; the server refuses that once it has condemned)."""
        req = pb.UpdateRefRequest(
            name=name,
            expected_version=expected_version,
            commit_id=commit_id.raw,
            gc_generation=gc_generation,
        )
        return ref_from(self._call(self._storage.UpdateRef, req))


def _interrupted() -> AnySyncError:
    """What a call raises after abort() (imported then: see the module's docstring)."""
    from anysync.store.presigned import Interrupted

    return Interrupted()


class RefWatch:
    """A WatchRefs stream: iterate for ref updates (None = heartbeat); cancel() ends it."""

    def __init__(self, call: Any, address: str) -> None:
        self._call = call
        self._address = address

    def __iter__(self) -> Iterator[Ref | None]:
        try:
            for r in self._call:
                yield ref_from(r) if r.name else None
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:
                return
            raise error_for(exc, self._address) from None

    def cancel(self) -> None:
        self._call.cancel()
