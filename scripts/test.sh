#!/usr/bin/env bash
# `make test`: every test. Host unit tests first, then the tests that run real guests in the
# image (one boot with SVM, one on a CPU without it), then host-side checks of what the
# guests wrote. Ends with "N passed, N failed" and fails if anything failed.
set -uo pipefail
source "$(dirname "$0")/common.sh"
cd "$YAKVM_ROOT"

passed=0 failed=0 failures=()
record() { # record NAME OK [WHY]
    if [[ $2 == ok ]]; then passed=$((passed + 1)); echo "PASS $1";
    else failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1${3:+: $3}"; fi
}
start=$(date +%s)

# 1. Host: unit tests of the workspace (each test counts).
log "host unit tests"
if out=$(cargo test -q --workspace --exclude yakvm-guests 2>&1); then ok=1; else ok=0; fi
echo "$out" | grep -E '^test |panicked|error' | head -n 40
n_pass=$(echo "$out" | sed -n 's/.*test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' | paste -sd+ | bc)
n_fail=$(echo "$out" | sed -n 's/.*test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' | paste -sd+ | bc)
passed=$((passed + ${n_pass:-0})); failed=$((failed + ${n_fail:-0}))
if ((ok == 0 && ${n_fail:-0} == 0)); then record cargo-test fail "cargo test did not run: $(echo "$out" | tail -n 5)"; fi
echo "host unit tests: ${n_pass:-0} passed, ${n_fail:-0} failed"

# 2. The image.
log "building the image (make env)"
if ! make -s env; then
    record make-env fail "the image did not build"
    echo "$passed passed, $failed failed"
    exit 1
fi
rm -rf "$SHARES_DIR/out"

# collect LOG: records the PASS/FAIL lines of a run's log and shows the figures it prints
# (lines starting with two spaces, or the robustness summaries); sets `seen`.
collect() {
    local log=$1 line
    seen=0
    while IFS= read -r line; do
        case $line in
            "PASS "*) record "${line#PASS }" ok; seen=$((seen + 1)) ;;
            "FAIL "*) line=${line#FAIL }; record "${line%%:*}" fail "${line#*: }"; seen=$((seen + 1)) ;;
            "  "*|"random guests:"*|"random stepped guests:"*|"ioctl fuzzing:"*|"lifecycle:"*|"step-trace:"*) echo "$line" ;;
        esac
    done < <(tr -d '\r' < "$log")
}

# run_image NAME SCRIPT [CPU]: boots, runs SCRIPT in the image, collects its results.
run_image() {
    local name=$1 script=$2 cpu=${3:-} log="$BUILD_DIR/test-$1.log"
    log "image: $name"
    QEMU_CPU=$cpu CMD="${SOAK:+SOAK=1 }sh tests/$script" QEMU_TIMEOUT=${QEMU_TIMEOUT:-1200} scripts/qemu.sh > "$log" 2>&1
    local rc=$?
    collect "$log"
    # QEMU itself crashed (scripts/qemu.sh's 126) before the image ran any test: a crash
    # of the emulator under the image, not of a test (docs/qemu-tcg.md); the boot is run
    # again once, and says so. A crash after a test ran is a failure like any other.
    if ((rc == 126 && seen == 0)); then
        echo "  boot $name: QEMU crashed before any test ($(grep -m1 'QEMU itself died' "$log" | sed 's/.*died of //')); booting again"
        mv "$log" "$log.crashed"
        QEMU_CPU=$cpu CMD="${SOAK:+SOAK=1 }sh tests/$script" QEMU_TIMEOUT=${QEMU_TIMEOUT:-1200} scripts/qemu.sh > "$log" 2>&1
        rc=$?
        collect "$log"
    fi
    if ((rc != 0 || seen == 0)); then
        record "boot-$name" fail "the image run ended with status $rc after $seen tests (log: $log)"
        tail -n 30 "$log"
    fi
}

# run_host NAME PROGRAM: a test program on the host that boots the image itself.
run_host() {
    local name=$1 log="$BUILD_DIR/test-$1.log"
    shift
    log "host: $name"
    "$@" > "$log" 2>&1
    local rc=$?
    collect "$log"
    # A failed check prints its FAIL line and makes the program fail: nothing more to say.
    if ((seen == 0)) || { ((rc != 0)) && ! grep -q '^FAIL' "$log"; }; then
        record "host-$name" fail "$* ended with status $rc after $seen tests (log: $log)"
        tail -n 30 "$log"
    fi
}
# Which boots: all by default; `scripts/test.sh robust` (make soak) runs only that one.
ONLY="$*"
want() { [[ -z $ONLY || " $ONLY " == *" $1 "* ]]; }
want svm && run_image svm env.sh
want core && run_image core core.sh
want emulator && run_image emulator emulator.sh
want pc && run_image pc pc.sh
want smp && run_image smp smp.sh
want kernels && run_image kernels kernels.sh
want disks && run_image disks disks.sh
want net && run_image net net.sh
want kvm && run_image kvm kvm.sh
want robust && run_image robust robust.sh
want debug && run_image debug debug.sh
want no-svm && run_image no-svm no-svm.sh EPYC,-svm
want la57 && run_image la57 la57.sh EPYC,+la57
# The host's entry points as users call them: make run CMD=..., the interactive shell.
want scripts && run_host scripts tests/host/scripts.sh
want interactive && run_host interactive python3 tests/host/session.py poweroff reboot ctrl-d console linux

# 3. Host-side checks of the guests' output.
if want svm; then
expected=$(awk 'BEGIN { for (i = 0; i < 5000; i++) printf "%c", 97 + i % 26 }')
if [[ -f $SHARES_DIR/out/count.out && "$(cat "$SHARES_DIR/out/count.out")" == "$expected" ]]; then
    record count_bytes_in_order ok
else
    record count_bytes_in_order fail "output of guests/count.bin is not the 5000 expected bytes ($(stat -c %s "$SHARES_DIR/out/count.out" 2>/dev/null || echo no) bytes)"
fi
fi

if want core; then
# Every form of port I/O, byte for byte (expected output checked by hand once: the
# guest's own checks, the strings it sends, 4999 letters of REP OUTSB).
if cmp -s "$SHARES_DIR/out/ports.out" tests/expected/ports.out; then
    record ports_output_exact ok
else
    record ports_output_exact fail "guests/ports.bin output differs from tests/expected/ports.out"
fi
fi

# The disk images the two disk suites left: every sector s holds byte
# (s * 16 + i) mod 256, xor 0x00 (ports) or 0x80 (MMIO).
want emulator && for variant in ports:0 mmio:128; do
    name=${variant%%:*} marker=${variant#*:}
    want=$(for ((s = 0; s < 16; s++)); do for ((i = 0; i < 512; i++)); do printf '%02x' $(( ((s * 16 + i) % 256) ^ marker )); done; done)
    got=$(od -An -v -tx1 "$SHARES_DIR/out/disk-$name.img" 2>/dev/null | tr -d ' \n')
    if [[ -n $got && $got == "$want" ]]; then
        record "disk_image_$name" ok
    else
        record "disk_image_$name" fail "out/disk-$name.img does not hold the suite's final pattern"
    fi
done

echo
log "tests took $(($(date +%s) - start)) s"
((failed == 0)) || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
((failed == 0))
