#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for tests/ansible (make deps runs every scripts/deps-*.sh): debootstrap
# for the target root file systems, podman (with runc: Debian 12's crun refuses hybrid
# cgroups) for the container target, and the clients the tests drive it with.
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

apt_install_missing deps-ansible \
  debootstrap podman runc conmon netavark aardvark-dns containernetworking-plugins \
  slirp4netns uidmap catatonit openssh-client ca-certificates \
  || deps_stop deps-ansible $?
