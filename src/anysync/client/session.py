"""The account flows: sign-up, log-in, certificate pinning and password change.

The home they write is home.py. Nothing is written until the server has accepted the
signup or login, so a wrong password or an unreachable server leaves the home exactly
as it was. These flows, and `protect_device_keys --from-password`, are the only ones
that run scrypt on the account password; every other command opens device.keys
(devicekeys.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace

from anysync import crypto, tls
from anysync.client import devicekeys, keys
from anysync.client.devicekeys import Protection
from anysync.client.home import ClientConfig, ClientHome
from anysync.client.keys import MasterKeys
from anysync.client.remote import LoginResult, Remote, fetch_certificate
from anysync.errors import AuthError, IntegrityError, LocalStateError, UsageError, WrongPassword

Confirm = Callable[[str], bool]


def pin_certificate(
    address: str, fingerprint: str | None, trust_new: bool, confirm: Confirm | None
) -> bytes:
    """Fetch the server certificate and decide whether to trust it (like SSH)."""
    cert = fetch_certificate(address)
    actual = tls.fingerprint(cert)
    if fingerprint is not None:
        if tls.normalize_fingerprint(fingerprint) != actual:
            raise IntegrityError(
                f"the server at {address} presented certificate fingerprint {actual}, not the "
                "expected one; do not continue unless you know why it changed"
            )
        return cert
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
    if home.exists():
        cfg = home.config()
        raise UsageError(
            f"{home.root} is already logged in as {cfg.email} on {cfg.server}; "
            "use another ANYSYNC_HOME for another account"
        )


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
    home: ClientHome, *, address: str, email: str, password: str, device_name: str, cert: bytes
) -> ClientConfig:
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
            raise WrongPassword(f"wrong e-mail or password ({exc.message})") from None
    finally:
        remote.close()
    return _finish_login(home, address, cert, email, device_name, result, device_secret, kek)


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
