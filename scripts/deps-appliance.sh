#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for tests/appliance (make deps runs every scripts/deps-*.sh): nftables,
# whose `nft --check` validates deploy/firewall. (supervisor comes from pip.)
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

apt_install_missing deps-appliance nftables || deps_stop deps-appliance $?
