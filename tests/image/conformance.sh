# `make conformance`, inside the image: every line of kvm-unit-tests' tests.list on yakvm
# (its default: the local APICs in the module), the APIC tests ($UAPIC) again on yakvm with
# the emulator's APICs (`--user-apic`), then every line on KVM through the same emulator
# (`yakvm run --hypervisor kvm`: its split irqchip), in this one boot.
# scripts/conformance.sh staged the suite's .flat files and tests.list under kut/; each run
# leaves its console output, stderr, exit status and duration in out/conformance/HV/NAME.*
# and the host classifies them (scripts/conformance.py). Not a test of its own: it never
# fails on a result, only when it cannot run at all.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
R=$OUT/conformance
rm -rf $R
mkdir -p $R/yakvm $R/uapic $R/kvm
ONLY=${ONLY:-}
# The tests that run a second time on yakvm with --user-apic (column "uapic").
UAPIC='xapic ioapic smptest smptest3 vmexit_ipi vmexit_ipi_halt eventinj'

# The suite's environment, as the first Multiboot module (no fw_cfg here): the CPU count,
# the RAM size in MiB (as --mem) and TEST_DEVICE=0. Every run has yakvm's test device
# (--testdev: QEMU's pc-testdev, which QEMU's own runner gives every test), but the suite's
# TEST_DEVICE flag means more than the device: with it, `xapic` tests KVM's PV IPI
# hypercall and `eventinj` asks QEMU to flush pages. So it stays 0.
MEM_MIB=256
envfile() {
    printf 'NR_CPUS=%s\nMEMSIZE=%s\nTEST_DEVICE=0\n' "$1" $MEM_MIB > /tmp/kut-env-$1
    echo /tmp/kut-env-$1
}

# run_one HV NAME BIN SMP TIMEOUT ENV ARGS...: one run (HV yakvm, kvm, or uapic: yakvm with
# --user-apic). The Multiboot command line is the suite's argv, program name first (as
# QEMU builds it). yakvm's --timeout ends a run that hangs (status 124); `timeout` is the
# backstop if yakvm itself does not end.
run_one() {
    hv=$1 name=$2 bin=$3 smp=$4 secs=$5 env=$6
    shift 6
    case $hv in uapic) how="--hypervisor yakvm --user-apic" ;; *) how="--hypervisor $hv" ;; esac
    set -- $how --kernel kut/$bin --smp $smp --mem ${MEM_MIB}M --timeout $secs --testdev --append "$bin${*:+ $*}"
    [ "$env" = env ] && set -- "$@" --module "$(envfile $smp),env"
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout $((secs + 30)) yakvm run "$@" > $R/$hv/$name.out 2> $R/$hv/$name.err < /dev/null
    echo $? > $R/$hv/$name.rc
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "$t0 $t1" | awk '{ printf "%.2f\n", $2 - $1 }' > $R/$hv/$name.secs
    printf '  %-5s %-24s status %3s in %6s s\n' $hv $name "$(cat $R/$hv/$name.rc)" "$(cat $R/$hv/$name.secs)"
}

# run_all HV: the list on HV (the "noenv" diagnostic runs on yakvm only; uapic: $UAPIC only).
run_all() {
    grep -v '^#' kut/tests.list | while read -r name bin smp secs env args; do
        [ -n "$name" ] || continue
        [ -z "$ONLY" ] || echo " $ONLY " | grep -q " $name " || continue
        [ "$1" != uapic ] || echo " $UAPIC " | grep -q " $name " || continue
        [ "$env" = noenv ] && [ "$1" != yakvm ] && continue
        run_one $1 $name $bin $smp $secs $env $args
    done
}

echo "conformance: kvm-unit-tests $(cat kut/COMMIT 2>/dev/null) on yakvm"
run_all yakvm
echo "conformance: the APIC tests on yakvm --user-apic"
run_all uapic
if [ "${KVM:-1}" = 0 ]; then
    echo "conformance: KVM=0: no KVM column" | tee $R/kvm/NOT-RUN
elif use_kvm; then
    echo "conformance: the same on KVM"
    run_all kvm
    use_yakvm || echo "conformance: yakvm did not load again"
else
    echo "conformance: kvm_amd did not load: no KVM column" | tee $R/kvm/NOT-RUN
fi
# MIT's xv6, when scripts/conformance.sh staged it (xv6/): does its shell answer a line
# typed at its prompt, kernelmemfs on 1 and 2 CPUs and the disk build (IDE) on 1, with the
# kernel APIC (tests/xv6.sh; ONLY=xv6 runs just this).
if [ -d xv6 ] && { [ -z "$ONLY" ] || echo " $ONLY " | grep -q ' xv6 '; }; then
    echo "conformance: xv6's shell"
    XV6_RUNS='memfs-smp1 memfs-smp2 disk-smp1' XV6_LINES='echo xv6-says hi' XV6_TIMEOUT=120 sh tests/xv6.sh > $R/xv6.txt 2>&1
    sed 's/^/  /' $R/xv6.txt
fi
dmesg | grep -E 'WARNING:|BUG:|Oops|general protection|soft lockup|hard LOCKUP|Call Trace' | head -n 5 > $R/dmesg-bad
echo "conformance: done"
