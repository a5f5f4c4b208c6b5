# `make bench`, inside the image: each workload on yakvm and on KVM, in interleaved rounds
# (yakvm, KVM, yakvm, ...), one CSV line per run: workload,hypervisor,round,seconds,units.
# `seconds` is the run time the emulator measured (from the first entry into the guest to
# the guest's end: setup excluded); `units` is what the workload did in that time.
cd /mnt/shares
ROUNDS=${ROUNDS:-3}
CSV=out/bench.csv
mkdir -p out
echo "workload,hypervisor,round,seconds,units" > $CSV
# The disk lives in the image's RAM (tmpfs): the benchmark measures the hypervisors, not
# the 9p share.
dd if=/dev/zero of=/tmp/bench-disk.img bs=1024 count=1024 2>/dev/null

. /mnt/shares/tests/lib.sh   # use_kvm, use_yakvm

# run WORKLOAD HV ROUND UNITS ARGS...: one run; its time from --stats.
run() {
    w=$1 hv=$2 r=$3 units=$4; shift 4
    yakvm run --hypervisor $hv --stats --timeout 300 "$@" > /tmp/bench.out 2> /tmp/bench.err < /dev/null
    rc=$?
    t=$(awk '/^time:/ { printf "%.6f", $2 + $9 }' /tmp/bench.err)
    if [ $rc -ne 0 ] || [ -z "$t" ]; then
        echo "bench: $w on $hv failed (status $rc): $(tail -n 2 /tmp/bench.err)"
        return
    fi
    echo "$w,$hv,$r,$t,$units" >> $CSV
    printf '  round %s %-6s %-8s %8.3f s\n' "$r" "$hv" "$w" "$t"
}

workloads() {
    hv=$1 r=$2
    run pio $hv $r 20000 guests/bench_pio.bin
    run mmio $hv $r 10000 guests/bench_mmio.bin
    run cpuid $hv $r 100000 guests/bench_cpuid.bin
    run disk $hv $r 4194304 --disk /tmp/bench-disk.img guests/diskread.bin
    run timer $hv $r 2000 --machine pc guests/bench_timer.bin
    run apictimer $hv $r 2000 --machine pc guests/bench_apictimer.bin
    run ipi $hv $r 1000 --machine pc --smp 2 guests/bench_ipi.bin
    run linux $hv $r 1 --kernel linux/bzImage --initrd linux/initramfs.cpio.gz --mem 128M --append yakvm.check
}

echo "bench: $ROUNDS rounds, yakvm and KVM interleaved; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
r=1
while [ $r -le "$ROUNDS" ]; do
    workloads yakvm $r
    use_kvm || { echo "bench: kvm_amd did not load"; exit 1; }
    workloads kvm $r
    use_yakvm || { echo "bench: yakvm did not load again"; exit 1; }
    r=$((r + 1))
done
