#!/usr/bin/env bash
# Build tokotani-dr/debian12-server (TOKOTANI_SERVER_IMAGE) from the base image given (what build.sh built, or
# the operator's TOKOTANI_SANDBOX_IMAGE) with the packages of server-packages.txt preinstalled: what the roles
# install on a server. The molecule scenarios start from it, so that each one does not download and unpack
# them again; the scenario `default` keeps the bare image and proves the install from nothing.
#
# Tagged with a hash of the base image's id, the package list and this script: rebuilt only when one of them
# changes; `:latest` points at the newest build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
[ "$#" -eq 1 ] || die "usage: $0 <base image>"

# The server image: base + the packages of server-packages.txt, installed the way the roles install
# them (apt's defaults, recommends included), no service started meanwhile (policy-rc.d), apt's lists
# and cache dropped. The image's CMD, ENV and labels are the base's.
# Also what the roles install from PyPI and npm, at the versions and paths of their defaults: pm2 (tokotani_app)
# and moto's venv (sandbox_infra). pip, npm and apt find them present and skip the download, so each scenario
# does not spend a minute of CPU resolving and unpacking the same wheels.
roles=$(cd "$here/../../roles" && pwd)
role_default() { sed -n "s/^$2: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *\$/\1/p" "$roles/$1/defaults/main.yml"; }
moto_version=$(role_default sandbox_infra sandbox_infra_moto_version)
moto_dir=$(role_default sandbox_infra sandbox_infra_moto_dir)
pm2_version=$(role_default tokotani_app tokotani_app_pm2_version)
if [ -z "$moto_version" ] || [ -z "$moto_dir" ] || [ -z "$pm2_version" ]; then
  die "could not read moto's and pm2's versions from the roles' defaults ($roles)"
fi
server=${SERVER_IMAGE_NAME:-tokotani-dr/debian12-server}
build_server() {
  local base="$1" base_id server_tag server_packages box started
  base_id=$(docker image inspect --format '{{.Id}}' "$base")
  server_packages=$(grep -v '^#' "$here/server-packages.txt" | tr -s ' \n' ' ' | sed 's/^ //;s/ $//')
  server_tag=$(printf '%s\n%s\nmoto %s %s\npm2 %s\n' "$base_id" "$server_packages" "$moto_version" "$moto_dir" "$pm2_version" \
    | cat - "$0" | sha256sum | cut -c1-12)
  if docker image inspect "$server:$server_tag" >/dev/null 2>&1; then
    log "$server:$server_tag is up to date (base, packages, moto and pm2 unchanged)"
    docker tag "$server:$server_tag" "$server:latest"
    return 0
  fi
  log "building $server:$server_tag from $base with: $server_packages, moto $moto_version, pm2 $pm2_version"
  started=$(date +%s)
  box="tokotani-image-server-$$"
  docker rm -f "$box" >/dev/null 2>&1 || true
  # shellcheck disable=SC2086 # the package list is words
  # (the base has no ENTRYPOINT: the command replaces its CMD, which the commit puts back)
  if ! docker run --name "$box" "$base" /bin/sh -c "
      set -e
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q $server_packages
      python3 -m venv '$moto_dir'
      '$moto_dir/bin/pip' install -q --no-cache-dir 'moto[server]==$moto_version'
      npm install -g --no-fund --no-audit 'pm2@$pm2_version'
      npm cache clean --force
      rm -f /usr/sbin/policy-rc.d
      apt-get clean
      rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/* /tmp/*
    " >"/var/tmp/tokotani-image-server.log" 2>&1; then
    tail -20 /var/tmp/tokotani-image-server.log >&2
    docker rm -f "$box" >/dev/null 2>&1 || true
    die "installing the server packages into $server failed (log above, /var/tmp/tokotani-image-server.log)"
  fi
  docker commit \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    --change "LABEL org.opencontainers.image.title=$server recipe=$server_tag" \
    "$box" "$server:$server_tag" >/dev/null
  docker rm -f "$box" >/dev/null
  docker tag "$server:$server_tag" "$server:latest"
  { docker images "$server" --format '{{.Tag}}' | grep -vx -e latest -e "$server_tag" || true; } \
    | while read -r old; do docker rmi "$server:$old" >/dev/null 2>&1 || true; done
  log "built $server:$server_tag in $(( $(date +%s) - started )) s"
}


build_server "$1"
