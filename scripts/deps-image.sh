#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for image-build/ and tests/image (make deps runs every
# scripts/deps-*.sh): debootstrap and qemu-user-static + binfmt for the foreign-arch root
# file system, mtools/dosfstools/parted/e2fsprogs to assemble the disk image without
# mounting it, and qemu-system-arm (which has qemu-system-aarch64 too) to boot it.
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

apt_install_missing deps-image \
  debootstrap qemu-user-static binfmt-support qemu-system-arm ipxe-qemu \
  mtools dosfstools parted fdisk e2fsprogs xz-utils openssh-client ca-certificates \
  || deps_stop deps-image $?
enable_binfmt
