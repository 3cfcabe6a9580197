#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for the `anysync service` tests (make deps runs every scripts/deps-*.sh):
# systemd's own unit verifier and calendar parser (systemd-analyze, in the systemd
# package). The client needs it only to check --schedule, where systemd runs anyway.
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

apt_install_missing deps-service systemd || deps_stop deps-service $?
