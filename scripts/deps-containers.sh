#!/usr/bin/env bash
# System packages for tests/containers (make deps runs every scripts/deps-*.sh):
# podman and buildah with the runtime pieces they need on Debian 12, mmdebstrap for a
# local base image, qemu-user-static + binfmt for the emulated arm64 build, and a
# linter for the image's shell scripts (shellcheck).
# Installs only what is missing; does nothing when not root or not on Debian/Ubuntu.
set -euo pipefail

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "deps-containers: not root on Debian; skipping (tests/containers will skip)" >&2
  exit 0
fi

wanted=(
  podman buildah runc conmon netavark aardvark-dns containernetworking-plugins
  slirp4netns uidmap fuse-overlayfs catatonit
  mmdebstrap arch-test qemu-user-static binfmt-support shellcheck
)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
    || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "deps-containers: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Foreign-architecture binaries (the arm64 image build) run through binfmt_misc, which
# machines without systemd do not mount at boot.
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [[ -e /proc/sys/fs/binfmt_misc/register && ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable >/dev/null 2>&1 || true
fi
