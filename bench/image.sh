# `make bench`, inside the image: each workload on yakvm and on KVM, in interleaved rounds
# (yakvm, KVM, yakvm, ...), one CSV line per run: workload,hypervisor,round,seconds,units.
# `seconds` is the run time the emulator measured (from the first entry into the guest to
# the guest's end: setup excluded); `units` is what the workload did in that time.
cd /mnt/shares
ROUNDS=${ROUNDS:-3}
CSV=out/bench.csv
mkdir -p out
echo "workload,hypervisor,round,seconds,units" > $CSV
# The virtio disk rows' counters, per run (bench/report.py prints them too).
VCSV=out/bench-vblk.csv
echo "mode,hypervisor,round,requests,notify_exits,ioeventfd_signals,interrupts,irqfd_interrupts,emulator_exits,emulator_mmio" > $VCSV
# The disk lives in the image's RAM (tmpfs): the benchmark measures the hypervisors, not
# the 9p share.
dd if=/dev/zero of=/tmp/bench-disk.img bs=1024 count=1024 2>/dev/null
dd if=/dev/zero of=/tmp/vbench-data.img bs=1048576 count=32 2>/dev/null

. /mnt/shares/tests/lib.sh   # use_kvm, use_yakvm

# ONLY="vblk linux ...": only these workloads (vblk: the virtio disk rows, vnet: the
# network's); all by default.
want() { [ -z "${ONLY:-}" ] || case " $ONLY " in *" $1 "*) true ;; *) false ;; esac; }

# run WORKLOAD HV ROUND UNITS ARGS...: one run; its time from --stats.
run() {
    w=$1 hv=$2 r=$3 units=$4; shift 4
    want $w || return 0
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

# vblk HV ROUND MODE: our Linux, its root on a virtio disk, times O_DIRECT dd on a second
# one (32 MiB in the image's RAM, the same file every run) from inside (env/disk-init's
# `bench`): rows vwrite, vread (MB/s, 1 MiB blocks) and vread4k (4 KiB reads: IOPS), with
# "-exit" appended for MODE exit (--no-ioeventfd: each notification an MMIO exit to the
# emulator), "-uapic" for MODE uapic (--user-apic: the local APICs in the emulator, the
# interrupts through it; by default they are in the kernel, yakvm's module or KVM's split
# irqchip, and the interrupts go through irqfds). `seconds` is the guest's (busybox time), `units` bytes or requests. The
# counters of the run go to $VCSV.
vblk() {
    hv=$1 r=$2 mode=$3 suffix= flag=
    want vblk || return 0
    [ "$mode" = exit ] && { suffix=-exit; flag=--no-ioeventfd; }
    [ "$mode" = uapic ] && { suffix=-uapic; flag=--user-apic; }
    cp linux/root.ext4 /tmp/vbench-root.img
    yakvm run --hypervisor $hv --stats --timeout 300 $flag --kernel linux/bzImage --mem 128M \
        --drive /tmp/vbench-root.img --drive /tmp/vbench-data.img --append "root=/dev/vda rw panic=-1 yakvm.disk=bench" \
        > /tmp/bench.out 2> /tmp/bench.err < /dev/null
    rc=$?
    tr -d '\r' < /tmp/bench.out > /tmp/bench.txt
    for op in write read read4k; do
        line=$(grep "^VBENCH $op " /tmp/bench.txt)
        if [ $rc -ne 0 ] || [ -z "$line" ]; then
            echo "bench: v$op$suffix on $hv failed (status $rc): $(tail -n 2 /tmp/bench.err)"
            continue
        fi
        set -- $line
        [ "$4" != 0.00 ] || { echo "bench: v$op$suffix on $hv took under 10 ms: not timed"; continue; }
        units=$3
        [ $op = read4k ] && units=$(($3 / 4096))
        echo "v$op$suffix,$hv,$r,$4,$units" >> $CSV
        printf '  round %s %-6s %-12s %8.3f s\n' "$r" "$hv" "v$op$suffix" "$4"
    done
    vdb=$(grep '^virtio-blk 00:05' /tmp/bench.err)
    num() { echo "$vdb" | sed -n "s/.* \([0-9]*\) $1.*/\1/p"; }
    requests=$(echo "$vdb" | sed -n 's/.*: \([0-9]*\) requests.*/\1/p')
    signals=$(awk '$1 == "ioeventfd" {s+=$2} END {print s+0}' /tmp/bench.err)
    by_irqfd=$(echo "$vdb" | sed -n 's/.* interrupts (\([0-9]*\) by irqfd.*/\1/p')
    emu=$(sed -n 's/^exits handled by the emulator: \([0-9]*\) (.*mmio \([0-9]*\),.*/\1,\2/p' /tmp/bench.err)
    [ -n "$requests" ] && echo "$mode,$hv,$r,$requests,$(num 'notifications by exit'),$signals,$(num interrupts),${by_irqfd:-0},$emu" >> $VCSV
}

# vnet HV ROUND MODE: our Linux with --net on a tap (bench0, 169.254.90.1; the guest .2):
# first 1000 UDP requests of 64 bytes, one at a time, to the guest's echo (yakvm-udprr in
# env/guest-net), timed here (row vnet-udprr: `units` requests); then 16 MiB each way
# over TCP with busybox nc: rows vnet-rx (image -> guest, timed here from the send's start
# to the guest's receiver closing) and vnet-tx (guest -> image, the guest's own clock
# around its nc), `units` bytes. MODE user: the emulator's device; vhost: `vhost=on` (rows
# "-vhost": the calls straight to irqfds); vhost-uapic: `vhost=on` and --user-apic (rows
# "-vhost-uapic": the calls through the emulator's relay thread).
vnet() {
    hv=$1 r=$2 mode=$3 mib=16 opt= flag= suffix=
    want vnet || return 0
    case $mode in
        vhost) opt=,vhost=on suffix=-vhost ;;
        vhost-uapic) opt=,vhost=on flag=--user-apic suffix=-vhost-uapic ;;
    esac
    head -c $((mib * 1048576)) /dev/urandom > /tmp/vnet-in
    rm -f /tmp/vnet-hold; mkfifo /tmp/vnet-hold
    nc -l -p 5002 <> /tmp/vnet-hold > /dev/null & ncp=$!
    yakvm run --hypervisor $hv --stats --timeout 300 $flag --kernel linux/bzImage --initrd linux/initramfs.cpio.gz --mem 256M \
        --net tap=bench0,ip=169.254.90.1$opt --append "yakvm.net=169.254.90.2,169.254.90.1,$mib,1500" \
        > /tmp/bench.out 2> /tmp/bench.err < /dev/null & vp=$!
    t=0
    while ! grep -q '^NET-READY' /tmp/bench.out 2>/dev/null && [ $t -lt 3000 ]; do sleep 0.1; t=$((t + 1)); done
    rr=$(bin/yakvm-udprr client 169.254.90.2:5005 1000 2>&1)
    cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }
    t0=$(cs)
    nc 169.254.90.2 5001 < /tmp/vnet-in
    rx=$(($(cs) - t0))
    wait $vp; rc=$?
    kill $ncp 2>/dev/null
    tx=$(tr -d '\r' < /tmp/bench.out | sed -n 's/^SEND-CS //p')
    if [ $rc -ne 0 ] || [ -z "$tx" ] || ! tr -d '\r' < /tmp/bench.out | grep -qx 'send: ok'; then
        echo "bench: vnet$suffix on $hv failed (status $rc): $(tail -n 2 /tmp/bench.err)"
        return
    fi
    for row in rx:$rx tx:$tx; do
        secs=$(echo "${row#*:}" | awk '{ printf "%.2f", $1 / 100 }')
        echo "vnet-${row%%:*}$suffix,$hv,$r,$secs,$((mib * 1048576))" >> $CSV
        printf '  round %s %-6s %-18s %8.3f s\n' "$r" "$hv" "vnet-${row%%:*}$suffix" "$secs"
    done
    set -- $rr
    if [ "$1" = UDPRR ]; then
        secs=$(echo "$3" | awk '{ printf "%.6f", $1 / 1e6 }')
        echo "vnet-udprr$suffix,$hv,$r,$secs,$2" >> $CSV
        printf '  round %s %-6s %-18s %8.3f s (median %s us, 99th percentile %s us)\n' "$r" "$hv" "vnet-udprr$suffix" "$secs" "$4" "$5"
    else
        echo "bench: vnet-udprr$suffix on $hv failed: $rr"
    fi
    grep '^virtio-net' /tmp/bench.err | sed 's/^/  | /'
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
    run apicread $hv $r 100000 --machine pc guests/bench_apicread.bin
    run apicread-x2 $hv $r 100000 --machine pc guests/bench_x2apicread.bin
    run apicread-uapic $hv $r 100000 --machine pc --user-apic guests/bench_apicread.bin
    run apictimer-uapic $hv $r 2000 --machine pc --user-apic guests/bench_apictimer.bin
    run ipi-uapic $hv $r 1000 --machine pc --smp 2 --user-apic guests/bench_ipi.bin
    run linux $hv $r 1 --kernel linux/bzImage --initrd linux/initramfs.cpio.gz --mem 128M --append yakvm.check
    vblk $hv $r ioeventfd
    vblk $hv $r exit
    vblk $hv $r uapic
    vnet $hv $r user
    vnet $hv $r vhost
    vnet $hv $r vhost-uapic
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
