#!/usr/bin/env bash
# `make conformance`: kvm-unit-tests, the x86 suite KVM is measured with, on yakvm and on
# KVM through the same emulator, in one boot of the image (tests/image/conformance.sh), then
# one line per test and the summary (scripts/conformance.py). The suite is not part of the
# project: its source is a directory the user gives (KUT, default ../shared/kvm-unit-tests,
# holding build.sh and tests.list), built once into KUT_BUILD (default ~/.cache/yakvm-kut)
# by its own build.sh, and staged into the image's share for the run.
#
#   scripts/conformance.sh                    run the list, print the table
#   CHECK=1 scripts/conformance.sh            and fail if a test of tests/conformance.expected
#                                             no longer passes on yakvm (CI)
#   ONLY='dummy msr' scripts/conformance.sh   run these tests only (no CHECK)
#   KVM=0 scripts/conformance.sh              no KVM column (CI: it is a comparison, never
#                                             checked, and a quarter of the run's time)
set -uo pipefail
source "$(dirname "$0")/common.sh"
cd "$YAKVM_ROOT"

KUT=${KUT:-../shared/kvm-unit-tests}
[[ -f $KUT/build.sh && -f $KUT/tests.list ]] ||
    die "conformance: no kvm-unit-tests in '$KUT' (give its directory, with build.sh and tests.list, as KUT=DIR)"
KUT=$(cd "$KUT" && pwd)
KUT_BUILD=${KUT_BUILD:-$HOME/.cache/yakvm-kut}
start=$(date +%s)

# The build is current when it holds every binary of the list and names the commit that
# this source's build.sh builds.
want_commit=$(sed -n 's/^commit=\([0-9a-f]*\)$/\1/p' "$KUT/build.sh")
built() {
    [[ -n $want_commit && "$(cat "$KUT_BUILD/COMMIT" 2>/dev/null)" == "$want_commit" ]] || return 1
    local bin
    for bin in $(grep -v '^#' "$KUT/tests.list" | awk 'NF { print $2 }' | sort -u); do
        [[ -f $KUT_BUILD/$bin ]] || return 1
    done
}
if ! built; then
    log "conformance: building kvm-unit-tests from $KUT into $KUT_BUILD (a few minutes)"
    "$KUT/build.sh" "$KUT_BUILD" || die "conformance: the suite did not build"
    built || die "conformance: $KUT_BUILD lacks binaries that $KUT/tests.list names"
fi

# Stage: the list and its binaries (only those) into the share, beside the image's tests.
rm -rf "$SHARES_DIR/kut" "$SHARES_DIR/out/conformance"
mkdir -p "$SHARES_DIR/kut"
cp "$KUT/tests.list" "$KUT_BUILD/COMMIT" "$SHARES_DIR/kut/"
for bin in $(grep -v '^#' "$KUT/tests.list" | awk 'NF { print $2 }' | sort -u); do
    mkdir -p "$SHARES_DIR/kut/$(dirname "$bin")"
    cp "$KUT_BUILD/$bin" "$SHARES_DIR/kut/$bin"
done

# MIT's xv6 (XV6, default ../shared/xv6), whose shell the image checks after the suite.
XV6=${XV6:-../shared/xv6}
rm -rf "$SHARES_DIR/xv6"
if [[ -f $XV6/xv6-public.tar.gz ]]; then
    XV6=$XV6 scripts/xv6-stage.sh || die "conformance: xv6 did not build"
else
    log "conformance: no xv6-public.tar.gz in '$XV6' (give XV6=DIR): xv6's shell is not run"
fi

log "conformance: ${ONLY:+only $ONLY of }$(grep -cv "^#" "$KUT/tests.list") runs of $KUT/tests.list on yakvm, then on KVM (log: $BUILD_DIR/conformance.log)"
mkdir -p "$BUILD_DIR"
CMD="ONLY='${ONLY:-}' KVM='${KVM:-1}' sh tests/conformance.sh" QEMU_TIMEOUT=${QEMU_TIMEOUT:-3600} scripts/qemu.sh > "$BUILD_DIR/conformance.log" 2>&1
rc=$?
tr -d '\r' < "$BUILD_DIR/conformance.log" | grep -E '^(  (yakvm|uapic|kvm) |conformance:|  xv6:)' >&2
((rc == 0)) || { tail -n 20 "$BUILD_DIR/conformance.log"; die "conformance: the image run failed (status $rc; log: $BUILD_DIR/conformance.log)"; }

# The runs' files, kept where the next `make test` (which empties shares/out) leaves them.
rm -rf "$BUILD_DIR/conformance"
cp -r "$SHARES_DIR/out/conformance" "$BUILD_DIR/conformance"
args=("$BUILD_DIR/conformance" "$KUT/tests.list" --known tests/conformance.known --table "$BUILD_DIR/conformance.txt")
[[ -n ${CHECK:-} && -z ${ONLY:-} ]] && args+=(--expected tests/conformance.expected)
python3 scripts/conformance.py "${args[@]}"
rc=$?
secs=$(($(date +%s) - start))
log "conformance: took $((secs / 60)) min $((secs % 60)) s"
exit $rc
