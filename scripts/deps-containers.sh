#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for tests/containers (make deps runs every scripts/deps-*.sh):
# podman and buildah with the runtime pieces they need on Debian 12, mmdebstrap for a
# local base image, qemu-user-static + binfmt for the emulated arm64 build, and a
# linter for the image's shell scripts (shellcheck).
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

apt_install_missing deps-containers \
  podman buildah runc conmon netavark aardvark-dns containernetworking-plugins \
  slirp4netns uidmap fuse-overlayfs catatonit \
  mmdebstrap arch-test qemu-user-static binfmt-support shellcheck \
  || deps_stop deps-containers $?
enable_binfmt
