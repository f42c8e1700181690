#!/usr/bin/env bash
# Build the sandbox image tokotani-dr/debian12-systemd with debootstrap.
#
# The image is tagged with a hash of its recipe (this script, the package list
# and the host CA certificates it trusts), so it is rebuilt only when one of
# them changes; `:latest` points at the newest build.
#
# TOKOTANI_SANDBOX_IMAGE=<image> skips the build and checks that the operator's
# own systemd-ready Debian 12 image exists instead.
#
# Then server.sh builds tokotani-dr/debian12-server from that image (the packages
# the roles install, preinstalled for the molecule scenarios).
# DEBIAN_MIRROR=<url> overrides the Debian mirror (default: the host's apt sources).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
name=${SANDBOX_IMAGE_NAME:-tokotani-dr/debian12-systemd}
suite=bookworm
packages=$(grep -v '^#' "$here/packages.txt" | tr -s ' \n' ',' | sed 's/^,//;s/,$//')

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

# The server image on top of the image this script settles on (server.sh).
build_server() { "$here/server.sh" "$1"; }

docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/ensure.sh docker (or 'make image', which does)"

if [ -n "${TOKOTANI_SANDBOX_IMAGE:-}" ]; then
  if docker image inspect "$TOKOTANI_SANDBOX_IMAGE" >/dev/null 2>&1; then
    log "using the operator's image $TOKOTANI_SANDBOX_IMAGE (TOKOTANI_SANDBOX_IMAGE)"
    build_server "$TOKOTANI_SANDBOX_IMAGE"
    echo "$TOKOTANI_SANDBOX_IMAGE"
    exit 0
  fi
  die "image '$TOKOTANI_SANDBOX_IMAGE' (TOKOTANI_SANDBOX_IMAGE) does not exist in the local Docker engine; load or pull it first (docker pull/load), or unset TOKOTANI_SANDBOX_IMAGE to build $name with debootstrap"
fi

shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
tag=$(cat "$0" "$here/packages.txt" ${cas[@]+"${cas[@]}"} | sha256sum | cut -c1-12)

if docker image inspect "$name:$tag" >/dev/null 2>&1; then
  log "$name:$tag is up to date (recipe unchanged)"
  docker tag "$name:$tag" "$name:latest"
  build_server "$name:$tag"
  echo "$name:$tag"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root; run as root or set TOKOTANI_SANDBOX_IMAGE to a ready image"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # The host's own Debian mirror, from deb822 or one-line sources.
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || die "no Debian mirror found in the host's apt sources; set DEBIAN_MIRROR=<url of a Debian mirror>"

work=$(mktemp -d /var/tmp/tokotani-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

log "debootstrap $suite (minbase + $packages) from $mirror"
start=$(date +%s)
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# Same apt sources and settings as the host, so apt inside reaches the same mirror.
rm -f "$root/etc/apt/sources.list"
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
  [ -f "$f" ] && cp "$f" "$root$f"
done
for f in /etc/apt/apt.conf.d/99*; do
  [ -f "$f" ] && cp "$f" "$root/etc/apt/apt.conf.d/"
done

# Trust the host's extra CA certificates (TLS-intercepting proxies).
if [ ${#cas[@]} -gt 0 ]; then
  cp "${cas[@]}" "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
  # pip uses its own CA bundle unless told otherwise.
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  log "trusted ${#cas[@]} extra CA certificate(s)"
fi

# A container does not need gettys, udev or timers that write to the host.
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
            systemd-remount-fs.service systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
: >"$root/etc/machine-id"
printf 'LANG=C.UTF-8\n' >"$root/etc/default/locale"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log

log "importing into Docker as $name:$tag"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  --change "LABEL org.opencontainers.image.title=$name recipe=$tag" \
  - "$name:$tag" >/dev/null
docker tag "$name:$tag" "$name:latest"
# Drop builds of older recipes (kept if a container still uses them).
# (grep finds nothing on a fresh machine and exits 1: not an error under pipefail.)
{ docker images "$name" --format '{{.Tag}}' | grep -vx -e latest -e "$tag" || true; } \
  | while read -r old; do docker rmi "$name:$old" >/dev/null 2>&1 || true; done
log "built $name:$tag in $(( $(date +%s) - start )) s"
build_server "$name:$tag"
echo "$name:$tag"
