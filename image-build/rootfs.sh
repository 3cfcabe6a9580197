#!/usr/bin/env bash
# Make a Debian 12 root file system for a Raspberry Pi (arm64 or armhf) in DIR: a
# minimal debootstrap, then the kernel and the Raspberry Pi firmware with a small
# initramfs. Foreign-architecture binaries run through binfmt_misc + qemu-user-static.
#
#   image-build/rootfs.sh ARCH DIR [CACHE_DIR]
#
# With CACHE_DIR the finished tree is kept there as a tarball named after everything
# that shapes it (this script, the suite, the mirror), so a second build on the same
# machine unpacks it in seconds instead of debootstrapping for minutes.
#
# Environment: ANYSYNC_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# ANYSYNC_SECURITY_MIRROR (default http://security.debian.org/debian-security; "none"
# builds without the security archive, for networks whose mirror serves a broken index
# of it; build.sh adds it back to the image's sources list once the role is applied),
# ANYSYNC_INITRAMFS_MODULES = "list" (default: the modules QEMU and the Pi boot from,
# fast to build under emulation) or "most" (Debian's default: every storage driver,
# e.g. for USB boot on a Pi 4).
set -euo pipefail

arch=${1:?usage: rootfs.sh ARCH DIR [CACHE_DIR]}
dir=${2:?usage: rootfs.sh ARCH DIR [CACHE_DIR]}
cache=${3:-}
suite=bookworm
mirror=${ANYSYNC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${ANYSYNC_SECURITY_MIRROR:-http://security.debian.org/debian-security}
modules=${ANYSYNC_INITRAMFS_MODULES:-list}

case $arch in
  arm64) kernel=linux-image-arm64 ;;
  armhf) kernel=linux-image-armmp ;;
  *) echo "rootfs.sh: unknown architecture $arch (arm64 or armhf)" >&2; exit 2 ;;
esac

# Packages of the base system; AnySync itself comes later, from the Ansible role.
base=systemd-sysv,udev,kmod,dbus,openssh-server,python3,python3-apt,ifupdown,isc-dhcp-client,iproute2
base+=,dosfstools,e2fsprogs,fdisk,ca-certificates,systemd-timesyncd,less,nano,sudo

log() { printf '%s rootfs[%s]: %s\n' "$(date +%T)" "$arch" "$*" >&2; }

key=$(cat "$0" <(echo "$suite $mirror $security $modules $base") | sha256sum | cut -c1-16)
tarball=${cache:+$cache/rootfs-$arch-$key.tar}

if [[ -n $tarball && -s $tarball ]]; then
  log "unpacking cached $tarball"
  mkdir -p "$dir"
  tar -C "$dir" --numeric-owner -xpf "$tarball"
  exit 0
fi

if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable >/dev/null 2>&1 || true

# Run a command inside the tree with /proc, /sys and /dev mounted in a private mount
# namespace: nothing stays mounted on the host, even when the command fails.
in_root() {
  unshare --mount --propagation private -- sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc" && mount -t sysfs sys "$root/sys" &&
    mount --rbind /dev "$root/dev" && exec chroot "$root" "$@"' in_root "$dir" "$@"
}

rm -rf "$dir"
mkdir -p "$dir"
log "debootstrap $suite (minbase, without the kernel)"
# debootstrap itself mounts /proc and /sys inside the target: keep those in a private
# namespace too.
unshare --mount --propagation private -- \
  debootstrap --arch="$arch" --variant=minbase --components=main,non-free-firmware \
  --include="$base" "$suite" "$dir" "$mirror" >&2

sources() {
  echo "deb $mirror $suite main non-free-firmware"
  echo "deb $mirror $suite-updates main non-free-firmware"
  if [[ $1 != none ]]; then
    echo "deb $1 $suite-security main non-free-firmware"
  fi
}
sources "$security" >"$dir/etc/apt/sources.list"

# Before the kernel's postinst builds the initramfs: a small one, built once. Under
# emulation mkinitramfs with MODULES=most takes minutes; a list takes seconds.
mkdir -p "$dir/etc/initramfs-tools/conf.d"
echo "MODULES=$modules" >"$dir/etc/initramfs-tools/conf.d/anysync-modules.conf"
cat >>"$dir/etc/initramfs-tools/modules" <<'MODULES'
# AnySync image: QEMU virt (virtio) and the Raspberry Pi SD card (sdhci-iproc, bcm2835).
virtio_blk
virtio_pci
virtio_mmio
virtio_net
sdhci_iproc
bcm2835_sdhost
mmc_block
ext4
MODULES

# The firmware package writes /boot/firmware (config.txt, cmdline.txt, kernel, DTBs)
# with these settings, and again on every kernel upgrade.
mkdir -p "$dir/boot/firmware"
cat >"$dir/etc/default/raspi-firmware" <<'FIRMWARE'
ROOTPART=LABEL=RASPIROOT
CONSOLES="ttyS1,115200 tty0"
FIRMWARE

export DEBIAN_FRONTEND=noninteractive
apt_install() {
  in_root apt-get -y -q -o Dpkg::Options::=--force-confold install --no-install-recommends "$@" >&2
}
log "apt-get upgrade, then $kernel and raspi-firmware"
# A mirror in the middle of a sync serves mismatched indexes for a while: try again.
for attempt in 1 2 3 4 5; do
  in_root apt-get update -q >&2 && break
  [[ $attempt -lt 5 ]] || { echo "rootfs.sh: apt-get update kept failing" >&2; exit 1; }
  sleep $((attempt * 20))
done
in_root apt-get -y -q -o Dpkg::Options::=--force-confold upgrade >&2
# The kernel's postinst builds the initramfs, and the initramfs-tools trigger would build
# it a second time: turn the trigger's update off while the kernel goes in.
apt_install initramfs-tools
conf=$dir/etc/initramfs-tools/update-initramfs.conf
sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$conf"
apt_install "$kernel" raspi-firmware
sed -i 's/^update_initramfs=.*/update_initramfs=yes/' "$conf"
in_root apt-get clean
if ! ls "$dir"/boot/firmware/initrd.img-* >/dev/null 2>&1; then
  echo "rootfs.sh: raspi-firmware did not populate /boot/firmware" >&2
  exit 1
fi

if [[ -n $tarball ]]; then
  log "caching $tarball"
  mkdir -p "$cache"
  tar -C "$dir" --numeric-owner -cpf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
log "done"
