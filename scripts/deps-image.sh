#!/usr/bin/env bash
# System packages for image-build/ and tests/image (make deps runs every
# scripts/deps-*.sh): debootstrap and qemu-user-static + binfmt for the foreign-arch root
# file system, mtools/dosfstools/parted/e2fsprogs to assemble the disk image without
# mounting it, and qemu-system-arm (which has qemu-system-aarch64 too) to boot it.
# Installs only what is missing; does nothing when not root or not on Debian/Ubuntu.
set -euo pipefail

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "deps-image: not root on Debian; skipping (tests/image will skip)" >&2
  exit 0
fi

wanted=(
  debootstrap qemu-user-static binfmt-support qemu-system-arm ipxe-qemu
  mtools dosfstools parted fdisk e2fsprogs xz-utils openssh-client ca-certificates
)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
    || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "deps-image: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Foreign-architecture binaries run through binfmt_misc, which machines without systemd
# do not mount at boot; qemu-user-static registers with the F flag (no copy in the chroot).
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [[ -e /proc/sys/fs/binfmt_misc/register ]] \
  && [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 || ! -e /proc/sys/fs/binfmt_misc/qemu-arm ]]; then
  update-binfmts --enable >/dev/null 2>&1 || true
fi
