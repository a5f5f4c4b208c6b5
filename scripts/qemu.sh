#!/usr/bin/env bash
# Boots the yakvm environment image in QEMU with shares/ at /mnt/shares.
#
#   scripts/qemu.sh                 interactive: demo, then a shell
#   CMD='...' scripts/qemu.sh       runs CMD in the image, prints its output, exits with its status
#   GDB=1 scripts/qemu.sh           waits for gdb on localhost:1234 (see `make debug`)
#   QEMU_CPU=... scripts/qemu.sh    overrides the CPU model (tests use one without SVM)
#   QEMU_TIMEOUT=secs               kills a non-interactive run after that long (default 900)
set -euo pipefail
source "$(dirname "$0")/common.sh"

kdir=$(kernel_dir)
kernel="$kdir/arch/x86/boot/bzImage"
initrd="$BUILD_DIR/initramfs.cpio.gz"
[[ -f $kdir/.yakvm-built && -f $initrd ]] || die "the image is not built (run: make env)"

# KVM with the host CPU where that gives nested SVM (an AMD host with kvm_amd nested=1),
# QEMU's software SVM everywhere else. `-cpu max` would enable LA57: EPYC has svm and npt.
# Under TCG the image gets a third CPU and runs its work on CPUs 1-2 only (yakvm.cpus):
# QEMU 7.2 rewrites CPU 0's hidden flags, GIF and nested paging among them, from other
# CPUs' threads whenever they restore x87 state (docs/qemu-tcg.md), which
# is harmless only while CPU 0 never runs SVM. QEMU_CPU0=1 lets the work use CPU 0 again.
accel=(-accel tcg -cpu "${QEMU_CPU:-EPYC}")
smp=3 cpus=1-2
[[ -n ${QEMU_CPU0:-} ]] && smp=2 cpus=
mode="TCG (software SVM, -cpu ${QEMU_CPU:-EPYC}; ${cpus:+work on CPUs $cpus, }$smp CPUs)"
nested=$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null || true)
if [[ -z ${QEMU_CPU:-} && -w /dev/kvm ]] && grep -q AuthenticAMD /proc/cpuinfo && [[ $nested == 1 || $nested == Y ]]; then
    accel=(-accel kvm -cpu host)
    smp=2 cpus=
    mode="KVM (nested SVM, -cpu host)"
fi
log "qemu: $mode"

append="console=ttyS0 loglevel=4 panic=-1${cpus:+ yakvm.cpus=$cpus}"
args=(qemu-system-x86_64 "${accel[@]}" -smp $smp -m 2G -no-reboot
      -nic none -kernel "$kernel" -initrd "$initrd"
      -virtfs "local,path=$SHARES_DIR,mount_tag=shares,security_model=none,id=shares")
[[ -n ${GDB:-} ]] && args+=(-s -S)

if [[ -z ${CMD:-} ]]; then
    exec "${args[@]}" -nographic -append "$append"
fi

# Non-interactive: the command goes through a script in the share; the image writes its
# exit status to a file beside it (never through the console, where the command's own
# output could hide or fake it).
mkdir -p "$SHARES_DIR/.run"
cmdfile=".run/cmd.$$"
printf '%s\n' "$CMD" > "$SHARES_DIR/$cmdfile"
statusfile="$SHARES_DIR/$cmdfile.status"
# The image's init creates it right before it runs the command.
startedfile="$SHARES_DIR/$cmdfile.started"
rm -f "$statusfile" "$startedfile"
trap 'rm -f "$SHARES_DIR/$cmdfile" "$statusfile" "$startedfile"' EXIT
boot() {
    qemu_rc=0
    timeout "${QEMU_TIMEOUT:-900}" "${args[@]}" -display none -serial stdio -monitor none \
        -append "$append yakvm.cmd=$cmdfile" < /dev/null || qemu_rc=$?
}
boot
# QEMU 7.2's TCG itself has died of SIGSEGV in the image's early boot (docs/qemu-tcg.md):
# when it dies of a signal before the command started, the command has not run and the
# image boots again, once, saying so. After the command started, its death is the run's.
if ((qemu_rc > 128 && qemu_rc != 137)) && [[ ! -e $startedfile ]]; then
    log "qemu: QEMU itself died of signal $((qemu_rc - 128)) before the command started; booting again"
    boot
fi
rc=$(cat "$statusfile" 2>/dev/null || true)
if [[ ! $rc =~ ^[0-9]+$ ]]; then
    if ((qemu_rc == 124)); then
        log "qemu: timed out after ${QEMU_TIMEOUT:-900} s without the command's status"
    elif ((qemu_rc > 128 && qemu_rc != 137)); then
        # QEMU itself died of a signal (QEMU 7.2's TCG has crashed with SIGSEGV in an
        # image's early boot: docs/qemu-tcg.md): status 126 tells the test runner.
        log "qemu: QEMU itself died of signal $((qemu_rc - 128)) without the command's status"
        exit 126
    else
        log "qemu: the image ended without reporting the command's status (crash?)"
    fi
    exit 125
fi
exit "$rc"
