#!/usr/bin/env bash
# Install what yakvm needs on a Debian 12 x86_64 machine: apt packages and bindgen-cli.
# Idempotent and quiet when everything is there already.
set -euo pipefail
source "$(dirname "$0")/common.sh"

PACKAGES=(linux-source-6.12 rustc-web rust-web-src clang-19 lld-19 llvm-19 libclang-19-dev
          qemu-system-x86 busybox-static flex bison bc libelf-dev libssl-dev cpio
          gdb make xz-utils binutils debootstrap e2fsprogs)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing packages ${missing[*]}: run 'make deps' as root"
    log "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! "$KBINDGEN" --version >/dev/null 2>&1; then
    log "installing bindgen-cli from crates.io (a few minutes)"
    cargo install --locked --root "$HOME/.cargo" bindgen-cli
fi
