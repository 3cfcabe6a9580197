"""The Raspberry Pi image: build it (image-build/build.sh), boot it in QEMU, wait for
first boot, read the fingerprint and the first invite from the console, then connect a
client from the host through forwarded ports, back up and restore.

arm64 runs by default. armhf (32-bit boards) builds and boots to healthy services when
ANYSYNC_TEST_ARMHF=1 (`make test-image-armhf`): under emulation it takes 35-40 minutes,
most of it compiling the dependencies that PyPI has no armv7 wheels for (cffi, PyNaCl
with its libsodium, zstandard, pyfastcdc).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ansible import targets
from tests.ansible.roundtrip import round_trip

pytestmark = pytest.mark.slow

BOOT_OFFSET = "@@4M"  # the FAT partition starts at 4 MiB (image-build/mkimage.sh)


@dataclass(frozen=True)
class Arch:
    name: str
    qemu: str
    machine: list[str]
    console: str


ARM64 = Arch("arm64", "qemu-system-aarch64", ["-M", "virt", "-cpu", "cortex-a72"], "ttyAMA0")
# highmem=off: a 32-bit kernel cannot reach the PCI ECAM window that QEMU puts above 4 GiB.
ARMHF = Arch(
    "armhf", "qemu-system-arm", ["-M", "virt,highmem=off", "-cpu", "cortex-a15"], "ttyAMA0"
)


def _build(arch: Arch, tmp: Path) -> tuple[Path, Path]:
    """build.sh ARCH → (image, the root file system it was made from)."""
    user_qemu = f"qemu-{'aarch64' if arch.name == 'arm64' else 'arm'}-static"
    targets.require_root_tools("debootstrap", arch.qemu, user_qemu, "mcopy", "parted", "mkfs.vfat")
    image = tmp / f"anysync-rpi-{arch.name}.img"
    prebuilt = os.environ.get("ANYSYNC_TEST_PREBUILT_IMAGE")  # developers: IMAGE:ROOTFS
    if prebuilt:
        src, root = prebuilt.split(":")
        shutil.copy(src, image)
        (tmp / "work").mkdir()
        targets.run(["cp", "-a", root, str(tmp / "work" / "rootfs")])
        return image, tmp / "work" / "rootfs"
    env = dict(
        os.environ,
        ANYSYNC_CACHE_DIR=str(targets.CACHE),
        ANYSYNC_WORK_DIR=str(tmp / "work"),
        ANYSYNC_EXTRA_CA_CERTS=targets.extra_ca_certs(),
        ANSIBLE_PLAYBOOK=str(targets.BIN / "ansible-playbook"),
    )
    targets.run([str(targets.IMAGE_DIR / "build.sh"), arch.name, str(image)],
                log=tmp / "build.log", env=env, timeout=3600)  # fmt: skip
    return image, tmp / "work" / "rootfs"


def _check_no_device_secrets(root: Path) -> None:
    assert not list((root / "etc/ssh").glob("ssh_host_*")), "SSH host keys baked in"
    assert (root / "etc/machine-id").read_text() == "", "machine-id baked in"
    assert not (root / "var/lib/anysync/server").exists(), "server home baked in"
    assert not (root / "var/lib/anysync/objectstore").exists(), "store credentials baked in"
    assert not (root / "etc/anysync/ca-bundle.pem").exists(), "build CA left in the image"


def _mtools(*argv: str) -> str:
    return targets.run(list(argv)).stdout


@dataclass
class Vm:
    proc: subprocess.Popen[bytes]
    serial: Path
    ssh_port: int
    grpc_port: int
    s3_port: int
    key: Path

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def ssh(self, command: str, check: bool = True) -> str:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=20", "root@127.0.0.1", command]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"ssh {command}: {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc.stdout


@pytest.fixture
def boot() -> Iterator[object]:
    vms: list[Vm] = []

    def start(arch: Arch, image: Path, tmp: Path) -> Vm:
        kernel_dir = tmp / "kernel"
        kernel_dir.mkdir()
        names = [n.split("/")[-1] for n in _mtools("mdir", "-b", "-i", f"{image}{BOOT_OFFSET}",
                                                   "::").split()]  # fmt: skip
        for wanted in ("vmlinuz-", "initrd.img-"):
            (name,) = [n for n in names if n.startswith(wanted)]
            _mtools("mcopy", "-i", f"{image}{BOOT_OFFSET}", f"::{name}", str(kernel_dir / wanted))
        vm = Vm(
            proc=None,  # type: ignore[arg-type]
            serial=tmp / "serial.log",
            ssh_port=targets.free_port(),
            grpc_port=targets.free_port(),
            s3_port=targets.free_port(),
            key=tmp / "id_ed25519",
        )
        fwd = ",".join(
            f"hostfwd=tcp:127.0.0.1:{host}-:{guest}"
            for host, guest in ((vm.ssh_port, 22), (vm.grpc_port, 65065), (vm.s3_port, 65064))
        )
        # What a user puts on the boot partition: an SSH key, and the store's address as
        # clients see it (here: the forwarded port).
        targets.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(vm.key)])
        shutil.copy(vm.key.with_suffix(".pub"), tmp / "authorized_keys")
        (tmp / "anysync.toml").write_text(
            f'[storage]\npublic_endpoint = "http://127.0.0.1:{vm.s3_port}"\n'
        )
        for name in ("authorized_keys", "anysync.toml"):
            _mtools("mcopy", "-o", "-i", f"{image}{BOOT_OFFSET}", str(tmp / name), f"::{name}")
        kernel, initrd = kernel_dir / "vmlinuz-", kernel_dir / "initrd.img-"
        cmdline = f"root=LABEL=RASPIROOT rw rootwait console={arch.console} net.ifnames=0"
        with open(tmp / "qemu.err", "wb") as qemu_err:
            vm.proc = subprocess.Popen(
                [arch.qemu, *arch.machine, "-smp", "2", "-m", "2048",
                 "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
                 "-drive", f"file={image},format=raw,if=virtio",
                 "-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0",
                 "-display", "none", "-serial", f"file:{vm.serial}", "-monitor", "none",
                 "-no-reboot"],
                stdout=subprocess.DEVNULL, stderr=qemu_err,
            )  # fmt: skip
        vms.append(vm)
        return vm

    yield start
    for vm in vms:
        if vm.proc.poll() is None:
            vm.proc.kill()
        vm.proc.wait()


def _first_boot_report(vm: Vm, timeout: float) -> str:
    def done() -> bool:
        assert vm.proc.poll() is None, f"QEMU exited:\n{vm.console()[-4000:]}"
        return "ANYSYNC-FIRSTBOOT-END" in vm.console()

    try:
        targets.wait_for(done, timeout, "the first-boot report on the console", interval=5)
    except BaseException:
        print(vm.console()[-8000:])
        raise
    text = vm.console()
    return text[text.index("ANYSYNC-FIRSTBOOT-BEGIN") : text.index("ANYSYNC-FIRSTBOOT-END")]


def _boot_and_check(arch: Arch, tmp: Path, boot: object, round_trip_from_host: bool) -> None:
    image, root = _build(arch, tmp)
    _check_no_device_secrets(root)
    shutil.rmtree(tmp / "work")
    table = targets.run(["parted", "-s", str(image), "unit", "MiB", "print"]).stdout
    assert "fat32" in table and "ext4" in table
    boot_files = _mtools("mdir", "-b", "-i", f"{image}{BOOT_OFFSET}", "::")
    firmware = "start4.elf" if arch.name == "arm64" else "start.elf"
    for name in ("config.txt", "cmdline.txt", firmware):
        assert name in boot_files, boot_files
    cmdline = _mtools("mtype", "-i", f"{image}{BOOT_OFFSET}", "::cmdline.txt")
    assert "root=LABEL=RASPIROOT" in cmdline
    size = image.stat().st_size
    # An SD card bigger than the image: first boot grows the root file system into it.
    with image.open("r+b") as f:
        f.truncate(size + (1 << 30))

    vm = boot(arch, image, tmp)  # type: ignore[operator]
    report = _first_boot_report(vm, timeout=1500)
    fingerprint = re.search(r"fingerprint:\s+([0-9a-f:]+)", report, re.I)
    invite = re.search(r"first invite:\s+(\S+)", report)
    assert fingerprint and invite, report

    # The user's SSH key from the boot partition was honoured.
    assert vm.ssh("systemctl is-active anysync.service anysync-firewall.service").split() == [
        "active",
        "active",
    ]
    rules = vm.ssh("nft list table inet anysync")
    # armhf has no object store (PyPI has no 32-bit SeaweedFS): 65064 stays closed.
    assert ("22, 65064, 65065" if arch.name == "arm64" else "22, 65065") in rules, rules
    assert vm.ssh("cat /etc/machine-id").strip()
    assert vm.ssh("ls /etc/ssh/ssh_host_ed25519_key").strip()
    root_kib = int(vm.ssh("df --output=size -k / | tail -1"))
    assert root_kib * 1024 > (size - (260 << 20)) + (900 << 20), "root file system not grown"
    assert invite.group(1) in vm.ssh("cat /boot/firmware/anysync-firstboot.txt")
    assert vm.ssh("anysync-server fingerprint").strip() == fingerprint.group(1)

    if round_trip_from_host:
        round_trip(tmp, f"127.0.0.1:{vm.grpc_port}", fingerprint.group(1), invite.group(1))

    vm.ssh("systemctl poweroff", check=False)
    try:
        vm.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        vm.proc.kill()
        vm.proc.wait()
    # Readable from any computer after shutdown: the report on the boot partition.
    text = _mtools("mtype", "-i", f"{image}{BOOT_OFFSET}", "::anysync-firstboot.txt")
    assert invite.group(1) in text and fingerprint.group(1) in text


def test_arm64_image_boots_and_serves_a_client(tmp_path: Path, boot: object) -> None:
    _boot_and_check(ARM64, tmp_path, boot, round_trip_from_host=True)


@pytest.mark.skipif(os.environ.get("ANYSYNC_TEST_ARMHF") != "1", reason="ANYSYNC_TEST_ARMHF=1")
def test_armhf_image_builds_and_boots_to_healthy_services(tmp_path: Path, boot: object) -> None:
    _boot_and_check(ARMHF, tmp_path, boot, round_trip_from_host=False)
