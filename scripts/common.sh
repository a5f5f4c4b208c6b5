# Shared settings for yakvm's scripts. Source it; do not run it.
# shellcheck shell=bash

YAKVM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export YAKVM_ROOT

# The kernel toolchain: Debian's rustc (it ships the core sources the kernel needs),
# bindgen from crates.io, LLVM 19. Never the rustup rustc on PATH.
KRUSTC=/usr/bin/rustc
KBINDGEN=${KBINDGEN:-$HOME/.cargo/bin/bindgen}
KMAKE_ARGS=(LLVM=-19 "RUSTC=$KRUSTC" "BINDGEN=$KBINDGEN")
export PATH="/usr/lib/llvm-19/bin:$PATH"

# Kernel builds are cached outside the clone, keyed by version and config.
YAKVM_CACHE=${YAKVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/yakvm}
KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz

# Build outputs that are not the kernel live in the clone, ignored by git.
BUILD_DIR="$YAKVM_ROOT/build"
SHARES_DIR="$YAKVM_ROOT/shares"

log() { printf '[yakvm] %s\n' "$*" >&2; }
die() { printf '[yakvm] error: %s\n' "$*" >&2; exit 1; }

# kernel_dir: the cache directory of the kernel that env/kernel.config describes.
kernel_dir() {
    local version key
    version=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) ||
        die "linux-source-6.12 is not installed (run: make deps)"
    key=$( { echo "$version"; cat "$YAKVM_ROOT/env/kernel.config";
             "$KRUSTC" --version; clang-19 --version | head -n1; } | sha256sum | cut -c1-12)
    echo "$YAKVM_CACHE/linux-$version-$key"
}
