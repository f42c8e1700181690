#!/usr/bin/env bash
# Install and start what a Makefile target needs on this machine.
#
#   scripts/ensure.sh python     Python 3.11 with venv
#   scripts/ensure.sh docker     a Docker engine that answers (installs docker.io, starts dockerd)
#   scripts/ensure.sh debootstrap
#   scripts/ensure.sh postgres   PostgreSQL 15 server binaries (initdb, pg_ctl, pg_dump, psql)
#   scripts/ensure.sh node       Node.js >= 18 and npm
#   scripts/ensure.sh zstd | git | shellcheck
#   scripts/ensure.sh bind9      BIND 9 (named, named-checkconf, tsig-keygen) and dig/nsupdate
#   scripts/ensure.sh hey        hey, the HTTP load generator the load-test module is compared with
#
# As root on Debian/Ubuntu it installs what is missing with apt-get; otherwise it
# stops with a message naming exactly what to install.
set -euo pipefail

log() { printf '[ensure] %s\n' "$*" >&2; }
die() { printf '[ensure] ERROR: %s\n' "$*" >&2; exit 1; }

apt_updated=
apt_install() {
  # apt_install <what, for the message> <package>...
  local what=$1; shift
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "$what is missing. Install it (Debian/Ubuntu: sudo apt-get install -y $*) and run make again."
  fi
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed; cannot install $*"
    apt_updated=1
  fi
  log "installing $* ($what)"
  if ! DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l apt-get install -y -qq --no-install-recommends "$@" \
      >/tmp/tokotani-apt.log 2>&1; then
    tail -20 /tmp/tokotani-apt.log >&2
    die "apt-get install $* failed (log above); install $what by hand and run make again"
  fi
}

ensure_python() {
  local py=${PYTHON:-python3.11}
  command -v "$py" >/dev/null 2>&1 || apt_install "Python 3.11" python3.11 python3.11-venv
  "$py" -c 'import venv, ensurepip' 2>/dev/null || apt_install "Python 3.11 venv" python3.11-venv
}

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

ensure_docker() {
  command -v docker >/dev/null 2>&1 && docker_answers && return 0
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install "the Docker engine" docker.io
  fi
  command -v dockerd >/dev/null 2>&1 || die "no Docker engine (dockerd) and it could not be installed: install docker.io"
  docker_answers && return 0
  log "starting dockerd in the background (log: /var/log/tokotani-dockerd.log)"
  [ "$(id -u)" = 0 ] || die "the Docker engine is not running and only root can start it: sudo dockerd &"
  nohup dockerd >/var/log/tokotani-dockerd.log 2>&1 &
  for _ in $(seq 60); do
    docker_answers && { log "dockerd is up"; return 0; }
    sleep 1
  done
  tail -20 /var/log/tokotani-dockerd.log >&2 || true
  die "dockerd did not answer within 60 s (log above)"
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/1[6-9]/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_postgres() {
  pg_bindir >/dev/null || apt_install "PostgreSQL 15 server binaries" postgresql-15 postgresql-client-15
  # The integration tier runs the minor release the servers get from Debian: 15.20's pg_restore
  # refuses what 15.18's accepted (FIFOs in a directory archive), and only the containers saw it.
  local installed candidate
  installed=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
  candidate=$(apt-cache policy postgresql-15 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ "$(id -u)" = 0 ] && [ -n "$installed" ] && [ -n "$candidate" ] && [ "$candidate" != "(none)" ] \
      && dpkg --compare-versions "$candidate" gt "$installed"; then
    ( apt_install "PostgreSQL $candidate (installed: $installed)" postgresql-15 postgresql-client-15 ) \
      || log "warning: PostgreSQL stays at $installed (the upgrade to $candidate failed, see above)"
  fi
  pg_bindir >/dev/null || die "initdb not found under /usr/lib/postgresql/15/bin after install"
  id postgres >/dev/null 2>&1 || die "the postgres system user is missing (it comes with the postgresql-15 package)"
}

ensure_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$major" -ge 18 ] && return 0
    die "Node.js $(node --version) is too old: 18 or newer is needed"
  fi
  apt_install "Node.js and npm" nodejs npm
}

ensure_bind9() {
  # The DNS switch tests run their own named (foreground, own config in a temp dir, loopback only);
  # they never use or reconfigure the package's own named service.
  if [ -x /usr/sbin/named ] && command -v dig >/dev/null 2>&1 && command -v nsupdate >/dev/null 2>&1 \
      && [ -x /usr/sbin/named-checkconf ]; then
    return 0
  fi
  apt_install "BIND 9 (named) and its tools (dig, nsupdate)" bind9 bind9-utils bind9-dnsutils
  [ -x /usr/sbin/named ] || die "named not found in /usr/sbin after installing bind9"
}

ensure_hey() {
  # tests/integration/test_http_load_test.py compares tokotani.dr.http_load_test with hey, on loopback only.
  command -v hey >/dev/null 2>&1 && return 0
  apt_install "hey (HTTP load generator)" hey
  command -v hey >/dev/null 2>&1 || die "hey not found on PATH after installing the hey package"
}

ensure_cmd() {
  # ensure_cmd <command> <package>
  command -v "$1" >/dev/null 2>&1 || apt_install "$1" "$2"
}

[ $# -gt 0 ] || die "usage: $0 python|docker|debootstrap|postgres|node|zstd ..."
for what in "$@"; do
  case "$what" in
    python) ensure_python ;;
    docker) ensure_docker ;;
    debootstrap) ensure_cmd debootstrap debootstrap ;;
    postgres) ensure_postgres ;;
    node) ensure_node ;;
    zstd) ensure_cmd zstd zstd ;;
    git) ensure_cmd git git ;;
    shellcheck) ensure_cmd shellcheck shellcheck ;;
    bind9) ensure_bind9 ;;
    hey) ensure_hey ;;
    *) die "unknown requirement '$what'" ;;
  esac
done
