# shellcheck shell=bash
# Sourced by scripts/deps-*.sh (bash).
#
#   apt_install_missing NAME PACKAGE...
#
# Installs the Debian packages that are not installed yet. Returns
#   0  when they are all installed (now or before);
#   2  when this machine cannot install them (not root, or not Debian/Ubuntu): a
#      deliberate skip, which `deps_stop` turns into success (the tests that need them
#      skip) except when CI is set, where it is an error;
#   1  when apt-get itself failed (unknown package, network, dpkg lock): always an error.
#
# `apt-get update` runs before installing, unless the package lists are newer than
# APT_UPDATE_MAX_AGE seconds (default 3600; 0 always updates).

apt_install_missing() {
  local name=$1 pkg
  shift
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    echo "$name: not root on Debian; cannot install $*" >&2
    return 2
  fi
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
      || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "$name: installing ${missing[*]}"
  if ! _apt_lists_fresh; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q || {
      echo "$name: apt-get update failed" >&2
      return 1
    }
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || {
    echo "$name: apt-get install ${missing[*]} failed" >&2
    return 1
  }
}

# True when `apt-get update` ran less than APT_UPDATE_MAX_AGE seconds ago.
_apt_lists_fresh() {
  local max_age=${APT_UPDATE_MAX_AGE:-3600} newest
  ((max_age > 0)) || return 1
  newest=$(find /var/lib/apt/lists -maxdepth 1 -type f -name '*_InRelease' -printf '%T@\n' \
    2>/dev/null | sort -n | tail -n 1)
  [[ -n $newest ]] || return 1
  (($(date +%s) - ${newest%.*} < max_age))
}

# Ends a deps script whose apt_install_missing returned STATUS (non-zero): a skip (2)
# exits 0 outside CI and 1 when CI is set; an apt-get failure exits 1.
#
#   apt_install_missing deps-x pkg... || deps_stop deps-x $?
deps_stop() {
  local name=$1 status=$2
  if ((status == 2)) && [[ -z ${CI:-} ]]; then
    echo "$name: skipping (the tests that need these packages will skip)" >&2
    exit 0
  elif ((status == 2)); then
    echo "$name: failing: CI is set, so the tests that need these packages must run" >&2
  fi
  exit 1
}

# Foreign-architecture binaries run through binfmt_misc, which machines without systemd
# do not mount at boot; qemu-user-static registers its handlers with the F flag.
enable_binfmt() {
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  fi
  if [[ -e /proc/sys/fs/binfmt_misc/register ]] \
    && [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 || ! -e /proc/sys/fs/binfmt_misc/qemu-arm ]]; then
    update-binfmts --enable >/dev/null 2>&1 || true
  fi
}
