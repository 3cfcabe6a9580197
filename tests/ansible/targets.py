"""Real targets for the Ansible role and the image: debootstrapped root file systems,
podman containers made from them, chroots started like a booted device, and a client
round trip against whatever they run.

Slow steps are cached under /var/cache/anysync-tests (ANYSYNC_TEST_CACHE) as tarballs
named after their inputs, so a second run on the same machine skips them; a fresh
machine builds everything from the Debian and PyPI registries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port, free_port_range  # noqa: F401 - used as targets.free_port*

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
IMAGE_DIR = REPO / "image-build"
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("ANYSYNC_TEST_CACHE", "/var/cache/anysync-tests"))
MIRROR = "http://deb.debian.org/debian"

# Podman on this kind of machine: Debian 12's crun refuses hybrid cgroups and the rlimit
# ceilings are below podman's defaults.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def require_root_tools(*tools: str) -> None:
    """Skip unless root on Debian with the tools that `make deps` installs; in CI
    (which runs as root and installs them) a missing tool is a failure."""
    problem = ""
    if os.geteuid() != 0:
        problem = "needs root (debootstrap, chroot, podman)"
    elif missing := [t for t in tools if shutil.which(t) is None]:
        problem = f"missing {', '.join(missing)}: run `make deps` as root"
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {problem}")
    if problem:
        pytest.skip(problem)


def extra_ca_certs() -> str:
    """The network's own CA, where HTTPS is intercepted (CI); empty elsewhere."""
    certs = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    return "\n".join(p.read_text().strip() for p in certs)


def run(
    argv: list[str], log: Path | None = None, timeout: float = 1800, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with the end of its output."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"{' '.join(argv[:4])} … exited {proc.returncode}:\n{tail}", pytrace=False)
    return proc


# ---------------------------------------------------------------- root file systems


def debian_rootfs(dest: Path, log: Path) -> None:
    """A minimal Debian 12 (amd64) like a fresh server: from the cache, or debootstrap."""
    key = hashlib.sha256(f"bookworm minbase {MIRROR} v1".encode()).hexdigest()[:16]
    tarball = CACHE / f"debian-amd64-{key}.tar"
    dest.mkdir(parents=True)
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = tarball.with_suffix(".staging")
        shutil.rmtree(staging, ignore_errors=True)
        # A private mount namespace: debootstrap's /proc and /sys mounts end with it.
        run(
            ["unshare", "--mount", "--propagation", "private", "debootstrap",
             "--variant=minbase", "bookworm", str(staging), MIRROR],
            log=log,
        )  # fmt: skip
        run(["tar", "-C", str(staging), "--numeric-owner", "-cpf", f"{tarball}.tmp", "."])
        os.replace(f"{tarball}.tmp", tarball)
        shutil.rmtree(staging)
    run(["tar", "-C", str(dest), "--numeric-owner", "-xpf", str(tarball)])
    # The host's resolver, so that apt and pip inside work like on a real host.
    shutil.copy("/etc/resolv.conf", dest / "etc" / "resolv.conf")


def build_wheel(dest: Path) -> Path:
    """A reproducible wheel of this checkout (what site.yml builds on the controller)."""
    env = dict(os.environ, SOURCE_DATE_EPOCH="315532800")
    run([str(BIN / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest),
         str(REPO)], env=env)  # fmt: skip
    (wheel,) = dest.glob("anysync-*.whl")
    return wheel


# ---------------------------------------------------------------- ansible


@dataclass
class Recap:
    ok: int
    changed: int
    failed: int
    output: str


def ansible_playbook(
    inventory: Path, playbook: Path, log: Path, extra_env: dict[str, str] | None = None
) -> Recap:
    env = dict(os.environ)
    env |= {
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PATH": f"{BIN}:{env.get('PATH', '')}",
    }
    env |= extra_env or {}
    proc = run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        log=log,
        env=env,
        timeout=3000,
    )
    totals = {"ok": 0, "changed": 0, "failed": 0}
    for line in proc.stdout.splitlines():
        if re.match(r"^\S+\s+:\s+ok=", line) and not line.startswith("localhost"):
            for key in totals:
                totals[key] += int(re.search(rf"\b{key}=(\d+)", line).group(1))  # type: ignore[union-attr]
    return Recap(totals["ok"], totals["changed"], totals["failed"], proc.stdout)


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks that reported a change, for a readable failure."""
    names, current = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line
        elif line.startswith("changed:") and current:
            names.append(current)
    return names


# ---------------------------------------------------------------- podman


@contextlib.contextmanager
def podman_env(tmp: Path) -> Iterator[dict[str, str]]:
    conf = tmp / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    yield dict(os.environ, CONTAINERS_CONF=str(conf))


def podman_image_from(tarball: Path, env: dict[str, str], log: Path) -> str:
    """Import a root file system tarball as a local image (once per tarball)."""
    tag = f"localhost/anysync-test-{tarball.stem}:latest"
    exists = subprocess.run(["podman", "image", "exists", tag], env=env, check=False)
    if exists.returncode != 0:
        run(["podman", "import", str(tarball), tag], log=log, env=env)
    return tag


def sshd_rootfs_tarball(log: Path) -> Path:
    """debian_rootfs plus an SSH server and Python: a host Ansible reaches over SSH.

    Also the role's system packages, so that its converge spends its time on what only
    this test covers (the chroot test installs them from nothing)."""
    key = hashlib.sha256(f"bookworm minbase {MIRROR} sshd v2".encode()).hexdigest()[:16]
    tarball = CACHE / f"debian-amd64-sshd-{key}.tar"
    if not tarball.exists():
        staging = tarball.with_suffix(".staging")
        shutil.rmtree(staging, ignore_errors=True)
        debian_rootfs(staging, log)
        script = (
            'mount -t proc proc "$1/proc" && chroot "$1" sh -c "apt-get update -q && '
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
            "openssh-server python3 python3-apt python3-venv python3-packaging nftables netbase "
            'logrotate ca-certificates && apt-get clean && mkdir -p /run/sshd"'
        )
        run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "x",
             str(staging)], log=log)  # fmt: skip
        run(["tar", "-C", str(staging), "--numeric-owner", "-cpf", f"{tarball}.tmp", "."])
        os.replace(f"{tarball}.tmp", tarball)
        shutil.rmtree(staging)
    return tarball


@dataclass
class SshTarget:
    """A host reached over SSH on 127.0.0.1:port as root with a throwaway key."""

    port: int
    key: Path

    def inventory_vars(self) -> dict[str, object]:
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": (
                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            ),
        }


def ssh_key(tmp: Path) -> Path:
    key = tmp / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    return key


# No ControlPersist: it would leave ssh master processes behind the test.
SSH_ENV = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no", "ANSIBLE_PIPELINING": "1"}


@contextlib.contextmanager
def podman_container(
    image: str, name: str, ports: dict[int, int], env: dict[str, str], log: Path, key: Path
) -> Iterator[SshTarget]:
    """A running container whose main process is sshd (a host without systemd)."""
    ssh_port = free_port()
    ports = {ssh_port: 22, **ports}
    publish = [arg for host, ctr in ports.items() for arg in ("-p", f"127.0.0.1:{host}:{ctr}")]
    try:
        run(
            ["podman", "run", "-d", "--name", name, "--init", "--cap-add", "NET_ADMIN",
             "--hostname", "anysync-box", *publish, image, "/usr/sbin/sshd", "-D", "-e"],
            log=log, env=env,
        )  # fmt: skip
        pub = key.with_suffix(".pub").read_text()
        run(["podman", "exec", "-i", name, "sh", "-c",
             "mkdir -p -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys"],
            env=env, input=pub)  # fmt: skip
        yield SshTarget(ssh_port, key)
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "5", name], env=env, capture_output=True,
                       check=False)  # fmt: skip


# ---------------------------------------------------------------- a booted chroot


@dataclass
class ChrootDevice:
    """A root file system started like a booted device (no systemd: the appliance's
    wrapper, in private PID and mount namespaces); killing it ends every process."""

    root: Path
    proc: subprocess.Popen[bytes]

    def admin(self, *args: str) -> str:
        return run(["chroot", str(self.root), "/usr/local/bin/anysync-server", *args]).stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextlib.contextmanager
def boot_chroot(root: Path, log: Path) -> Iterator[ChrootDevice]:
    # As anysync.service runs it: as the anysync user, output appended to its log file.
    script = (
        'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && '
        'exec chroot "$1" runuser -u anysync -- sh -c '
        '"exec /opt/anysync/libexec/anysync-appliance >>/var/lib/anysync/logs/appliance.log 2>&1"'
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation",
             "private", "sh", "-c", script, "boot", str(root)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},  # as systemd
        )  # fmt: skip
    device = ChrootDevice(root, proc)
    try:
        yield device
    except BaseException:
        appliance_log = root / "var/lib/anysync/logs/appliance.log"
        if appliance_log.exists():
            print(f"--- appliance log ---\n{appliance_log.read_text()[-6000:]}")
        raise
    finally:
        device.stop()


def wait_for(check: object, timeout: float, what: str, interval: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
