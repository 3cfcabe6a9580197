#!/usr/bin/env bash
# Build the AnySync Raspberry Pi image: a Debian 12 root file system for ARCH
# (rootfs.sh), the anysync_server role applied to it through Ansible's chroot connection
# (image.yml), then the disk image (mkimage.sh). Needs root, and the packages of
# scripts/deps-image.sh.
#
#   image-build/build.sh ARCH [OUT.img]        ARCH: arm64 (Pi 3/4/5) or armhf (Pi 2/3)
#
# Environment:
#   ANYSYNC_CACHE_DIR       keep the debootstrapped tree here and reuse it (default: none)
#   ANYSYNC_WORK_DIR        where to build (default: a temporary directory, removed after)
#   ANYSYNC_WHEEL           the AnySync wheel to install (default: built from this checkout)
#   ANYSYNC_EXTRA_CA_CERTS  PEM text of extra CA certificates, for networks that
#                           intercept HTTPS: used while building, not left in the image
#   ANYSYNC_OBJECTSTORE     seaweedfs (arm64 default), minio, or none (armhf default:
#                           PyPI has no 32-bit SeaweedFS; the server stores on the SD card)
#   ANSIBLE_PLAYBOOK        the ansible-playbook to run (default: the repository's .venv)
#   ANYSYNC_DEBIAN_MIRROR, ANYSYNC_SECURITY_MIRROR, ANYSYNC_INITRAMFS_MODULES: rootfs.sh
set -euo pipefail

arch=${1:?usage: build.sh arm64|armhf [OUT.img]}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=$(realpath -m "${2:-anysync-rpi-$arch.img}")
playbook_bin=${ANSIBLE_PLAYBOOK:-$repo/.venv/bin/ansible-playbook}
[[ -x $playbook_bin ]] || playbook_bin=$(command -v ansible-playbook)
python_bin=$(dirname "$playbook_bin")/python
[[ -x $python_bin ]] || python_bin=python3

log() { printf '%s build[%s]: %s\n' "$(date +%T)" "$arch" "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  echo "build.sh: needs root (debootstrap, chroot)" >&2
  exit 1
fi

work=${ANYSYNC_WORK_DIR:-}
if [[ -z $work ]]; then
  work=$(mktemp -d /var/tmp/anysync-image.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
root=$work/rootfs
rm -rf "$root"

SECONDS=0
"$here/rootfs.sh" "$arch" "$root" "${ANYSYNC_CACHE_DIR:-}"
log "root file system ready after ${SECONDS} s"

wheel=${ANYSYNC_WHEEL:-}
if [[ -z $wheel ]]; then
  log "building the AnySync wheel from $repo"
  rm -rf "$work/dist"
  SOURCE_DATE_EPOCH=315532800 "$python_bin" -m pip wheel -q --no-deps -w "$work/dist" "$repo"
  wheel=$(ls "$work"/dist/anysync-*.whl)
fi

# While building: the host's resolver, and no service starts inside the tree.
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

cat >"$work/inventory.yml" <<INVENTORY
anysync_images:
  hosts:
    $root:
      ansible_connection: community.general.chroot
      ansible_python_interpreter: /usr/bin/python3
INVENTORY
case $arch in
  armhf) objectstore=${ANYSYNC_OBJECTSTORE:-none} ;;
  *) objectstore=${ANYSYNC_OBJECTSTORE:-seaweedfs} ;;
esac
ANYSYNC_WHEEL=$wheel ANYSYNC_OBJECTSTORE=$objectstore python3 -c 'import json, os, sys; json.dump({
  "anysync_wheel": os.environ["ANYSYNC_WHEEL"],
  "anysync_objectstore": os.environ["ANYSYNC_OBJECTSTORE"],
  "anysync_extra_ca_certs": os.environ.get("ANYSYNC_EXTRA_CA_CERTS", ""),
}, sys.stdout)' >"$work/vars.json"

log "applying the role through the chroot connection"
# /proc, /sys and /dev inside the tree, in a private mount namespace: they disappear
# with it, also when Ansible fails.
ANSIBLE_CONFIG=$repo/ansible/ansible.cfg ANSIBLE_ROLES_PATH=$repo/ansible/roles \
  unshare --mount --propagation private -- sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc" && mount -t sysfs sys "$root/sys" &&
    mount --rbind /dev "$root/dev" && exec "$@"' sh "$root" \
  "$playbook_bin" -i "$work/inventory.yml" "$here/image.yml" \
  -e "@$work/vars.json" >&2 \
  || { log "ansible-playbook failed"; exit 1; }
log "role applied after ${SECONDS} s"

if [[ ${ANYSYNC_SECURITY_MIRROR:-} == none ]]; then
  log "built without the security archive; the device gets its updates on first upgrade"
  echo "deb http://security.debian.org/debian-security bookworm-security main non-free-firmware" \
    >>"$root/etc/apt/sources.list"
fi

# Nothing of the build machine stays in the image.
rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf" "$root/etc/anysync/ca-bundle.pem"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/root/.cache \
  "$root"/root/.ansible "$root"/tmp/* "$root"/var/tmp/*
find "$root/var/log" -type f -exec truncate -s 0 {} +

"$here/mkimage.sh" "$root" "$out"
log "wrote $out after ${SECONDS} s"
