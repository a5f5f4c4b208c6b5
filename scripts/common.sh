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

# guest_kernel_dir: the cache directory of the guest Linux that env/guest-kernel.config
# describes (no Rust in it: the key has the C toolchain only).
guest_kernel_dir() {
    local version key
    version=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) ||
        die "linux-source-6.12 is not installed (run: make deps)"
    key=$( { echo "$version"; cat "$YAKVM_ROOT/env/guest-kernel.config";
             clang-19 --version | head -n1; } | sha256sum | cut -c1-12)
    echo "$YAKVM_CACHE/guest-linux-$version-$key"
}

# build_kernel NAME KDIR FRAGMENT TARGET...: builds Debian's linux-source-6.12 in KDIR (the
# cache directory) from tinyconfig with FRAGMENT merged on top, then `make TARGET...`,
# with a progress line every 30 s. Kconfig drops symbols whose dependencies are unmet, and
# turns defaults on, without a word: every line of FRAGMENT is checked after olddefconfig
# ("is not set" lines too). A completed build is marked by a `.yakvm-built` stamp; an
# interrupted one resumes where make stopped. Call it from a script (it changes directory).
build_kernel() {
    local name=$1 kdir=$2 fragment=$3
    shift 3
    # Called from make: the outer make's flags (-s, its jobserver) must not reach these.
    unset MAKEFLAGS MFLAGS MAKELEVEL
    mkdir -p "$YAKVM_CACHE"
    if [[ ! -f $kdir/Makefile ]]; then
        log "$name: unpacking $KERNEL_TARBALL"
        local tmp="$kdir.unpack"
        rm -rf "$tmp" && mkdir -p "$tmp"
        tar -xf "$KERNEL_TARBALL" -C "$tmp" --strip-components=1
        mv "$tmp" "$kdir"
    fi
    cd "$kdir"
    if [[ ! -f .config ]] || ! cmp -s "$fragment" .yakvm-fragment; then
        log "$name: configuring (tinyconfig + ${fragment#"$YAKVM_ROOT"/})"
        make -s "${KMAKE_ARGS[@]}" tinyconfig >/dev/null
        KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m -O . .config "$fragment" >/dev/null
        make -s "${KMAKE_ARGS[@]}" olddefconfig >/dev/null
        local bad=0 line
        while IFS= read -r line; do
            if [[ $line =~ ^CONFIG_ ]]; then
                grep -qx "$line" .config ||
                    { log "$name: config wants '$line', got '$(grep "^${line%%=*}=" .config || echo unset)'"; bad=1; }
            elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
                ! grep -q "^${BASH_REMATCH[1]}=" .config ||
                    { log "$name: config wants ${BASH_REMATCH[1]} off, got '$(grep "^${BASH_REMATCH[1]}=" .config)'"; bad=1; }
            fi
        done < "$fragment"
        ((bad == 0)) || die "$name: the config does not match ${fragment#"$YAKVM_ROOT"/} (for the Rust toolchain, try: make -C $kdir ${KMAKE_ARGS[*]} rustavailable)"
        cp "$fragment" .yakvm-fragment
    fi
    log "$name: building $* in $kdir (minutes on 2 cores; log: $kdir/build.log)"
    local start pid n secs
    start=$(date +%s)
    # In a session of its own, so that an interrupted script stops the whole build
    # (killing the top make alone leaves the kernel's sub-makes running).
    setsid -w make "${KMAKE_ARGS[@]}" -j"$(nproc)" "$@" > build.log 2>&1 &
    pid=$!
    trap "kill -- -$pid 2>/dev/null || kill $pid 2>/dev/null" EXIT
    while kill -0 $pid 2>/dev/null; do
        # Short sleeps, so that a finished build does not wait out the 30 s.
        for _ in {1..30}; do sleep 1; kill -0 $pid 2>/dev/null || break; done
        kill -0 $pid 2>/dev/null || break
        n=$(grep -c '^  [A-Z]' build.log || true)
        secs=$(($(date +%s) - start))
        log "$name: $((secs / 60)) min $((secs % 60)) s, $n build steps, last: $(tail -n1 build.log | cut -c1-70)"
    done
    trap - EXIT
    if ! wait $pid; then
        tail -n 40 build.log >&2
        die "$name build failed (full log: $kdir/build.log)"
    fi
    touch .yakvm-built
    secs=$(($(date +%s) - start))
    log "$name: built in $((secs / 60)) min $((secs % 60)) s"
}
