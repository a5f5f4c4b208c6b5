#!/usr/bin/env bash
# distro-kernel.sh DEST: stages Debian's stock cloud kernel (the one bookworm's
# `linux-image-cloud-amd64` depends on today, unsigned) in DEST as DEST/vmlinuz, with its
# config and version, for the test that boots it on the pc machine (tests/image/kernels.sh,
# docs/pci.md). Fetched once with `apt-get download` and unpacked with `dpkg-deb -x`
# (nothing is installed), then cached in $YAKVM_CACHE/debian-<package>-<version>.
#
# A failed fetch is the test's failure, not a skip: this script then leaves
# DEST/FETCH-FAILED with the reason (the test prints it and fails) and exits 1; `make env`
# goes on, so that the other tests still run.
set -uo pipefail
source "$(dirname "$0")/common.sh"

dest=${1:?usage: distro-kernel.sh DEST}
rm -rf "$dest"
mkdir -p "$dest"
fail() { echo "$*" > "$dest/FETCH-FAILED"; log "Debian kernel: $*"; exit 1; }

meta=linux-image-cloud-amd64
image=$(apt-cache depends "$meta" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[[ -n $image ]] || fail "apt-cache knows no $meta (run apt-get update; is bookworm's main in sources.list?)"
pkg=$image-unsigned
version=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
[[ -n $version && $version != "(none)" ]] || fail "apt-cache has no candidate for $pkg"
cache="$YAKVM_CACHE/debian-$pkg-$version"
if [[ ! -f $cache/vmlinuz ]]; then
    log "Debian kernel: fetching $pkg $version"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -q "$pkg=$version" > fetch.log 2>&1) ||
        fail "apt-get download $pkg=$version failed: $(tail -n 3 "$tmp/fetch.log" | tr '\n' ' ')"
    dpkg-deb -x "$tmp"/*.deb "$tmp/root" || fail "dpkg-deb -x of $pkg failed"
    kernel=$(ls "$tmp"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
    [[ -n $kernel ]] || fail "$pkg has no /boot/vmlinuz-*"
    mkdir -p "$cache.tmp"
    cp "$kernel" "$cache.tmp/vmlinuz"
    cp "$tmp"/root/boot/config-* "$cache.tmp/config"
    echo "$pkg $version" > "$cache.tmp/version"
    rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
cp "$cache/vmlinuz" "$cache/config" "$cache/version" "$dest/"
log "Debian kernel: $(cat "$dest/version")"
