#!/usr/bin/env bash
# System packages for tests/ansible (make deps runs every scripts/deps-*.sh): debootstrap
# for the target root file systems, podman (with runc: Debian 12's crun refuses hybrid
# cgroups) for the container target, and the clients the tests drive it with.
# Installs only what is missing; does nothing when not root or not on Debian/Ubuntu.
set -euo pipefail

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "deps-ansible: not root on Debian; skipping (tests/ansible will skip)" >&2
  exit 0
fi

wanted=(
  debootstrap podman runc conmon netavark aardvark-dns containernetworking-plugins
  slirp4netns uidmap catatonit openssh-client ca-certificates
)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
    || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "deps-ansible: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
