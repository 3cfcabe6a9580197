# ruff: noqa: N802  (handler names are fixed by the proto: PreLogin, UploadPack, …)
"""The RPC layer: the gRPC services of proto/anysync/v1/anysync.proto on grpc.aio, and
the only server module that imports the generated wire code.

Each handler converts the request to domain values, awaits the domain service
(accounts, storage, refs) in the bounded pool, and converts the answer back; errors
become status codes through anysync.server.rpcbase (one table, `STATUS`). The event
loop only moves messages, counts streams and waits: an idle stream costs no thread, so
open streams never decide whether the next caller is answered (docs/design.md, "Server
layers (#12)").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from anysync.errors import StreamIdle, UsageError
from anysync.server import accounts as acc
from anysync.server import storage
from anysync.server.accounts import Accounts, Caller, login_limits
from anysync.server.config import ServerConfig
from anysync.server.gc import ReapCounter, Reaper
from anysync.server.metadata import Device, Metadata, PackListing, PackRow, RefVersion
from anysync.server.notify import RefNotifier
from anysync.server.pool import BlockingPool
from anysync.server.refs import Refs
from anysync.server.rpcbase import (
    UNPARSED,
    Ctx,
    address,
    metadata_value,
    rpc,
    rpc_stream,
)
from anysync.server.storage import ByteCounter, Storage
from anysync.server.streams import Limits, StreamGate, UploadSlots
from anysync.store import ObjectStore
from anysync.types import BlobLocation, KdfParams, Ref
from anysync.v1 import anysync_pb2 as pb
from anysync.v1 import anysync_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())

# Methods whose handlers parse their requests themselves (rpcbase.CallGuard).
RAW_REQUESTS = frozenset({"/anysync.v1.Storage/FindBlobs"})

# Seconds between heartbeats on an idle WatchRefs stream; each one re-authenticates the
# caller. Tests shorten it to see a revoked device cut off without waiting 20 s.
WATCH_HEARTBEAT = float(os.environ.get("ANYSYNC_TESTONLY_WATCH_HEARTBEAT") or 20.0)
# About this much of a ListPacks answer per message (a message may carry at most 8 MiB,
# app.MAX_MESSAGE_BYTES; one pack's entries, up to 100,000, stay in one message).
LIST_PACKS_BATCH_BYTES = 2 << 20

# ---------------------------------------------------------------- shared state


class Core:
    """What every service needs: the domain services, the pool, the stream caps."""

    def __init__(
        self,
        config: ServerConfig,
        db: Metadata,
        store: ObjectStore,
        server_secret: bytes,
        pool: BlockingPool,
        spool_dir: Path,
        limits: Limits | None = None,
        counter: ByteCounter | None = None,
        reaped: ReapCounter | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.pool = pool
        self.limits = limits or Limits()
        self.notifier = RefNotifier()
        self.accounts = Accounts(config, db, server_secret, login_limits(config, db))
        self.reaper = Reaper(db, store, server_secret, config.gc_grace_seconds, reaped)
        self.storage = Storage(
            config, db, store, server_secret, spool_dir, counter, reaper=self.reaper
        )
        self.refs = Refs(db, self.notifier)
        self.gate = StreamGate(self.limits)
        self.uploads = UploadSlots(self.limits)
        self.heavy_calls = asyncio.Semaphore(self.limits.heavy_calls)
        self.login_calls = asyncio.Semaphore(self.limits.login_calls)

    async def authenticate(self, context: Ctx) -> Caller:
        header = metadata_value(context, "authorization")
        return await self.pool.run(self.accounts.authenticate, header)


# ---------------------------------------------------------------- accounts


class AccountsService(pb_grpc.AccountsServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.run = core.pool.run

    @rpc
    async def PreLogin(self, request: pb.PreLoginRequest, context: Ctx) -> pb.PreLoginResponse:
        kdf = await self.run(self.core.accounts.pre_login, request.email, address(context))
        return pb.PreLoginResponse(kdf=_kdf_to_wire(kdf))

    @rpc
    async def Signup(self, request: pb.SignupRequest, context: Ctx) -> pb.LoginResponse:
        form = acc.SignupForm(
            email=request.email,
            invite=request.invite,
            user_id=request.user_id,
            kdf=_kdf_from_wire(request.kdf),
            login_secret=request.login_secret,
            master_keys=request.master_keys,
            device=acc.DeviceKey(request.device_name, request.device_public_key),
        )
        async with self.core.login_calls:
            session = await self.run(self.core.accounts.signup, form, address(context))
        return _login_to_wire(session)

    @rpc
    async def Login(self, request: pb.LoginRequest, context: Ctx) -> pb.LoginResponse:
        form = acc.LoginForm(
            email=request.email,
            login_secret=request.login_secret,
            device=acc.DeviceKey(request.device_name, request.device_public_key),
        )
        async with self.core.login_calls:
            session = await self.run(self.core.accounts.login, form, address(context))
        return _login_to_wire(session)

    @rpc
    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Ctx
    ) -> pb.ChangePasswordResponse:
        caller = await self.core.authenticate(context)
        change = acc.PasswordChange(
            old_login_secret=request.old_login_secret,
            new_login_secret=request.new_login_secret,
            new_kdf=_kdf_from_wire(request.new_kdf),
            new_master_keys=request.new_master_keys,
        )
        async with self.core.login_calls:
            await self.run(self.core.accounts.change_password, caller, change, address(context))
        return pb.ChangePasswordResponse()


# ---------------------------------------------------------------- devices


class DevicesService(pb_grpc.DevicesServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.run = core.pool.run

    @rpc
    async def ListDevices(
        self, request: pb.ListDevicesRequest, context: Ctx
    ) -> pb.ListDevicesResponse:
        caller = await self.core.authenticate(context)
        devices = await self.run(self.core.accounts.list_devices, caller)
        return pb.ListDevicesResponse(
            devices=[_device_to_wire(d, caller.device.id) for d in devices]
        )

    @rpc
    async def RevokeDevice(
        self, request: pb.RevokeDeviceRequest, context: Ctx
    ) -> pb.RevokeDeviceResponse:
        caller = await self.core.authenticate(context)
        await self.run(self.core.accounts.revoke_device, caller, request.device_id)
        return pb.RevokeDeviceResponse()

    @rpc
    async def SetDeviceRights(
        self, request: pb.SetDeviceRightsRequest, context: Ctx
    ) -> pb.SetDeviceRightsResponse:
        caller = await self.core.authenticate(context)
        await self.run(
            self.core.accounts.set_device_rights, caller, request.device_id, request.rights
        )
        return pb.SetDeviceRightsResponse()

    @rpc
    async def RenameDevice(
        self, request: pb.RenameDeviceRequest, context: Ctx
    ) -> pb.RenameDeviceResponse:
        caller = await self.core.authenticate(context)
        await self.run(self.core.accounts.rename_device, caller, request.device_id, request.name)
        return pb.RenameDeviceResponse()

    @rpc
    async def Elevate(self, request: pb.ElevateRequest, context: Ctx) -> pb.ElevateResponse:
        caller = await self.core.authenticate(context)
        async with self.core.login_calls:
            until = await self.run(
                self.core.accounts.elevate, caller, request.login_secret, address(context)
            )
        return pb.ElevateResponse(elevated_until=until)

    @rpc
    async def Whoami(self, request: pb.WhoamiRequest, context: Ctx) -> pb.WhoamiResponse:
        caller = await self.core.authenticate(context)
        user, device, config = caller.user, caller.device, self.core.config
        elevated_until = device.elevated_until or 0
        return pb.WhoamiResponse(
            user_id=user.user_id,
            email=user.email,
            device_id=device.id,
            used_bytes=user.used_bytes,
            quota_bytes=self.core.accounts.quota(user),
            master_keys=user.master_keys,
            kdf=_kdf_to_wire(user.kdf),
            rights=device.rights,
            elevated_until=elevated_until if elevated_until > time.time() else 0,
            gc_generation=user.gc_generation,
            ref_seq=user.ref_seq,
            condemned_bytes=user.condemned_bytes,
            grace_seconds=config.gc_grace_seconds,
            min_pack_age_seconds=config.gc_min_pack_age_seconds,
        )


# ---------------------------------------------------------------- storage


class StorageService(pb_grpc.StorageServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.run = core.pool.run
        self.storage = core.storage

    @rpc
    async def FindBlobs(self, request: bytes, context: Ctx) -> pb.FindBlobsResponse:
        caller = await self.core.authenticate(context)
        # Up to 10,000 IDs in and locations out: parsed, they are a few MiB of objects a
        # call. So a waiting call holds only its bytes (RAW_REQUESTS), and the few calls
        # at a time parse, look up and build their answers in the pool.
        async with self.core.heavy_calls:
            return await self.run(self._find_blobs, caller, request)

    def _find_blobs(self, caller: Caller, raw: bytes) -> pb.FindBlobsResponse:
        try:
            request = pb.FindBlobsRequest.FromString(raw)
        except DecodeError:
            raise UsageError("the request is not a valid message of this call") from None
        found = self.storage.find_blobs(caller, request.blob_ids)
        return pb.FindBlobsResponse(
            found=[_location_to_wire(loc) for loc in found.locations],
            gc_generation=found.gc_generation,
        )

    @rpc
    async def UploadPack(self, requests: object, context: Ctx) -> pb.UploadPackResponse:
        caller = await self.core.authenticate(context)
        with self.core.gate.hold_account(caller.user.id):
            first = await self._read(context)
            if first is None or first.WhichOneof("part") != "header":
                raise UsageError("UploadPack must start with a header message")
            header = _header_from_wire(first.header)
            upload = await self.run(self.storage.start_upload, caller, header)
            try:
                # A slot is held per piece, not per upload: an upload that stalls holds
                # none, so stalled streams cannot starve the uploads that move data.
                while (msg := await self._read(context)) is not None:
                    if msg.WhichOneof("part") != "data":
                        raise UsageError("UploadPack: only the first message may be a header")
                    async with self.core.uploads.slot():
                        await self.run(upload.write, msg.data)
                async with self.core.uploads.slot():
                    stored = await self.run(upload.finish)
            except asyncio.CancelledError:
                # After a write that may still run in its thread; nobody waits.
                self.core.pool.submit(upload.abort)
                raise
            except BaseException:
                await self.run(upload.abort)  # gone before the client hears of it
                raise
        return pb.UploadPackResponse(pack_id=stored.pack_id.raw, stored_bytes=stored.size)

    async def _read(self, context: Ctx) -> pb.UploadPackRequest | None:
        """The next upload message; None at the end. Cut off when none comes in time."""
        seconds = self.core.limits.upload_idle_seconds
        try:
            msg = await asyncio.wait_for(context.read(), seconds)
        except TimeoutError:
            raise StreamIdle(
                f"no upload data for {seconds:g} s; the server closed the upload"
            ) from None
        if msg is grpc.aio.EOF:
            return None
        if msg is UNPARSED:
            raise UsageError("a message of the upload is not a valid UploadPackRequest")
        assert isinstance(msg, pb.UploadPackRequest)
        return msg

    @rpc
    async def BeginUpload(
        self, request: pb.BeginUploadRequest, context: Ctx
    ) -> pb.BeginUploadResponse:
        caller = await self.core.authenticate(context)
        header = _header_from_wire(request.header)
        direct = await self.run(self.storage.begin_upload, caller, header, request.md5)
        if direct is None:
            return pb.BeginUploadResponse(direct=False)
        return pb.BeginUploadResponse(
            direct=True, pack_id=direct.pack_id.raw, url=direct.url, expires_at=direct.expires_at
        )

    @rpc
    async def CommitUpload(
        self, request: pb.CommitUploadRequest, context: Ctx
    ) -> pb.UploadPackResponse:
        caller = await self.core.authenticate(context)
        stored = await self.run(self.storage.commit_upload, caller, request.pack_id)
        return pb.UploadPackResponse(pack_id=stored.pack_id.raw, stored_bytes=stored.size)

    @rpc
    async def GetPackUrl(
        self, request: pb.GetPackUrlRequest, context: Ctx
    ) -> pb.GetPackUrlResponse:
        caller = await self.core.authenticate(context)
        found = await self.run(self.storage.pack_url, caller, request.pack_id)
        if not found.url:
            return pb.GetPackUrlResponse(direct=False, size=found.size)
        return pb.GetPackUrlResponse(
            direct=True, url=found.url, expires_at=found.expires_at, size=found.size
        )

    @rpc_stream
    async def ReadPack(
        self, request: pb.ReadPackRequest, context: Ctx
    ) -> AsyncIterator[pb.ReadPackResponse]:
        caller = await self.core.authenticate(context)
        with self.core.gate.hold_account(caller.user.id):
            pieces = await self.run(
                self.storage.read_pack, caller, request.pack_id, request.offset, request.length
            )
            try:
                while (piece := await self.run(_next_piece, pieces)) is not None:
                    yield pb.ReadPackResponse(data=piece)
            finally:
                self.core.pool.submit(functools.partial(_close_quietly, pieces))

    @rpc_stream
    async def ListPacks(
        self, request: pb.ListPacksRequest, context: Ctx
    ) -> AsyncIterator[pb.ListPacksResponse]:
        caller = await self.core.authenticate(context)
        with self.core.gate.hold_account(caller.user.id):
            listing = await self.run(
                self.storage.list_packs, caller, request.include_entries, request.include_condemned
            )
            try:
                first = True  # even an account without packs hears its counters
                while (msg := await self.run(_pack_batch, listing)).packs or first:
                    yield msg
                    first = False
            finally:
                self.core.pool.submit(listing.close)

    @rpc
    async def CondemnPacks(
        self, request: pb.CondemnPacksRequest, context: Ctx
    ) -> pb.CondemnPacksResponse:
        caller = await self.core.authenticate(context)
        result = await self.run(
            self.storage.condemn_packs,
            caller,
            list(request.pack_ids),
            request.expected_generation,
            request.expected_ref_seq,
        )
        done = result.condemned
        return pb.CondemnPacksResponse(
            gc_generation=done.gc_generation,
            condemned=done.condemned,
            skipped_young=done.skipped_young,
            condemned_bytes=done.condemned_bytes,
            reap_at=result.reap_at,
        )

    @rpc
    async def RepairIndex(
        self, request: pb.RepairIndexRequest, context: Ctx
    ) -> pb.RepairIndexResponse:
        caller = await self.core.authenticate(context)
        entries = [storage.EntryIn(bytes(e.blob_id), e.offset, e.length) for e in request.entries]
        done = await self.run(
            self.storage.repair_index,
            caller,
            request.pack_id,
            entries,
            request.expected_generation,
        )
        return pb.RepairIndexResponse(
            added=done.added, removed=done.removed, gc_generation=done.gc_generation
        )

    @rpc
    async def ListRefHistory(
        self, request: pb.ListRefHistoryRequest, context: Ctx
    ) -> pb.ListRefHistoryResponse:
        caller = await self.core.authenticate(context)
        versions, seq = await self.run(
            self.core.refs.history, caller, request.name, request.after_seq, request.limit
        )
        return pb.ListRefHistoryResponse(
            versions=[_ref_version_to_wire(v) for v in versions], ref_seq=seq
        )

    @rpc
    async def ListRefs(self, request: pb.ListRefsRequest, context: Ctx) -> pb.ListRefsResponse:
        caller = await self.core.authenticate(context)
        refs, seq = await self.run(self.core.refs.list_refs, caller, request.prefix)
        return pb.ListRefsResponse(refs=[_ref_to_wire(r) for r in refs], ref_seq=seq)

    @rpc
    async def GetRef(self, request: pb.GetRefRequest, context: Ctx) -> pb.Ref:
        caller = await self.core.authenticate(context)
        return _ref_to_wire(await self.run(self.core.refs.get_ref, caller, request.name))

    @rpc
    async def UpdateRef(self, request: pb.UpdateRefRequest, context: Ctx) -> pb.Ref:
        caller = await self.core.authenticate(context)
        ref = await self.run(
            self.core.refs.update_ref,
            caller,
            request.name,
            request.expected_version,
            request.commit_id,
            request.gc_generation if request.HasField("gc_generation") else None,
        )
        return _ref_to_wire(ref)

    @rpc_stream
    async def WatchRefs(self, request: pb.WatchRefsRequest, context: Ctx) -> AsyncIterator[pb.Ref]:
        caller = await self.core.authenticate(context)
        with self.core.gate.hold_account(caller.user.id):
            watch = self.core.refs.watch(caller, request.names)
            try:
                # A heartbeat at once: the client learns the stream is open (gRPC
                # connects lazily) and catches up; registered first, nothing is missed.
                yield pb.Ref()
                while True:
                    try:
                        ref = await asyncio.wait_for(watch.next(), WATCH_HEARTBEAT)
                    except TimeoutError:
                        await self.core.authenticate(context)  # revoked meanwhile: cut off
                        yield pb.Ref()
                        continue
                    if ref is None:  # the server is stopping, or this watcher fell behind
                        return
                    yield _ref_to_wire(ref)
            finally:
                watch.close()


def _pack_batch(listing: PackListing) -> pb.ListPacksResponse:
    """The listing's next message (no packs at the end); built in the pool."""
    return pb.ListPacksResponse(
        gc_generation=listing.gc_generation,
        ref_seq=listing.ref_seq,
        packs=[_pack_to_wire(p) for p in listing.batch(LIST_PACKS_BATCH_BYTES)],
    )


def _next_piece(pieces: Iterator[bytes]) -> bytes | None:
    return next(pieces, None)


def _close_quietly(pieces: Iterator[bytes]) -> None:
    close = getattr(pieces, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):  # still running in its thread: ends on its own
            close()


# ---------------------------------------------------------------- registration


async def register(server: grpc.aio.Server, core: Core) -> health.aio.HealthServicer:
    """Add every AnySync service and the standard health service to `server`."""
    pb_grpc.add_AccountsServicer_to_server(AccountsService(core), server)
    pb_grpc.add_DevicesServicer_to_server(DevicesService(core), server)
    pb_grpc.add_StorageServicer_to_server(StorageService(core), server)
    health_servicer = health.aio.HealthServicer()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return health_servicer


# ---------------------------------------------------------------- wire ↔ domain


def _kdf_from_wire(msg: pb.KdfParams) -> KdfParams:
    return KdfParams(bytes(msg.salt), msg.log_n, msg.r, msg.p)


def _kdf_to_wire(kdf: KdfParams) -> pb.KdfParams:
    return pb.KdfParams(salt=kdf.salt, log_n=kdf.log_n, r=kdf.r, p=kdf.p)


def _login_to_wire(session: acc.Session) -> pb.LoginResponse:
    return pb.LoginResponse(
        user_id=session.user.user_id,
        device_id=session.device.id,
        sealed_token=session.sealed_token,
        master_keys=session.user.master_keys,
        kdf=_kdf_to_wire(session.user.kdf),
    )


def _header_from_wire(header: pb.PackHeader) -> storage.PackHeader:
    entries = [storage.EntryIn(bytes(e.blob_id), e.offset, e.length) for e in header.entries]
    return storage.PackHeader(header.size, bytes(header.sha256), entries, header.maintenance)


def _ref_to_wire(ref: Ref) -> pb.Ref:
    return pb.Ref(
        name=ref.name,
        commit_id=ref.commit_id.raw,
        version=ref.version,
        updated_at=ref.updated_at,
        updated_by_device=ref.updated_by_device,
    )


def _ref_version_to_wire(v: RefVersion) -> pb.RefVersion:
    return pb.RefVersion(
        name=v.name,
        version=v.version,
        commit_id=v.commit_id.raw,
        seq=v.seq,
        device_id=v.device_id,
        by_manage=v.by_manage,
        at=v.at,
    )


# metadata's LIVE, CONDEMNED, REAPING
_PACK_STATES = (pb.PACK_LIVE, pb.PACK_CONDEMNED, pb.PACK_REAPING)


def _pack_to_wire(pack: PackRow) -> pb.PackInfo:
    return pb.PackInfo(
        pack_id=pack.pack_id.raw,
        size=pack.size,
        charged=pack.charged,
        created_at=pack.created_at,
        state=_PACK_STATES[pack.state],
        condemned_at=pack.condemned_at or 0,
        entries=[
            pb.PackEntry(blob_id=e.blob_id.raw, offset=e.offset, length=e.length)
            for e in pack.entries
        ],
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
        rights=device.rights,
    )
