# ruff: noqa: N802  (handler names are fixed by the proto: PreLogin, UploadPack, …)
"""The gRPC services of proto/anysync/v1/anysync.proto: the only module that imports
the generated wire code.

Each handler authenticates the caller, validates the request and converts it to domain
types (anysync.types), calls metadata and the store, and converts the answer back.
Handlers raise anysync.errors exceptions; `_status_for` maps them to gRPC status codes,
in this one place, and `_abort` sends each error's reason along in the trailing metadata.
Every storage call is scoped to the caller's account: the account's row ID is part of
every query, and pack keys are derived from the account.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import queue
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from anysync import crypto
from anysync.errors import (
    REASON_KEY,
    AlreadyExists,
    AnySyncError,
    AuthError,
    Conflict,
    IntegrityError,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    UsageError,
    WrongPassword,
)
from anysync.server import auth, packs
from anysync.server.config import ServerConfig
from anysync.server.metadata import Device, Metadata, NewAccount, NewDevice, User, check_quota
from anysync.server.notify import RefNotifier
from anysync.server.uploads import PendingUpload, PendingUploads
from anysync.store import ObjectStore, OutOfRangeError, PresigningStore
from anysync.types import BLOB_ID_SIZE, PACK_ID_SIZE, BlobId, BlobLocation, KdfParams, PackId, Ref
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())

MAX_FIND_BLOBS = 10_000
MAX_MASTER_KEYS = 4096
MAX_DEVICE_NAME = 100
# Seconds between heartbeats on an idle WatchRefs stream; each one re-authenticates the
# caller. Tests shorten it to see a revoked device cut off without waiting 20 s.
WATCH_HEARTBEAT = float(os.environ.get("ANYSYNC_TESTONLY_WATCH_HEARTBEAT") or 20.0)
LAST_SEEN_EVERY = 60  # seconds: how stale last_seen_at may get before a write
_REF_NAME = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_USER_ID = re.compile(r"[0-9a-f]{32}")

# First match wins: subclasses before their bases.
_STATUS: tuple[tuple[type[AnySyncError], grpc.StatusCode], ...] = (
    (OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (WrongPassword, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Conflict, grpc.StatusCode.ABORTED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (IntegrityError, grpc.StatusCode.INVALID_ARGUMENT),
)


def _status_for(err: Exception) -> grpc.StatusCode | None:
    for cls, code in _STATUS:
        if isinstance(err, cls):
            return code
    return None


def _abort(context: grpc.ServicerContext, err: Exception, method: str) -> NoReturn:
    code = _status_for(err)
    if code is not None:
        message = str(err)
        # Messages are written for users and never contain secrets: safe to log.
        log.info("%s: %s: %s", method, code.name, message)
        if isinstance(err, AnySyncError) and err.reason:
            # The error's exact type, for the client: anysync.errors.by_reason.
            context.set_trailing_metadata(((REASON_KEY, err.reason),))
        context.abort(code, message)
    if not context.is_active():  # the client cancelled or went away mid-call
        log.info("%s: the client went away", method)
        context.abort(grpc.StatusCode.CANCELLED, "cancelled")
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        log.error("%s: the disk is full", method)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the server is out of disk space")
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")
    raise AssertionError("context.abort returned")


_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def _rpc(
    handler: Callable[[_S, _Req, grpc.ServicerContext], _Resp],
) -> Callable[[_S, _Req, grpc.ServicerContext], _Resp]:
    """Map exceptions to status codes for a handler returning one response."""

    @functools.wraps(handler)
    def wrapper(self: _S, request: _Req, context: grpc.ServicerContext) -> _Resp:
        try:
            return handler(self, request, context)
        except Exception as err:
            _abort(context, err, handler.__name__)

    return wrapper


def _rpc_stream(
    handler: Callable[[_S, _Req, grpc.ServicerContext], Iterator[_Resp]],
) -> Callable[[_S, _Req, grpc.ServicerContext], Iterator[_Resp]]:
    """Map exceptions to status codes for a handler streaming its responses."""

    @functools.wraps(handler)
    def wrapper(self: _S, request: _Req, context: grpc.ServicerContext) -> Iterator[_Resp]:
        try:
            yield from handler(self, request, context)
        except Exception as err:
            _abort(context, err, handler.__name__)

    return wrapper


# ---------------------------------------------------------------- shared state


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated account and device of a call."""

    user: User
    device: Device


class ByteCounter(Protocol):
    """Where the services report pack bytes moved (the metrics endpoint counts them)."""

    def add_bytes(self, direction: str, n: int) -> None: ...  # direction: "in" or "out"


class _NoCounter:
    def add_bytes(self, direction: str, n: int) -> None:
        pass


class Core:
    """What every service needs: settings, metadata, the store, the server secret."""

    def __init__(
        self,
        config: ServerConfig,
        db: Metadata,
        store: ObjectStore,
        server_secret: bytes,
        counter: ByteCounter | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.secret = server_secret
        self.counter: ByteCounter = counter or _NoCounter()
        self.pending = PendingUploads()
        self.limiter = auth.FailedLoginLimiter(
            config.max_failed_logins, config.failed_login_window_seconds
        )
        self.notifier = RefNotifier()

    @property
    def presigner(self) -> PresigningStore | None:
        """The store, if clients should reach it directly (S3 with `direct = true`)."""
        s3 = self.config.s3
        if s3 is None or not s3.direct or not isinstance(self.store, PresigningStore):
            return None
        return self.store

    def authenticate(self, context: grpc.ServicerContext) -> Caller:
        metadata = dict(context.invocation_metadata())
        digest = auth.token_digest_from_header(metadata.get("authorization"))
        found = self.db.caller_for_token(digest)
        if found is None:
            raise AuthError("unknown access token; log in again")
        user, device = found
        if device.revoked_at is not None:
            raise AuthError("this device's access was revoked; log in again")
        if user.disabled:
            raise AuthError("account disabled")
        now = _now()
        if device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_EVERY:
            self.db.touch_device(device.id, now)
        return Caller(user, device)

    def quota(self, user: User) -> int:
        """The account's quota in bytes, 0 = unlimited."""
        return user.quota_bytes if user.quota_bytes is not None else self.config.default_quota

    def failure_keys(self, email: str, context: grpc.ServicerContext) -> tuple[str, str]:
        """Failed logins are counted per e-mail and per client address."""
        return f"email:{email}", f"peer:{auth.peer_host(context.peer())}"

    def login_response(
        self, user: User, device: Device, token: bytes, public_key: bytes
    ) -> pb.LoginResponse:
        return pb.LoginResponse(
            user_id=user.user_id,
            device_id=device.id,
            sealed_token=crypto.seal_to(public_key, token),
            master_keys=user.master_keys,
            kdf=_kdf_to_wire(user.kdf),
        )


# ---------------------------------------------------------------- accounts


class AccountsService(pb_grpc.AccountsServicer):
    def __init__(self, core: Core) -> None:
        self.core = core

    @_rpc
    def PreLogin(
        self, request: pb.PreLoginRequest, context: grpc.ServicerContext
    ) -> pb.PreLoginResponse:
        email = auth.normalize_email(request.email)
        user = self.core.db.user_by_email(email)
        kdf = user.kdf if user is not None else auth.fake_kdf_params(self.core.secret, email)
        return pb.PreLoginResponse(kdf=_kdf_to_wire(kdf))

    @_rpc
    def Signup(self, request: pb.SignupRequest, context: grpc.ServicerContext) -> pb.LoginResponse:
        mode = self.core.config.registration
        if mode == "closed":
            raise PermissionDenied("registration is closed on this server")
        invite_hash = None
        if mode == "invite":
            if not request.invite.strip():
                raise PermissionDenied("this server needs an invite code to sign up")
            invite_hash = auth.invite_hash(request.invite)
        email = auth.normalize_email(request.email)
        if not _USER_ID.fullmatch(request.user_id):
            raise UsageError("user_id must be 32 lower-case hex digits")
        kdf = _kdf_from_wire(request.kdf)
        secret = _login_secret(request.login_secret)
        master_keys = _master_keys(request.master_keys)
        name, public_key = _device_name(request.device_name), _public_key(request.device_public_key)

        login_hash, salt, params = auth.hash_login_secret(secret)
        token, token_hash = auth.new_token()
        user, device = self.core.db.create_account(
            NewAccount(request.user_id, email, kdf, login_hash, salt, params, master_keys),
            NewDevice(name, public_key, token_hash),
            invite_hash,
            _now(),
        )
        log.info("signup: account %s (%s), device %d", user.user_id, email, device.id)
        return self.core.login_response(user, device, token, public_key)

    @_rpc
    def Login(self, request: pb.LoginRequest, context: grpc.ServicerContext) -> pb.LoginResponse:
        email = auth.normalize_email(request.email)
        secret = _login_secret(request.login_secret)
        name, public_key = _device_name(request.device_name), _public_key(request.device_public_key)
        keys = self.core.failure_keys(email, context)
        self.core.limiter.check(*keys)

        user = self.core.db.user_by_email(email)
        if user is None:
            auth.burn_login_hash(secret)  # as slow as a wrong password: no enumeration
        if user is None or not auth.verify_login_secret(
            secret, user.login_hash, user.login_hash_salt, user.login_hash_params
        ):
            self.core.limiter.record_failure(*keys)
            raise WrongPassword("wrong e-mail or password")
        self.core.limiter.forget(keys[0])
        if user.disabled:
            raise PermissionDenied("account disabled")

        token, token_hash = auth.new_token()
        device = self.core.db.add_device(user.id, NewDevice(name, public_key, token_hash), _now())
        log.info("login: account %s, new device %d", user.user_id, device.id)
        return self.core.login_response(user, device, token, public_key)

    @_rpc
    def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.ServicerContext
    ) -> pb.ChangePasswordResponse:
        caller = self.core.authenticate(context)
        old_secret = _login_secret(request.old_login_secret)
        new_secret = _login_secret(request.new_login_secret)
        kdf = _kdf_from_wire(request.new_kdf)
        master_keys = _master_keys(request.new_master_keys)
        # A stolen token must not become an unlimited password oracle.
        keys = self.core.failure_keys(caller.user.email, context)
        self.core.limiter.check(*keys)
        user = caller.user
        if not auth.verify_login_secret(
            old_secret, user.login_hash, user.login_hash_salt, user.login_hash_params
        ):
            self.core.limiter.record_failure(*keys)
            raise WrongPassword("wrong password")
        login_hash, salt, params = auth.hash_login_secret(new_secret)
        self.core.db.change_login(user.id, login_hash, salt, params, kdf, master_keys)
        log.info("password changed: account %s, by device %d", user.user_id, caller.device.id)
        return pb.ChangePasswordResponse()


# ---------------------------------------------------------------- devices


class DevicesService(pb_grpc.DevicesServicer):
    def __init__(self, core: Core) -> None:
        self.core = core

    @_rpc
    def ListDevices(
        self, request: pb.ListDevicesRequest, context: grpc.ServicerContext
    ) -> pb.ListDevicesResponse:
        caller = self.core.authenticate(context)
        devices = self.core.db.list_devices(caller.user.id)
        return pb.ListDevicesResponse(
            devices=[_device_to_wire(d, caller.device.id) for d in devices]
        )

    @_rpc
    def RevokeDevice(
        self, request: pb.RevokeDeviceRequest, context: grpc.ServicerContext
    ) -> pb.RevokeDeviceResponse:
        caller = self.core.authenticate(context)
        self.core.db.revoke_device(caller.user.id, request.device_id, _now())
        log.info(
            "account %s: device %d revoked by device %d",
            caller.user.user_id,
            request.device_id,
            caller.device.id,
        )
        return pb.RevokeDeviceResponse()

    @_rpc
    def Whoami(self, request: pb.WhoamiRequest, context: grpc.ServicerContext) -> pb.WhoamiResponse:
        caller = self.core.authenticate(context)
        return pb.WhoamiResponse(
            user_id=caller.user.user_id,
            email=caller.user.email,
            device_id=caller.device.id,
            used_bytes=caller.user.used_bytes,
            quota_bytes=self.core.quota(caller.user),
            master_keys=caller.user.master_keys,
            kdf=_kdf_to_wire(caller.user.kdf),
        )


# ---------------------------------------------------------------- storage


class StorageService(pb_grpc.StorageServicer):
    def __init__(self, core: Core) -> None:
        self.core = core

    @_rpc
    def FindBlobs(
        self, request: pb.FindBlobsRequest, context: grpc.ServicerContext
    ) -> pb.FindBlobsResponse:
        caller = self.core.authenticate(context)
        if len(request.blob_ids) > MAX_FIND_BLOBS:
            raise UsageError(f"at most {MAX_FIND_BLOBS} blob IDs per FindBlobs call")
        ids = [_blob_id(raw) for raw in request.blob_ids]
        found = self.core.db.find_blobs(caller.user.id, ids)
        return pb.FindBlobsResponse(found=[_location_to_wire(loc) for loc in found])

    @_rpc
    def UploadPack(
        self, request_iterator: Iterator[pb.UploadPackRequest], context: grpc.ServicerContext
    ) -> pb.UploadPackResponse:
        caller = self.core.authenticate(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise UsageError("UploadPack must start with a header message")
        header = first.header
        pack_id = PackId.random()
        entries = _checked_header(header, pack_id)
        quota = self.core.quota(caller.user)
        # Before any data is accepted; add_pack checks again, atomically.
        check_quota(caller.user.used_bytes, header.size, quota)

        key = packs.pack_key(self.core.secret, caller.user.user_id, pack_id)
        stream = packs.PackStream(_data_pieces(request_iterator), header.size, header.sha256)
        self.core.store.put(key, stream, header.size)
        return self._record(caller, key, pack_id, header.size, entries)

    def _record(
        self, caller: Caller, key: str, pack_id: PackId, size: int, entries: list[BlobLocation]
    ) -> pb.UploadPackResponse:
        """Index a stored pack: the object exists before anything refers to it."""
        try:
            quota = self.core.quota(caller.user)
            self.core.db.add_pack(caller.user.id, pack_id, size, entries, quota, _now())
        except BaseException:
            self.core.store.delete(key)  # not recorded, so nothing may refer to it
            raise
        self.core.counter.add_bytes("in", size)
        log.info(
            "account %s: pack %s stored (%d bytes, %d blobs)",
            caller.user.user_id,
            pack_id,
            size,
            len(entries),
        )
        return pb.UploadPackResponse(pack_id=pack_id.raw, stored_bytes=size)

    @_rpc
    def BeginUpload(
        self, request: pb.BeginUploadRequest, context: grpc.ServicerContext
    ) -> pb.BeginUploadResponse:
        caller = self.core.authenticate(context)
        presigner = self.core.presigner
        if presigner is None:
            return pb.BeginUploadResponse(direct=False)
        if len(request.md5) != 16:
            raise UsageError("BeginUpload needs the pack's 16-byte MD5")
        pack_id = PackId.random()
        entries = _checked_header(request.header, pack_id)
        check_quota(caller.user.used_bytes, request.header.size, self.core.quota(caller.user))
        seconds = self._presign_seconds()
        expires = time.time() + seconds
        self.core.pending.add(
            PendingUpload(
                caller.user.id, pack_id, request.header.size, bytes(request.md5), entries, expires
            )
        )
        key = packs.pack_key(self.core.secret, caller.user.user_id, pack_id)
        url = presigner.presign("PUT", key, seconds)
        return pb.BeginUploadResponse(
            direct=True, pack_id=pack_id.raw, url=url, expires_at=int(expires)
        )

    @_rpc
    def CommitUpload(
        self, request: pb.CommitUploadRequest, context: grpc.ServicerContext
    ) -> pb.UploadPackResponse:
        caller = self.core.authenticate(context)
        presigner = self.core.presigner
        if presigner is None:
            raise UsageError("this server does not take direct uploads; use UploadPack")
        upload = self.core.pending.take(caller.user.id, _pack_id(request.pack_id))
        key = packs.pack_key(self.core.secret, caller.user.user_id, upload.pack_id)
        try:
            size, etag = presigner.stat(key)
        except NotFound:
            raise NotFound(f"pack {upload.pack_id} did not arrive in the object store") from None
        # A single-part upload's ETag is the MD5 of the object; multipart ETags ("…-N")
        # are not, and some stores use other ETags: then only the size can be checked.
        md5_checked = len(etag) == 32 and "-" not in etag
        if size != upload.size or (md5_checked and etag != upload.md5.hex()):
            self.core.store.delete(key)
            raise IntegrityError(
                f"the stored pack {upload.pack_id} is not what was announced "
                f"({size} bytes, ETag {etag}); upload it again"
            )
        return self._record(caller, key, upload.pack_id, size, upload.entries)

    @_rpc
    def GetPackUrl(
        self, request: pb.GetPackUrlRequest, context: grpc.ServicerContext
    ) -> pb.GetPackUrlResponse:
        caller = self.core.authenticate(context)
        pack_id = _pack_id(request.pack_id)
        size = self.core.db.pack_size(caller.user.id, pack_id)
        if size is None:
            raise NotFound(f"no pack {pack_id}")
        presigner = self.core.presigner
        if presigner is None:
            return pb.GetPackUrlResponse(direct=False, size=size)
        seconds = self._presign_seconds()
        key = packs.pack_key(self.core.secret, caller.user.user_id, pack_id)
        url = presigner.presign("GET", key, seconds)
        return pb.GetPackUrlResponse(
            direct=True, url=url, expires_at=int(time.time() + seconds), size=size
        )

    def _presign_seconds(self) -> int:
        assert self.core.config.s3 is not None
        return self.core.config.s3.presign_seconds

    @_rpc_stream
    def ReadPack(
        self, request: pb.ReadPackRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ReadPackResponse]:
        caller = self.core.authenticate(context)
        pack_id = _pack_id(request.pack_id)
        # Packs of other accounts are simply not found: same answer as a missing one.
        size = self.core.db.pack_size(caller.user.id, pack_id)
        if size is None:
            raise NotFound(f"no pack {pack_id}")
        end = size if request.length == 0 else request.offset + request.length
        if request.offset > size or end > size:
            raise OutOfRangeError(
                f"range {request.offset}+{request.length} is outside pack {pack_id} of {size} bytes"
            )
        key = packs.pack_key(self.core.secret, caller.user.user_id, pack_id)
        try:
            pieces = self.core.store.get_range(key, request.offset, end - request.offset)
        except (NotFound, OutOfRangeError) as exc:
            log.error(
                "pack %s of account %s is recorded but not stored as recorded: %s",
                pack_id,
                caller.user.user_id,
                exc,
            )
            # The store's message names its internal key: it stays in the server's log.
            raise NotFound(f"pack {pack_id} is recorded but missing from the store") from None
        for piece in pieces:
            self.core.counter.add_bytes("out", len(piece))
            yield pb.ReadPackResponse(data=piece)

    @_rpc
    def ListRefs(
        self, request: pb.ListRefsRequest, context: grpc.ServicerContext
    ) -> pb.ListRefsResponse:
        caller = self.core.authenticate(context)
        if request.prefix and not _REF_NAME.fullmatch(request.prefix):
            raise UsageError("a ref prefix is up to 200 characters of [A-Za-z0-9._:-]")
        refs = self.core.db.list_refs(caller.user.id, request.prefix)
        return pb.ListRefsResponse(refs=[_ref_to_wire(r) for r in refs])

    @_rpc
    def GetRef(self, request: pb.GetRefRequest, context: grpc.ServicerContext) -> pb.Ref:
        caller = self.core.authenticate(context)
        ref = self.core.db.get_ref(caller.user.id, _ref_name(request.name))
        if ref is None:
            raise NotFound(f"no ref {request.name}")
        return _ref_to_wire(ref)

    @_rpc
    def UpdateRef(self, request: pb.UpdateRefRequest, context: grpc.ServicerContext) -> pb.Ref:
        caller = self.core.authenticate(context)
        ref = self.core.db.update_ref(
            caller.user.id,
            _ref_name(request.name),
            request.expected_version,
            _blob_id(request.commit_id, "commit_id"),
            caller.device.id,
            _now(),
        )
        self.core.notifier.publish(caller.user.id, ref)
        return _ref_to_wire(ref)

    @_rpc_stream
    def WatchRefs(
        self, request: pb.WatchRefsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Ref]:
        caller = self.core.authenticate(context)
        names = {_ref_name(n) for n in request.names}
        sub = self.core.notifier.subscribe(caller.user.id)
        try:
            while context.is_active():
                try:
                    ref = sub.get(timeout=WATCH_HEARTBEAT)
                except queue.Empty:
                    self.core.authenticate(context)  # a device revoked meanwhile is cut off
                    yield pb.Ref()
                    continue
                if ref is None:  # the server is stopping
                    return
                if not names or ref.name in names:
                    yield _ref_to_wire(ref)
        finally:
            self.core.notifier.unsubscribe(caller.user.id, sub)


# ---------------------------------------------------------------- registration


def register(server: grpc.Server, core: Core) -> health.HealthServicer:
    """Add every AnySync service and the standard health service to `server`."""
    pb_grpc.add_AccountsServicer_to_server(AccountsService(core), server)
    pb_grpc.add_DevicesServicer_to_server(DevicesService(core), server)
    pb_grpc.add_StorageServicer_to_server(StorageService(core), server)
    health_servicer = health.HealthServicer()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return health_servicer


# ---------------------------------------------------------------- wire ↔ domain


def _kdf_from_wire(msg: pb.KdfParams) -> KdfParams:
    params = KdfParams(bytes(msg.salt), msg.log_n, msg.r, msg.p)
    try:
        crypto.check_kdf_params(params)
    except IntegrityError:
        raise UsageError(
            f"KDF parameters rejected: need a {crypto.SALT_SIZE}-byte salt, "
            f"log_n {crypto.kdf_floor_log_n()}..22, r {crypto.KDF_R}..32, p {crypto.KDF_P}..16"
        ) from None
    return params


def _kdf_to_wire(kdf: KdfParams) -> pb.KdfParams:
    return pb.KdfParams(salt=kdf.salt, log_n=kdf.log_n, r=kdf.r, p=kdf.p)


def _ref_to_wire(ref: Ref) -> pb.Ref:
    return pb.Ref(
        name=ref.name,
        commit_id=ref.commit_id.raw,
        version=ref.version,
        updated_at=ref.updated_at,
        updated_by_device=ref.updated_by_device,
    )


def _location_to_wire(loc: BlobLocation) -> pb.BlobLocation:
    return pb.BlobLocation(
        blob_id=loc.blob_id.raw, pack_id=loc.pack_id.raw, offset=loc.offset, length=loc.length
    )


def _device_to_wire(device: Device, current: int) -> pb.Device:
    return pb.Device(
        id=device.id,
        name=device.name,
        created_at=device.created_at,
        last_seen_at=device.last_seen_at or 0,
        revoked=device.revoked_at is not None,
        current=device.id == current,
    )


def _checked_header(header: pb.PackHeader, pack_id: PackId) -> list[BlobLocation]:
    if not 0 < header.size <= packs.MAX_PACK_SIZE:
        raise UsageError(f"pack size must be 1 to {packs.MAX_PACK_SIZE} bytes")
    if len(header.sha256) != 32:
        raise UsageError("the pack's sha256 must be 32 bytes")
    return [_pack_entry(e, pack_id, header.size) for e in header.entries]


def _pack_entry(entry: pb.PackEntry, pack_id: PackId, size: int) -> BlobLocation:
    if entry.length == 0 or entry.offset + entry.length > size:
        raise UsageError(
            f"pack entry {entry.offset}+{entry.length} does not lie inside the pack ({size} bytes)"
        )
    return BlobLocation(_blob_id(entry.blob_id), pack_id, entry.offset, entry.length)


def _data_pieces(requests: Iterator[pb.UploadPackRequest]) -> Iterator[bytes]:
    for msg in requests:
        if msg.WhichOneof("part") != "data":
            raise UsageError("UploadPack: only the first message may be a header")
        yield msg.data


def _blob_id(raw: bytes, what: str = "blob ID") -> BlobId:
    if len(raw) != BLOB_ID_SIZE:
        raise UsageError(f"a {what} is {BLOB_ID_SIZE} bytes, got {len(raw)}")
    return BlobId(bytes(raw))


def _pack_id(raw: bytes) -> PackId:
    if len(raw) != PACK_ID_SIZE:
        raise UsageError(f"a pack ID is {PACK_ID_SIZE} bytes, got {len(raw)}")
    return PackId(bytes(raw))


def _ref_name(name: str) -> str:
    if not _REF_NAME.fullmatch(name):
        raise UsageError("a ref name is 1 to 200 characters of [A-Za-z0-9._:-]")
    return name


def _login_secret(raw: bytes) -> bytes:
    if len(raw) != auth.LOGIN_SECRET_SIZE:
        raise UsageError(f"a login secret is {auth.LOGIN_SECRET_SIZE} bytes")
    return bytes(raw)


def _master_keys(raw: bytes) -> bytes:
    if not 0 < len(raw) <= MAX_MASTER_KEYS:
        raise UsageError(f"master_keys must be 1 to {MAX_MASTER_KEYS} bytes")
    return bytes(raw)


def _device_name(name: str) -> str:
    name = name.strip()
    if not 0 < len(name) <= MAX_DEVICE_NAME or not name.isprintable():
        raise UsageError(f"a device name is 1 to {MAX_DEVICE_NAME} printable characters")
    return name


def _public_key(raw: bytes) -> bytes:
    if len(raw) != 32:
        raise UsageError("device_public_key must be a 32-byte X25519 public key")
    return bytes(raw)


def _now() -> int:
    return int(time.time())
