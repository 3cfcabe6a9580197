"""Accounts and devices: registration modes and invites, log-in with its limits,
password changes, device tokens, and who a call's token belongs to.

Plain functions of domain values: no gRPC here (anysync.server.service converts the
wire and maps the errors). Every method blocks (SQLite, scrypt) and runs in the pool.
Fields arrive as the client sent them; each is checked here before anything changes
(docs/protocol.md §4), with UsageError for a bad one.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Protocol

from anysync import crypto
from anysync.errors import (
    AppendOnly,
    AuthError,
    IntegrityError,
    PermissionDenied,
    UsageError,
    WrongPassword,
)
from anysync.server import auth
from anysync.server.config import ServerConfig
from anysync.server.limiter import PER_LOGIN, Backoff, LoginLimiter
from anysync.server.metadata import Device, Metadata, NewAccount, NewDevice, User
from anysync.types import KdfParams, device_name_problem

log = logging.getLogger(__name__)

MAX_MASTER_KEYS = 4096
MAX_DEVICE_NAME = 100
LAST_SEEN_EVERY = 60  # seconds: how stale last_seen_at may get before a write
_USER_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated account and device of a call."""

    user: User
    device: Device

    def manages(self) -> bool:
        """The effective manage right (granted, or elevated by a fresh password proof)."""
        return self.device.manages(time.time())

    def refuse_append_only(self, what: str) -> None:
        """AppendOnly if the calling device may only add."""
        if self.device.rights == "append":
            raise AppendOnly(f"this device is append-only: it may not {what}")


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """The device a Signup or Login creates: its name and X25519 public key."""

    name: str
    public_key: bytes


@dataclass(frozen=True, slots=True)
class SignupForm:
    email: str
    invite: str
    user_id: str
    kdf: KdfParams
    login_secret: bytes
    master_keys: bytes
    device: DeviceKey


@dataclass(frozen=True, slots=True)
class LoginForm:
    email: str
    login_secret: bytes
    device: DeviceKey


@dataclass(frozen=True, slots=True)
class PasswordChange:
    old_login_secret: bytes
    new_login_secret: bytes
    new_kdf: KdfParams
    new_master_keys: bytes


@dataclass(frozen=True, slots=True)
class Session:
    """A new device: its token sealed to the device's public key."""

    user: User
    device: Device
    sealed_token: bytes


class LoginLimits(Protocol):
    """Limits on log-in attempts and on unauthenticated calls, per e-mail and address."""

    def check(self, email: str, address: str) -> None: ...  # RateLimited
    def record_failure(self, email: str, address: str) -> None: ...
    def record_success(self, email: str, address: str) -> None: ...
    def allow(self, kind: str, address: str) -> None: ...  # "prelogin", "signup"


def login_limits(config: ServerConfig, db: Metadata) -> LoginLimits:
    """The server's LoginLimits: in its database, so a restart forgives nobody.
    `max_failed_logins` is the free failures of one e-mail from one address."""
    login = Backoff(config.max_failed_logins, PER_LOGIN.first, PER_LOGIN.cap)
    return LoginLimiter(db, login=login)


class Accounts:
    def __init__(
        self, config: ServerConfig, db: Metadata, server_secret: bytes, limits: LoginLimits
    ) -> None:
        self.config = config
        self.db = db
        self.secret = server_secret
        self.limits = limits

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller whose `authorization` metadata this is (§3), else AuthError."""
        digest = auth.token_digest_from_header(authorization)
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

    def pre_login(self, email: str, address: str) -> KdfParams:
        """The account's KDF parameters; for an unknown e-mail, fake ones that look real."""
        self.limits.allow("prelogin", address)
        email = auth.normalize_email(email)
        user = self.db.user_by_email(email)
        return user.kdf if user is not None else auth.fake_kdf_params(self.secret, email)

    def signup(self, form: SignupForm, address: str) -> Session:
        mode = self.config.registration
        if mode == "closed":
            raise PermissionDenied("registration is closed on this server")
        self.limits.allow("signup", address)
        invite_hash = None
        if mode == "invite":
            if not form.invite.strip():
                raise PermissionDenied("this server needs an invite code to sign up")
            invite_hash = auth.invite_hash(form.invite)
        email = auth.normalize_email(form.email)
        if not _USER_ID.fullmatch(form.user_id):
            raise UsageError("user_id must be 32 lower-case hex digits")
        kdf = checked_kdf(form.kdf)
        secret = _login_secret(form.login_secret)
        master_keys = _master_keys(form.master_keys)
        new_device = _device(form.device)

        login_hash, salt, params = auth.hash_login_secret(secret)
        token, token_hash = auth.new_token()
        user, device = self.db.create_account(
            NewAccount(form.user_id, email, kdf, login_hash, salt, params, master_keys),
            NewDevice(device_name(new_device.name), new_device.public_key, token_hash),
            invite_hash,
            _now(),
        )
        log.info("signup: account %s (%s), device %d", user.user_id, email, device.id)
        return Session(user, device, crypto.seal_to(new_device.public_key, token))

    def login(self, form: LoginForm, address: str) -> Session:
        email = auth.normalize_email(form.email)
        secret = _login_secret(form.login_secret)
        new_device = _device(form.device)
        self.limits.check(email, address)

        user = self.db.user_by_email(email)
        if user is None:
            auth.burn_login_hash(secret)  # as slow as a wrong password: no enumeration
        if user is None or not auth.verify_login_secret(
            secret, user.login_hash, user.login_hash_salt, user.login_hash_params
        ):
            self._failed("login", email, address)
            raise WrongPassword("wrong e-mail or password")
        self.limits.record_success(email, address)
        if user.disabled:
            raise PermissionDenied("account disabled")

        token, token_hash = auth.new_token()
        device = self.db.add_device(
            user.id,
            NewDevice(device_name(new_device.name), new_device.public_key, token_hash),
            _now(),
        )
        log.info("login: account %s, new device %d", user.user_id, device.id)
        return Session(user, device, crypto.seal_to(new_device.public_key, token))

    def change_password(self, caller: Caller, change: PasswordChange, address: str) -> None:
        old_secret = _login_secret(change.old_login_secret)
        new_secret = _login_secret(change.new_login_secret)
        kdf = checked_kdf(change.new_kdf)
        master_keys = _master_keys(change.new_master_keys)
        user = caller.user
        self._verify_password(caller, old_secret, "password change", address)
        login_hash, salt, params = auth.hash_login_secret(new_secret)
        self.db.change_login(user.id, login_hash, salt, params, kdf, master_keys)
        log.info("password changed: account %s, by device %d", user.user_id, caller.device.id)

    def elevate(self, caller: Caller, login_secret: bytes, address: str) -> int:
        """A fresh password proof: the calling device has the manage right for
        `[gc] elevation` seconds. Returns until when (unix seconds)."""
        caller.refuse_append_only("elevate its rights")
        secret = _login_secret(login_secret)
        self._verify_password(caller, secret, "elevation", address)
        until = _now() + self.config.gc_elevation_seconds
        self.db.set_elevated_until(caller.device.id, until)
        log.info("account %s: device %d elevated", caller.user.user_id, caller.device.id)
        return until

    def _verify_password(self, caller: Caller, secret: bytes, what: str, address: str) -> None:
        """WrongPassword unless `secret` is the account's; failures count toward the
        log-in limits, so that a stolen token is no unlimited password oracle."""
        user = caller.user
        self.limits.check(user.email, address)
        if not auth.verify_login_secret(
            secret, user.login_hash, user.login_hash_salt, user.login_hash_params
        ):
            self._failed(what, user.email, address)
            raise WrongPassword("wrong password")
        self.limits.record_success(user.email, address)

    def _failed(self, what: str, email: str, address: str) -> None:
        self.limits.record_failure(email, address)
        log.warning("failed %s for %s from %s", what, email, address)

    def list_devices(self, caller: Caller) -> list[Device]:
        return self.db.list_devices(caller.user.id)

    def set_device_rights(self, caller: Caller, device_id: int, rights: str) -> None:
        """Lowering a device's rights is open to write and manage devices (a device
        that looks stolen can be cut down at once); raising them needs manage."""
        caller.refuse_append_only("change device rights")
        self.db.set_device_rights(caller.user.id, device_id, rights, may_raise=caller.manages())
        log.info(
            "account %s: device %d now has the %s right (set by device %d)",
            caller.user.user_id,
            device_id,
            rights,
            caller.device.id,
        )

    def rename_device(self, caller: Caller, device_id: int, name: str) -> None:
        if device_id != caller.device.id:
            caller.refuse_append_only("rename other devices")
        self.db.rename_device(caller.user.id, device_id, device_name(name))

    def revoke_device(self, caller: Caller, device_id: int) -> None:
        if device_id != caller.device.id:
            caller.refuse_append_only("revoke other devices")
        self.db.revoke_device(caller.user.id, device_id, _now())
        log.info(
            "account %s: device %d revoked by device %d",
            caller.user.user_id,
            device_id,
            caller.device.id,
        )


def device_name(name: str) -> str:
    """`name` without surrounding spaces, if it may name a device (types.py)."""
    name = name.strip()
    problem = device_name_problem(name)
    if problem is not None:
        raise UsageError(problem)
    return name


def checked_kdf(params: KdfParams) -> KdfParams:
    """`params` if the client may use them (crypto.check_kdf_params), else UsageError."""
    try:
        crypto.check_kdf_params(params)
    except IntegrityError:
        raise UsageError(
            f"KDF parameters rejected: need a {crypto.SALT_SIZE}-byte salt, "
            f"log_n {crypto.kdf_floor_log_n()}..22, r {crypto.KDF_R}..32, p {crypto.KDF_P}..16"
        ) from None
    return params


def _login_secret(raw: bytes) -> bytes:
    if len(raw) != auth.LOGIN_SECRET_SIZE:
        raise UsageError(f"a login secret is {auth.LOGIN_SECRET_SIZE} bytes")
    return bytes(raw)


def _master_keys(raw: bytes) -> bytes:
    if not 0 < len(raw) <= MAX_MASTER_KEYS:
        raise UsageError(f"master_keys must be 1 to {MAX_MASTER_KEYS} bytes")
    return bytes(raw)


def _device(key: DeviceKey) -> DeviceKey:
    name = key.name.strip()
    if not 0 < len(name) <= MAX_DEVICE_NAME or not name.isprintable():
        raise UsageError(f"a device name is 1 to {MAX_DEVICE_NAME} printable characters")
    if len(key.public_key) != 32:
        raise UsageError("device_public_key must be a 32-byte X25519 public key")
    return DeviceKey(name, bytes(key.public_key))


def _now() -> int:
    return int(time.time())
