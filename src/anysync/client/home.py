"""The client's home directory: its files, its config, and the check that it is usable.

Client home (ANYSYNC_HOME, default ~/.config/anysync), mode 0700:

    config.json   version, server address, pinned fingerprint, e-mail, user ID, device,
                  KDF parameters (to unlock master.keys offline)          0600
    server.crt    the pinned server certificate (PEM)                    0600
    master.keys   the account keys wrapped under the password (keys.py)  0600
    device.keys   the account keys unwrapped, or protected for this device
                  by the desktop keyring or a passphrase (devicekeys.py)  0600
    access.keys   this device's access token, JSON                       0600
    state.db      local SQLite state (statedb.py)                        0600
    logged-out.json  after `anysync logout`: the config.json of the account this home
                  was logged in to (no secret in it); `login` takes the same account
                  back, keeping state.db, and refuses another one          0600

Every file is written atomically (temp file, fsync, rename, fsync of the directory).
`ClientHome.unlock` lives here, not in session.py: it reads and rewrites the home's own
files and talks only to the server the home is pinned to.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from anysync import crypto, tls
from anysync.client import devicekeys, keys
from anysync.client.devicekeys import DeviceKeyFile, Protection
from anysync.client.keys import MasterKeys
from anysync.client.remote import AccountInfo, Remote
from anysync.errors import IntegrityError, LocalStateError, WrongPassword
from anysync.types import KdfParams

CONFIG_VERSION = 1


def default_home() -> Path:
    env = os.environ.get("ANYSYNC_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "anysync"


@dataclass(frozen=True)
class ClientConfig:
    server: str
    fingerprint: str
    email: str
    user_id: str
    device_id: int
    device_name: str
    kdf: KdfParams

    def to_json(self) -> dict[str, object]:
        return {
            "version": CONFIG_VERSION,
            "server": self.server,
            "fingerprint": self.fingerprint,
            "email": self.email,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "device_name": self.device_name,
            "kdf": {
                "salt": self.kdf.salt.hex(),
                "log_n": self.kdf.log_n,
                "r": self.kdf.r,
                "p": self.kdf.p,
            },
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> ClientConfig:
        if doc.get("version") != CONFIG_VERSION:
            raise ValueError(f"unsupported config version {doc.get('version')}")
        kdf = doc["kdf"]
        assert isinstance(kdf, dict)
        return cls(
            server=str(doc["server"]),
            fingerprint=str(doc["fingerprint"]),
            email=str(doc["email"]),
            user_id=str(doc["user_id"]),
            device_id=int(str(doc["device_id"])),
            device_name=str(doc["device_name"]),
            kdf=KdfParams(
                bytes.fromhex(kdf["salt"]), int(kdf["log_n"]), int(kdf["r"]), int(kdf["p"])
            ),
        )


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically: temp file, fsync, rename, fsync of the directory.

    The last fsync makes the rename itself durable: without it a power cut can bring
    back the old file (or none) after the command reported success.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# Every file a home may hold; each must be a regular file (or absent).
HOME_FILES = (
    "config.json",
    "logged-out.json",
    "server.crt",
    "master.keys",
    "device.keys",
    "access.keys",
    "state.db",
)


def home_problem(root: Path) -> str | None:
    """Why `root` cannot serve as the client home, or None. Only looks; changes nothing.

    A home that does not exist yet is fine if it can be created: its nearest existing
    ancestor must be a directory this user may write.
    """
    name = f"the anysync home {root}"
    for path in (root, *root.parents):
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there (or under a file): its parent decides
        except OSError as exc:
            return f"{name} cannot be used: {path}: {exc.strerror}"
        if path != root:
            return _creatable(name, path, st.st_mode)
        return _usable_dir(name, root, st.st_mode) or _usable_files(root)
    return None  # unreachable in practice: "/" exists


def _creatable(name: str, ancestor: Path, mode: int) -> str | None:
    if not stat.S_ISDIR(mode):
        return f"{name} cannot be created: {ancestor} is a file, not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{name} cannot be created: {ancestor} is not writable by this user"
    return None


def _usable_dir(name: str, root: Path, mode: int) -> str | None:
    fix = "; set ANYSYNC_HOME to a directory of your own"
    if not stat.S_ISDIR(mode):
        return f"{name} is a file, not a directory{fix}"
    if not os.access(root, os.R_OK | os.X_OK):
        return f"{name} is not readable by this user{fix}"
    if not os.access(root, os.W_OK):
        return f"{name} is not writable by this user (read-only?){fix}"
    return None


def _usable_files(root: Path) -> str | None:
    for file_name in HOME_FILES:
        path = root / file_name
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot use {path}: {exc.strerror}"
        if stat.S_ISDIR(st.st_mode):
            return f"{path} is a directory, not a file; move it out of the anysync home"
        if not stat.S_ISREG(st.st_mode):
            return f"{path} is not a regular file; move it out of the anysync home"
    return None


class ClientHome:
    def __init__(self, root: Path) -> None:
        self.root = root

    def check(self) -> None:
        """Refuse, with the reason, a home this user cannot use; before anything is done."""
        problem = home_problem(self.root)
        if problem is not None:
            raise LocalStateError(problem)

    @property
    def state_path(self) -> Path:
        return self.root / "state.db"

    def exists(self) -> bool:
        return (self.root / "config.json").exists()

    def config(self) -> ClientConfig:
        path = self.root / "config.json"
        if not path.exists():
            before = self.logged_out_config()
            if before is not None:
                raise LocalStateError(
                    f"this device was logged out of {before.email} on {before.server}; run "
                    f"`anysync login --server {before.server} --email {before.email}`"
                )
            raise LocalStateError(
                f"this device is not logged in (no {path}); run `anysync signup` or `anysync login`"
            )
        return self._config_file(path)

    def _config_file(self, path: Path) -> ClientConfig:
        try:
            return ClientConfig.from_json(json.loads(path.read_bytes()))
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise LocalStateError(
                f"{path} is unreadable ({exc}); move {self.root} aside and run `anysync login` "
                "again: your data is safe on the server"
            ) from None

    def logged_out_config(self) -> ClientConfig | None:
        """The account this home was logged out of (`anysync logout`), if it was."""
        path = self.root / "logged-out.json"
        return self._config_file(path) if path.exists() else None

    def forget_login(self) -> None:
        """Log this home out: keep config.json as logged-out.json (which account the
        local state belongs to), then delete the token and every copy of the keys.
        Renamed first: a crash halfway leaves a logged-out home with a leftover secret
        that the next login overwrites, never a logged-in home without its token."""
        os.replace(self.root / "config.json", self.root / "logged-out.json")
        _fsync_dir(self.root)
        for name in ("access.keys", "device.keys", "master.keys"):
            (self.root / name).unlink(missing_ok=True)
        _fsync_dir(self.root)

    def _read(self, name: str) -> bytes:
        path = self.root / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise LocalStateError(
                f"cannot read {path}: {exc.strerror}; run `anysync login` again"
            ) from None

    def certificate(self) -> bytes:
        return self._read("server.crt")

    def token(self) -> bytes:
        try:
            doc = json.loads(self._read("access.keys"))
            token = bytes.fromhex(doc["token"])
        except (ValueError, KeyError, TypeError):
            raise LocalStateError(
                f"{self.root / 'access.keys'} is unreadable; run `anysync login` again"
            ) from None
        if len(token) != crypto.KEY_SIZE:
            raise LocalStateError("the stored access token is malformed; run `anysync login` again")
        return token

    def remote(self) -> Remote:
        cfg = self.config()
        cert = self.certificate()
        if tls.fingerprint(cert) != cfg.fingerprint:
            raise LocalStateError(
                f"{self.root / 'server.crt'} does not match the pinned fingerprint"
            )
        return Remote(cfg.server, cert, self.token())

    def local_keys(self) -> bytes:
        """This device's master.keys, checked to be well-formed (not yet opened)."""
        local = self._read("master.keys")
        try:
            keys.claimed_counter(local)
        except IntegrityError:
            raise LocalStateError(
                f"{self.root / 'master.keys'} is corrupt; run `anysync login` again"
            ) from None
        return local

    def unlock(
        self, remote: Remote, passphrase: Callable[[], str], password: Callable[[], str]
    ) -> MasterKeys:
        """The account keys, from device.keys: no password, no scrypt (devicekeys.py).

        `passphrase` is asked only when the user protected device.keys with one. A home
        written before device.keys existed is unlocked once with the account password,
        which writes the file.

        The server's master.keys is still compared with this device's copy: a copy that
        is not newer is refused (a replay of keys an old password opens, docs/design.md
        §3); a newer one (the password was changed on another device) is kept for
        `passwd` and a later log-in. The data keys it wraps are the same, so nothing else
        changes here.
        """
        current = remote.whoami()
        key_file = self.device_key_file()
        if key_file is None:
            master = self._unlock_with_password(password(), current)
            self.save_device_keys(devicekeys.plain_file(master, self.config().user_id))
            return master
        cfg = self.config()
        if key_file.user_id != cfg.user_id:
            raise LocalStateError(
                f"{self.root / 'device.keys'} belongs to another account; run "
                "`anysync keys protect none --from-password`"
            )
        local = self.local_keys()
        if current.master_keys != local:
            keys.refuse_stale(local, current.master_keys)
            self.save_keys(replace(cfg, kdf=current.kdf), current.master_keys)
        return self.open_device_keys(key_file, passphrase)

    def unlock_with_password(self, password: str) -> MasterKeys:
        """The account keys, unwrapped with the password (scrypt): for `passwd` and
        `keys protect --from-password` only."""
        remote = self.remote()
        try:
            current = remote.whoami()
        finally:
            remote.close()
        return self._unlock_with_password(password, current)

    def _unlock_with_password(self, password: str, current: AccountInfo) -> MasterKeys:
        """The server's copy of master.keys wins when it is newer: after a password change
        on another device, only the new password works. A copy that is not newer (a
        replay of the keys the old password opens) is refused before the password is
        tried (docs/design.md §3).
        """
        cfg = self.config()
        local = self.local_keys()
        if current.master_keys != local:
            keys.refuse_stale(local, current.master_keys)
            kek, _ = crypto.derive_password_keys(password, current.kdf)
            try:
                master = keys.unwrap(current.master_keys, kek, cfg.user_id)
            except WrongPassword:
                raise WrongPassword(
                    "wrong password (it was changed on another device; use the new one)"
                ) from None
            self.save_keys(replace(cfg, kdf=current.kdf), current.master_keys)
            return master
        kek, _ = crypto.derive_password_keys(password, cfg.kdf)
        return keys.unwrap(local, kek, cfg.user_id)

    def device_key_file(self) -> DeviceKeyFile | None:
        """device.keys as read (not opened), or None if this home has none yet."""
        path = self.root / "device.keys"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalStateError(f"cannot read {path}: {exc.strerror}") from None
        return devicekeys.parse(data, path)

    def open_device_keys(
        self, key_file: DeviceKeyFile, passphrase: Callable[[], str]
    ) -> MasterKeys:
        if key_file.protection is Protection.NONE:
            return devicekeys.open_file(key_file, None)
        if key_file.protection is Protection.KEYRING:
            user = devicekeys.keyring_user(key_file.user_id, self.root)
            return devicekeys.open_file(key_file, devicekeys.keyring_get(user))
        assert key_file.kdf is not None
        wrap_key = devicekeys.passphrase_key(passphrase(), key_file.kdf)
        return devicekeys.open_file(key_file, wrap_key)

    def save_device_keys(self, key_file: DeviceKeyFile) -> None:
        _write_private(self.root / "device.keys", key_file.to_json())

    def save(
        self,
        cfg: ClientConfig,
        cert_pem: bytes,
        master_keys: bytes,
        token: bytes,
        device_keys: DeviceKeyFile,
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        _write_private(self.root / "server.crt", cert_pem)
        _write_private(self.root / "master.keys", master_keys)
        self.save_device_keys(device_keys)
        _write_private(
            self.root / "access.keys", json.dumps({"version": 1, "token": token.hex()}).encode()
        )
        # config.json last: its presence means "logged in", so a crash before it leaves
        # a home that simply looks logged out.
        _write_private(self.root / "config.json", json.dumps(cfg.to_json(), indent=2).encode())
        (self.root / "logged-out.json").unlink(missing_ok=True)

    def save_keys(self, cfg: ClientConfig, master_keys: bytes) -> None:
        """Replace master.keys with a newer copy; never with an older one."""
        keys.refuse_stale(self.local_keys(), master_keys)
        _write_private(self.root / "master.keys", master_keys)
        _write_private(self.root / "config.json", json.dumps(cfg.to_json(), indent=2).encode())
