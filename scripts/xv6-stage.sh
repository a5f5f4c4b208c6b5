#!/usr/bin/env bash
# xv6-stage.sh: builds MIT's xv6 (not part of yakvm) from the directory the user gives (XV6,
# default ../shared/xv6, holding xv6-public.tar.gz) once into XV6_BUILD (default
# ~/.cache/yakvm-xv6) and stages its kernels and disks into the image's share (shares/xv6)
# for tests/image/xv6.sh; never copied into the project. Used by `make xv6`
# (scripts/xv6.sh) and `make conformance`.
set -uo pipefail
source "$(dirname "$0")/common.sh"
cd "$YAKVM_ROOT"

XV6=${XV6:-../shared/xv6}
[[ -f $XV6/xv6-public.tar.gz ]] || die "xv6: no xv6-public.tar.gz in '$XV6' (give its directory as XV6=DIR)"
XV6_BUILD=${XV6_BUILD:-$HOME/.cache/yakvm-xv6}
source_sum=$(sha256sum "$XV6/xv6-public.tar.gz" | cut -c1-16)
built() {
    [[ "$(cat "$XV6_BUILD/SOURCE" 2>/dev/null)" == "$source_sum" ]] &&
        for f in kernelmemfs kernel xv6.img fs.img; do [[ -f $XV6_BUILD/src/$f ]] || return 1; done
}
if ! built; then
    log "xv6: building $XV6 into $XV6_BUILD"
    rm -rf "$XV6_BUILD/src" && mkdir -p "$XV6_BUILD/src"
    tar xzf "$XV6/xv6-public.tar.gz" -C "$XV6_BUILD/src" || die "xv6: cannot unpack $XV6/xv6-public.tar.gz"
    # gcc 12 warns where xv6's Makefile says -Werror (its build notes): build without it,
    # from a copy of the Makefile beside the original.
    sed 's/ -Werror//' "$XV6_BUILD/src/Makefile" > "$XV6_BUILD/src/Makefile.yakvm"
    (unset MAKEFLAGS; make -C "$XV6_BUILD/src" -f Makefile.yakvm kernelmemfs kernel xv6.img fs.img) > "$XV6_BUILD/build.log" 2>&1 ||
        die "xv6: the build failed (gcc-multilib installed? log: $XV6_BUILD/build.log)"
    echo "$source_sum" > "$XV6_BUILD/SOURCE"
fi

rm -rf "$SHARES_DIR/xv6" && mkdir -p "$SHARES_DIR/xv6"
cp "$XV6_BUILD/src/"{kernelmemfs,kernel,xv6.img,fs.img} "$SHARES_DIR/xv6/"
