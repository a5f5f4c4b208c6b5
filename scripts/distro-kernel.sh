#!/usr/bin/env bash
# distro-kernel.sh DEST: stages Debian's stock cloud kernel (the one bookworm's
# `linux-image-cloud-amd64` depends on today, unsigned) in DEST as DEST/vmlinuz, with its
# config and version, for the tests that boot it on the pc machine (tests/image/kernels.sh,
# docs/pci.md). Fetched once with `apt-get download` and unpacked with `dpkg-deb -x`
# (nothing is installed), then cached in $YAKVM_CACHE/debian-<package>-<version>.
#
# Debian's kernel has virtio as modules (docs/virtio.md#debians-kernel). From the same
# package, the modules of the virtio PCI transport, virtio-blk and virtio-net and all
# they depend on (by the package's modules.dep) are cached too, in load order, and staged
# as DEST/initramfs-debian-modules.cpio.gz: OUR guest initramfs
# (build/guest-initramfs.cpio.gz, env/guest-init) with Debian's modules added, which
# env/guest-init loads first. Debian's own initramfs (initramfs-tools) is made in a
# debootstrap root with this kernel installed: scripts/debian-root.sh.
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
# The modules our initramfs loads for Debian's kernel, with their dependencies.
modules=(virtio_pci virtio_blk virtio_net)
if [[ ! -f $cache/vmlinuz || ! -f $cache/modules/order ]]; then
    log "Debian kernel: fetching $pkg $version"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -q "$pkg=$version" > fetch.log 2>&1) ||
        fail "apt-get download $pkg=$version failed: $(tail -n 3 "$tmp/fetch.log" | tr '\n' ' ')"
    dpkg-deb -x "$tmp"/*.deb "$tmp/root" || fail "dpkg-deb -x of $pkg failed"
    kernel=$(ls "$tmp"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
    [[ -n $kernel ]] || fail "$pkg has no /boot/vmlinuz-*"
    rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
    cp "$kernel" "$cache.tmp/vmlinuz"
    cp "$tmp"/root/boot/config-* "$cache.tmp/config"
    # The package has no modules.dep (depmod makes it when the package is installed): each
    # module's own `depends=` (its .modinfo section) gives what it needs, loaded first.
    mdir=$(ls -d "$tmp"/root/lib/modules/* 2>/dev/null | head -n 1)
    [[ -n $mdir ]] || fail "$pkg has no lib/modules/*"
    mkdir -p "$cache.tmp/modules"
    : > "$cache.tmp/modules/order"
    add_module() { # NAME: its dependencies first, then the module, each once
        local name=$1 ko dep
        grep -qx "$name.ko" "$cache.tmp/modules/order" && return 0
        ko=$(find "$mdir" -name "$(echo "$name" | sed 's/[_-]/[_-]/g').ko" | head -n 1)
        [[ -n $ko ]] || fail "$pkg has no module $name"
        for dep in $(objcopy -O binary --only-section=.modinfo "$ko" /dev/stdout | tr '\0' '\n' |
                     sed -n 's/^depends=//p' | tr ',' ' '); do
            add_module "$dep"
        done
        grep -qx "$name.ko" "$cache.tmp/modules/order" && return 0
        cp "$ko" "$cache.tmp/modules/$name.ko"
        echo "$name.ko" >> "$cache.tmp/modules/order"
    }
    for m in "${modules[@]}"; do add_module "$m"; done
    echo "$pkg $version" > "$cache.tmp/version"
    rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
cp "$cache/vmlinuz" "$cache/config" "$cache/version" "$dest/"
log "Debian kernel: $(cat "$dest/version")"

# Our initramfs plus Debian's modules in /lib/modules (and their load order in
# /lib/modules/order): a second gzipped cpio archive after ours, which Linux unpacks over
# the first.
ours="$BUILD_DIR/guest-initramfs.cpio.gz"
[[ -f $ours ]] || fail "$ours is missing (make guest-kernel builds it)"
mtmp=$(mktemp -d)
mkdir -p "$mtmp/lib/modules"
cp "$cache"/modules/* "$mtmp/lib/modules/"
(cd "$mtmp" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) > "$mtmp.cpio.gz"
cat "$ours" "$mtmp.cpio.gz" > "$dest/initramfs-debian-modules.cpio.gz"
rm -rf "$mtmp" "$mtmp.cpio.gz"
log "Debian kernel: our initramfs with its modules $(paste -sd' ' "$cache/modules/order")"
