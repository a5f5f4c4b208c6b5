#!/usr/bin/env bash
# Build (or reuse) the environment kernel: Debian's linux-source-6.12 with
# env/kernel.config merged on top of tinyconfig. The build lives in the cache directory
# printed by `kernel_dir`; a completed build is marked by a `.yakvm-built` stamp, and an
# interrupted one resumes where make stopped. Prints the kernel directory on stdout.
set -euo pipefail
source "$(dirname "$0")/common.sh"
# Called from make: the outer make's flags (-s, its jobserver) must not reach the kernel's.
unset MAKEFLAGS MFLAGS MAKELEVEL

kdir=$(kernel_dir)
if [[ -f $kdir/.yakvm-built ]]; then
    # The gdb helpers (lx-symbols) for `make debug`; quick, and missing from older caches.
    [[ -e $kdir/vmlinux-gdb.py ]] || make -C "$kdir" -s "${KMAKE_ARGS[@]}" scripts_gdb >/dev/null 2>&1 || true
    log "kernel: cached at $kdir"
    echo "$kdir"
    exit 0
fi

mkdir -p "$YAKVM_CACHE"
if [[ ! -f $kdir/Makefile ]]; then
    log "kernel: unpacking $KERNEL_TARBALL"
    tmp="$kdir.unpack"
    rm -rf "$tmp" && mkdir -p "$tmp"
    tar -xf "$KERNEL_TARBALL" -C "$tmp" --strip-components=1
    mv "$tmp" "$kdir"
fi

cd "$kdir"
if [[ ! -f .config ]] || ! cmp -s "$YAKVM_ROOT/env/kernel.config" .yakvm-fragment; then
    log "kernel: configuring (tinyconfig + env/kernel.config)"
    make -s "${KMAKE_ARGS[@]}" tinyconfig >/dev/null
    KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m -O . .config \
        "$YAKVM_ROOT/env/kernel.config" >/dev/null
    make -s "${KMAKE_ARGS[@]}" olddefconfig >/dev/null
    # Kconfig drops symbols whose dependencies are unmet without a word: check each one.
    bad=0
    while IFS= read -r line; do
        [[ $line =~ ^CONFIG_ ]] || continue
        grep -qx "$line" .config || { log "kernel: config wants '$line', got '$(grep "^${line%%=*}=" .config || echo unset)'"; bad=1; }
    done < "$YAKVM_ROOT/env/kernel.config"
    ((bad == 0)) || die "kernel config does not match env/kernel.config (is the Rust toolchain usable? try: make -C $kdir ${KMAKE_ARGS[*]} rustavailable)"
    cp "$YAKVM_ROOT/env/kernel.config" .yakvm-fragment
fi

log "kernel: building in $kdir (5-25 minutes on 2 cores; log: $kdir/build.log)"
start=$(date +%s)
make "${KMAKE_ARGS[@]}" -j"$(nproc)" bzImage modules scripts_gdb > build.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
while kill -0 $pid 2>/dev/null; do
    sleep 30
    n=$(grep -c '^  [A-Z]' build.log || true)
    log "kernel: $((($(date +%s) - start) / 60)) min, $n build steps, last: $(tail -n1 build.log | cut -c1-70)"
done
trap - EXIT
if ! wait $pid; then
    tail -n 40 build.log >&2
    die "kernel build failed (full log: $kdir/build.log)"
fi
touch .yakvm-built
log "kernel: built in $((($(date +%s) - start) / 60)) min"
echo "$kdir"
