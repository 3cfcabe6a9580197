"""The account flows: sign-up, log-in, log-out, certificate pinning, password change.

The home they write is home.py. Nothing is written until the server has accepted the
signup or login, so a wrong password or an unreachable server leaves the home exactly
as it was. These flows, and `protect_device_keys --from-password`, are the only ones
that run scrypt on the account password; every other command opens device.keys
(devicekeys.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from anysync import crypto, tls
from anysync.client import devicekeys, keys
from anysync.client.devicekeys import Protection
from anysync.client.home import ClientConfig, ClientHome
from anysync.client.keys import MasterKeys
from anysync.client.remote import LoginResult, Remote, fetch_certificate
from anysync.errors import (
    AnySyncError,
    AuthError,
    IntegrityError,
    LocalStateError,
    ServerUnreachable,
    TlsMismatch,
    UsageError,
    WrongPassword,
)

Confirm = Callable[[str], bool]


def pin_certificate(
    address: str,
    fingerprint: str | None,
    trust_new: bool,
    confirm: Confirm | None,
    *,
    known: str | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> bytes:
    """Fetch the server certificate and decide whether to trust it (like SSH).

    `known`: the fingerprint this home pinned before (a logged-out or revoked home). The
    same certificate is trusted again without asking; a different one only when
    `fingerprint` names it, with a warning: never by a prompt or --trust-new, which
    would make an intercepted connection one keystroke away."""
    cert = fetch_certificate(address)
    actual = tls.fingerprint(cert)
    if fingerprint is not None:
        if tls.normalize_fingerprint(fingerprint) != actual:
            raise TlsMismatch(
                f"the server at {address} presented certificate fingerprint {actual}, not the "
                "expected one; do not continue unless you know why it changed"
            )
        if known is not None and known != actual:
            warn(
                f"the server's certificate changed since this device last logged in (pinned "
                f"{known}, now {actual}); trusting the new one because --fingerprint names it"
            )
        return cert
    if known is not None:
        if known == actual:
            return cert
        raise TlsMismatch(
            f"the server at {address} presents certificate fingerprint {actual}, not the "
            f"{known} this device pinned. If the server was reinstalled, compare with "
            "`anysync-server fingerprint` on it and log in with --fingerprint; if not, "
            "someone may be intercepting the connection"
        )
    if trust_new:
        return cert
    if confirm is None:
        raise UsageError(
            "cannot confirm the server's certificate without a terminal; pass --fingerprint "
            "(from `anysync-server fingerprint` on the server) or --trust-new"
        )
    question = (
        f"The server at {address} presents a certificate with SHA-256 fingerprint\n  {actual}\n"
        "Compare it with `anysync-server fingerprint` on the server. Trust it?"
    )
    if not confirm(question):
        raise UsageError("certificate not trusted; nothing was changed")
    return cert


def _finish_login(
    home: ClientHome,
    address: str,
    cert: bytes,
    email: str,
    device_name: str,
    result: LoginResult,
    device_secret: bytes,
    kek: bytes,
) -> ClientConfig:
    try:
        master = keys.unwrap(result.master_keys, kek, result.user_id)
    except WrongPassword:
        # The server accepted our login secret, so the password is right: the keys it
        # returned are not the ones we wrapped.
        raise IntegrityError(
            "the server returned master.keys that do not open with this password"
        ) from None
    token = crypto.open_sealed(device_secret, result.sealed_token)
    cfg = ClientConfig(
        server=address,
        fingerprint=tls.fingerprint(cert),
        email=email,
        user_id=result.user_id,
        device_id=result.device_id,
        device_name=device_name,
        kdf=result.kdf,
    )
    try:
        home.save(
            cfg, cert, result.master_keys, token, devicekeys.plain_file(master, result.user_id)
        )
    except OSError as exc:  # checked before, so a race or a full disk
        raise LocalStateError(
            f"the server accepted this device, but {exc.filename or home.root} could not be "
            f"written ({exc.strerror}); fix that and run `anysync login`"
        ) from None
    return cfg


def _refuse_existing(home: ClientHome) -> None:
    home.check()  # before the server is asked: an account without a home is no use
    before = home.logged_out_config() or (home.config() if home.exists() else None)
    if before is not None:
        raise UsageError(
            f"{home.root} holds the sync state of {before.email} on {before.server}; "
            "use another ANYSYNC_HOME for a new account"
        )


def previous_login(home: ClientHome, email: str) -> ClientConfig | None:
    """The account this home belonged to, if `login` as `email` may take it back: the
    home was logged out, or its login stopped working (the device was revoked, the
    server's certificate changed, the token is lost). None for a new home. Refused when
    the login still works (log out first) or the home is another account's: its sync
    state describes that account's folders, and would delete files if applied to
    another's."""
    home.check()
    before = home.logged_out_config()
    if before is None and home.exists():
        before = home.config()
        if _login_works(home):
            raise UsageError(
                f"{home.root} is already logged in as {before.email} on {before.server}; "
                "run `anysync logout` first, or use another ANYSYNC_HOME for another account"
            )
    if before is not None and before.email != email:
        raise UsageError(
            f"{home.root} holds the sync state of {before.email}; log in as {before.email}, "
            "or use another ANYSYNC_HOME for another account"
        )
    return before


def _login_works(home: ClientHome) -> bool:
    try:
        remote = home.remote()
    except LocalStateError:  # no readable token or certificate: nothing works
        return False
    try:
        remote.whoami()
        return True
    except (AuthError, TlsMismatch):  # revoked, or the server's certificate changed
        return False
    except ServerUnreachable as exc:
        raise ServerUnreachable(
            f"{exc.message}; this device is logged in to that server: if it moved or is "
            "gone for good, run `anysync logout` (works offline) and log in again"
        ) from None
    finally:
        remote.close()


def signup(
    home: ClientHome,
    *,
    address: str,
    email: str,
    invite: str,
    password: str,
    device_name: str,
    cert: bytes,
) -> ClientConfig:
    _refuse_existing(home)
    master = MasterKeys.generate()
    user_id = secrets.token_hex(16)
    kdf = crypto.new_kdf_params()
    kek, login_secret = crypto.derive_password_keys(password, kdf)
    wrapped = keys.wrap(master, kek, user_id, counter=0)
    device_secret, device_public = crypto.new_box_keypair()
    remote = Remote(address, cert)
    try:
        result = remote.signup(
            email=email,
            invite=invite,
            user_id=user_id,
            kdf=kdf,
            login_secret=login_secret,
            master_keys=wrapped,
            device_name=device_name,
            device_public_key=device_public,
        )
    finally:
        remote.close()
    return _finish_login(home, address, cert, email, device_name, result, device_secret, kek)


def login(
    home: ClientHome,
    *,
    address: str,
    email: str,
    password: str,
    device_name: str,
    cert: bytes,
    previous: ClientConfig | None = None,
) -> ClientConfig:
    """Log this device in. `previous`: what previous_login returned (the account this
    home belonged to); the account the server answers for must be that one."""
    if previous is None:
        _refuse_existing(home)
    remote = Remote(address, cert)
    try:
        kdf = remote.pre_login(email)
        kek, login_secret = crypto.derive_password_keys(password, kdf)
        device_secret, device_public = crypto.new_box_keypair()
        try:
            result = remote.login(
                email=email,
                login_secret=login_secret,
                device_name=device_name,
                device_public_key=device_public,
            )
        except AuthError as exc:
            raise WrongPassword(_wrong_password(exc.message)) from None
    finally:
        remote.close()
    if previous is not None and result.user_id != previous.user_id:
        _revoke_quietly(address, cert, result, device_secret)
        raise UsageError(
            f"{email} on {address} is a different account from the one {home.root} was "
            "used with (the server was set up anew?); its sync state does not apply: use "
            "another ANYSYNC_HOME"
        )
    return _finish_login(home, address, cert, email, device_name, result, device_secret, kek)


def _wrong_password(server_says: str) -> str:
    """One message, not "wrong e-mail or password (wrong e-mail or password)"."""
    said = server_says.strip()
    return (
        said
        if said.startswith("wrong e-mail or password")
        else (f"wrong e-mail or password ({said})" if said else "wrong e-mail or password")
    )


def _revoke_quietly(address: str, cert: bytes, result: LoginResult, device_secret: bytes) -> None:
    """Undo a login this home cannot use: the new device's token stops working."""
    token = crypto.open_sealed(device_secret, result.sealed_token)
    remote = Remote(address, cert, token)
    try:
        remote.revoke_device(result.device_id)
    except AnySyncError:  # the token then only ages unused; the user sees the device listed
        pass
    finally:
        remote.close()


@dataclass(frozen=True)
class LoggedOut:
    config: ClientConfig
    revoked: bool  # the server stopped this device's token
    why_not: str  # when not: what went wrong (the server could not be reached, ...)


def logout(home: ClientHome) -> LoggedOut:
    """Log this device out: its token is revoked at the server when it can be reached,
    and the token and keys are deleted here (with a keyring entry holding them); the
    sync state and caches stay for the next `login` of the same account."""
    cfg = home.config()
    revoked, why_not = False, ""
    try:
        remote = home.remote()
        try:
            remote.revoke_device(cfg.device_id)
        finally:
            remote.close()
        revoked = True
    except AuthError:  # revoked already: what logging out asks for
        revoked = True
    except AnySyncError as exc:  # unreachable, certificate changed, token unreadable
        why_not = exc.message
    try:
        key_file = home.device_key_file()
    except LocalStateError:
        key_file = None
    home.forget_login()
    if key_file is not None and key_file.protection is Protection.KEYRING:
        devicekeys.keyring_delete(devicekeys.keyring_user(cfg.user_id, home.root))
    return LoggedOut(cfg, revoked, why_not)


def change_password(home: ClientHome, old_password: str, new_password: str) -> None:
    master = home.unlock_with_password(old_password)
    cfg = home.config()  # after unlock, which may have taken the server's newer KDF salt
    # The copy unlock just opened: its key version is authentic. The new one counts on.
    version = keys.claimed_counter(home.local_keys()) + 1
    _, old_login = crypto.derive_password_keys(old_password, cfg.kdf)
    new_kdf = crypto.new_kdf_params()
    new_kek, new_login = crypto.derive_password_keys(new_password, new_kdf)
    wrapped = keys.wrap(master, new_kek, cfg.user_id, counter=version)
    remote = home.remote()
    try:
        remote.change_password(
            old_login_secret=old_login,
            new_login_secret=new_login,
            new_kdf=new_kdf,
            new_master_keys=wrapped,
        )
    finally:
        remote.close()
    try:
        home.save_keys(replace(cfg, kdf=new_kdf), wrapped)
    except OSError as exc:
        raise LocalStateError(
            f"the password was changed on the server, but {exc.filename or home.root} could "
            f"not be updated ({exc.strerror}); the next command with the new password "
            "takes the server's copy"
        ) from None


def protect_device_keys(
    home: ClientHome, protection: Protection, master: MasterKeys, passphrase: str | None
) -> None:
    """Write device.keys anew under `protection`; a keyring entry it no longer needs is
    deleted. The keyring is written before the file: a crash between the two leaves a
    file the new entry does not open, which `--from-password` mends."""
    cfg = home.config()
    try:
        before = home.device_key_file()
    except LocalStateError:  # unreadable: it is being replaced
        before = None
    user = devicekeys.keyring_user(cfg.user_id, home.root)
    if protection is Protection.NONE:
        key_file = devicekeys.plain_file(master, cfg.user_id)
    elif protection is Protection.KEYRING:
        wrap_key = secrets.token_bytes(crypto.KEY_SIZE)
        devicekeys.keyring_set(user, wrap_key)
        key_file = devicekeys.sealed_file(master, cfg.user_id, protection, wrap_key)
    else:
        assert passphrase is not None
        kdf = crypto.new_kdf_params()
        wrap_key = devicekeys.passphrase_key(passphrase, kdf)
        key_file = devicekeys.sealed_file(master, cfg.user_id, protection, wrap_key, kdf)
    home.save_device_keys(key_file)
    was_keyring = before is not None and before.protection is Protection.KEYRING
    if was_keyring and protection is not Protection.KEYRING:
        devicekeys.keyring_delete(user)
