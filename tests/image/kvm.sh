# Differential tests: every deterministic guest gives the same output, exit status and
# disk contents on yakvm and on KVM (`yakvm run --hypervisor kvm`: the same emulator and
# devices over /dev/kvm). kvm_amd and yakvm both own EFER.SVME, so the suite runs every
# guest on yakvm, unloads it, loads KVM, runs them again, and puts yakvm back.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
exec 3>&1
D=/tmp/diff
rm -rf $D; mkdir -p $D/yakvm $D/kvm
printf 'MODULE-ONE and more' > /tmp/m1.bin
printf 'MODULE-TWO' > /tmp/m2.bin

# The guests, one per line: NAME ARGS... (shell words; stdin is empty; DISK stands for a
# fresh 16-sector disk image of this run). Left out, and why:
# - cpu: checks yakvm's own MSR and SVM-instruction policy (KVM emulates VM_CR and
#   VM_HSAVE_PA instead of raising #GP);
# - hypercall: yakvm's VMMCALL interface (KVM answers hypercalls itself);
# - spin, hostile, pc_hostile, writer: no end of their own or timing-dependent output;
# - pc_mmio_ticks: counts timer ticks against a busy loop (timing-dependent).
# debian and debian4 are Debian's stock cloud kernel (shares/debian, `scripts/distro-kernel.sh`) with --smp 2 and 4: ACPI
# and PCI, its CPUs through the MADT.
GUESTS='hello guests/hello.bin
elf guests/hello.elf
count guests/count.bin
sse guests/sse.bin
ports guests/ports.bin
mmio guests/mmio.bin
ioeventfd --stats --no-coalesced-io --ioeventfd pio:0x60 --ioeventfd pio:0x10:1:0x23 --ioeventfd mmio:0xc0000300 --ioeventfd mmio:0xc00007f8:4:0xcafe guests/ioeventfd.bin
triple guests/triple.bin
disk --mem 2M --disk DISK guests/disk.bin
disk_mmio --mem 2M --mmio-base 0x200000 --disk DISK guests/disk_mmio.bin
disk_none --mem 2M guests/disk.bin
real16 --entry real --load-addr 0x10000 guests/real16.bin
prot32 --entry protected guests/prot32.bin
pc_timer --machine pc guests/pc_timer.bin
multiboot --mem 32M --kernel guests/multiboot.elf --append "mem=32M answer=42" --module "/tmp/m1.bin,first arg1" --module /tmp/m2.bin,second
linux --kernel linux/bzImage --initrd linux/initramfs.cpio.gz --mem 128M --append yakvm.check
pc_pci --machine pc guests/pc_pci.bin
pc_pcidev --machine pc --pci-testdev guests/pc_pcidev.bin
debian --kernel debian/vmlinuz --initrd linux/initramfs.cpio.gz --mem 256M --smp 2 --append yakvm.check
debian4 --kernel debian/vmlinuz --initrd linux/initramfs.cpio.gz --mem 256M --smp 4 --append yakvm.check'

# run_all HV: every guest on hypervisor HV; output, status and disk under $D/HV.
run_all() {
    echo "$GUESTS" | while read -r name args; do
        dd if=/dev/zero of=$D/$1/$name.img bs=512 count=16 2>/dev/null
        eval "set -- $1 $(echo "$args" | sed "s|DISK|$D/$1/$name.img|")"
        yakvm run --hypervisor "$@" --timeout 120 > $D/$1/$name.out 2> $D/$1/$name.err < /dev/null
        echo $? > $D/$1/$name.rc
    done
}

# The part of a run's output that must match: Linux's console is timestamped and tells
# of its hypervisor (and a kernel message may come in between), so only the check's own
# lines count there.
comparable() {
    case $1 in
    linux|debian|debian4) tr -d '\r' < "$2" | sed -n '/^CHECK-BEGIN/,/^CHECK-END/p' |
        grep -E '^(CHECK-BEGIN|CHECK-END|vendor_id:|model name:|flags:|cpus:|MemTotal:|sum:)' ;;
    *) cat "$2" ;;
    esac
}

# same NAME: the guest did the same on both.
same() {
    y=$D/yakvm/$1 k=$D/kvm/$1
    [ "$(cat $y.rc)" = "$(cat $k.rc)" ] || { echo "status $(cat $y.rc) on yakvm, $(cat $k.rc) on kvm: $(tail -n 2 $k.err)"; return 1; }
    [ -s $y.out ] || [ "$(cat $y.rc)" != 0 ] || { echo "no output"; return 1; }
    comparable $1 $y.out > $y.cmp; comparable $1 $k.out > $k.cmp
    cmp -s $y.cmp $k.cmp || { echo "output differs: $(diff $y.cmp $k.cmp | head -n 6 | tr '\n' ' ')"; return 1; }
    cmp -s $y.img $k.img || { echo "disk contents differ"; return 1; }
    # The error a run ended with (a triple fault) is the same too (KVM resets a vCPU that
    # shut down: its RIP is gone, and yakvm's message leaves it out there).
    ey=$(grep 'yakvm: error' $y.err | sed 's/ at rip 0x[0-9a-f]*$//'); ek=$(grep 'yakvm: error' $k.err)
    [ "$ey" = "$ek" ] || { echo "errors differ: '$ey' / '$ek'"; return 1; }
}

# The checks above compare; these make sure there was something worth comparing.
expected_results() {
    [ "$(cat $D/yakvm/hello.out)" = "Hello from a yakvm guest!" ] || { echo "hello: $(cat $D/yakvm/hello.out)"; return 1; }
    [ "$(grep -c '^ok ' $D/yakvm/disk.out)" -eq 18 ] || { echo "disk suite: $(head -n 3 $D/yakvm/disk.out)"; return 1; }
    [ "$(comparable linux $D/yakvm/linux.out | wc -l)" -eq 8 ] || { echo "linux check lines: $(comparable linux $D/yakvm/linux.out)"; return 1; }
    tr -d '\r' < $D/yakvm/linux.out | grep -q '^sum: 2664667000$' || { echo "linux check: $(tail -c 300 $D/yakvm/linux.out)"; return 1; }
    [ "$(comparable debian $D/yakvm/debian.out | wc -l)" -eq 8 ] && comparable debian $D/yakvm/debian.out | grep -qx 'cpus: 2' ||
        { echo "debian check lines: $(comparable debian $D/yakvm/debian.out)"; return 1; }
    [ "$(comparable debian4 $D/yakvm/debian4.out | wc -l)" -eq 8 ] && comparable debian4 $D/yakvm/debian4.out | grep -qx 'cpus: 4' ||
        { echo "debian4 check lines: $(comparable debian4 $D/yakvm/debian4.out)"; return 1; }
    [ "$(grep -c '^ok ' $D/yakvm/pc_pci.out)" -eq 13 ] || { echo "pc_pci: $(grep -v '^ok ' $D/yakvm/pc_pci.out | head -n 3)"; return 1; }
    [ "$(grep -c '^ok ' $D/yakvm/pc_pcidev.out)" -eq 30 ] || { echo "pc_pcidev: $(grep -v '^ok ' $D/yakvm/pc_pcidev.out | head -n 3)"; return 1; }
    grep -q 'guest shut down (triple fault)' $D/kvm/triple.err || { echo "triple on kvm: $(cat $D/kvm/triple.err)"; return 1; }
    [ "$(cat $D/kvm/multiboot.rc)" = 0 ] || { echo "multiboot on kvm: $(tail -n 3 $D/kvm/multiboot.out)"; return 1; }
}

# --stats on KVM shows KVM's own counters (its binary statistics) beside the emulator's.
kvm_stats_shown() {
    yakvm run --hypervisor kvm --stats --no-coalesced-io guests/hello.bin > /dev/null 2> $D/kvm-stats.err || return 1
    grep -q '^exits handled by the emulator: 27 (io 26, mmio 0, hlt 1,' $D/kvm-stats.err || { echo "$(cat $D/kvm-stats.err)"; return 1; }
    grep "^KVM's counters:" $D/kvm-stats.err | grep -qE ' io_exits 26(,|$)' || { echo "$(cat $D/kvm-stats.err)"; return 1; }
}
# Without /dev/kvm (yakvm loaded, kvm_amd not), --hypervisor kvm says what is missing.
kvm_missing_is_explained() {
    msg=$(yakvm run --hypervisor kvm guests/hello.bin 2>&1); rc=$?
    [ $rc -ne 0 ] && echo "$msg" | grep -q 'cannot open /dev/kvm.*is kvm_amd loaded' || { echo "status $rc: $msg"; return 1; }
}

# IOEVENTFD through KVM_IOEVENTFD: the same counts as on yakvm (lib.sh).
ioeventfd_on_both() {
    for hv in yakvm kvm; do
        ioeventfd_results "$(cat $D/$hv/ioeventfd.out)" $D/$hv/ioeventfd.err || { echo "on $hv"; return 1; }
    done
}

# KVM's split irqchip (`--hypervisor kvm --kernel-apic`, docs/kvm.md): the local APICs are
# KVM's, the PIC and the I/O APIC the emulator's; messages go in by KVM_SIGNAL_MSI, the
# virtio devices' vectors by KVM_IRQFD, KVM reports the EOIs of the I/O APIC's
# level-triggered vectors. The same guests, and the same checks, as on yakvm --kernel-apic.
KAPIC='--hypervisor kvm --kernel-apic --machine pc'
# The PIC through vCPU 0's LINT0 (ExtINT, KVM_INTERRUPT): pc_timer's 100 ticks, as on yakvm.
kapic_pic() {
    timeout -s KILL 90 yakvm run $KAPIC --timeout 60 guests/pc_timer.bin < /dev/null > $D/kapic/pc_timer.out 2> $D/kapic/pc_timer.err; rc=$?
    [ "$rc" = "$(cat $D/yakvm/pc_timer.rc)" ] && cmp -s $D/kapic/pc_timer.out $D/yakvm/pc_timer.out ||
        { echo "status $rc: $(head -c 200 $D/kapic/pc_timer.out) / $(tail -n 2 $D/kapic/pc_timer.err)"; return 1; }
}
# LVT LINT0 masked in KVM's APIC keeps the PIC's interrupts away; unmasked, they come again.
kapic_lint0() {
    out=$(yakvm run $KAPIC --timeout 60 guests/lint0.bin 2>&1 < /dev/null); rc=$?
    got=$(echo "$out" | tr -d '\r' | grep '^lint0')
    want=$(printf 'lint0: ticks with LINT0 unmasked\nlint0: no tick with LINT0 masked\nlint0 ok: ticks again with LINT0 unmasked')
    [ $rc -eq 0 ] && [ "$got" = "$want" ] || { echo "status $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; return 1; }
}
# IRQFD: 10000 eventfd signals from a host thread, each an interrupt the guest counts,
# none through the emulator (the checks of smp.sh's irqfd); with --user-apic refused.
kapic_irqfd() {
    out=$(yakvm run $KAPIC --timeout 120 --stats --irqfd 0x2a:10000:0x200000 guests/irqfd.bin 2> $D/kapic/irqfd.err < /dev/null); rc=$?
    user=$(sed -n 's/^exits handled by the emulator: \([0-9]*\).*/\1/p' $D/kapic/irqfd.err)
    echo "  irqfd on KVM --kernel-apic: ${user:-?} exits to the emulator; $(grep '^irqfd' $D/kapic/irqfd.err)" >&3
    [ $rc -eq 0 ] && [ "$(echo "$out" | tr -d '\r')" = 'irqfd: 10000 interrupts' ] || { echo "status $rc: $out $(tail -n 2 $D/kapic/irqfd.err)"; return 1; }
    grep -qx 'irqfd: 10000 signals sent, the guest counted 10000' $D/kapic/irqfd.err || { echo "$(grep '^irqfd' $D/kapic/irqfd.err)"; return 1; }
    [ -n "$user" ] && [ "$user" -lt 200 ] || { echo "${user:-?} exits reached the emulator"; return 1; }
    out=$(timeout -s KILL 30 yakvm run --hypervisor kvm --machine pc --user-apic --irqfd 0x2a:1:0x200000 guests/irqfd.bin 2>&1 < /dev/null); rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] && echo "$out" | grep -q 'irqfd' || { echo "--user-apic: status $rc: $out"; return 1; }
}
# A level-triggered line through the I/O APIC: pc_pcidev's INTx checks (GSI 22, level,
# active low, shared by two functions: the second interrupt comes only once the EOI of the
# first, KVM's KVM_EXIT_IOAPIC_EOI, cleared remote IRR), its MSI and MSI-X, its hostile
# BARs; every check as on yakvm.
kapic_level() {
    timeout -s KILL 150 yakvm run $KAPIC --timeout 120 --stats --pci-testdev guests/pc_pcidev.bin > $D/kapic/pcidev.out 2> $D/kapic/pcidev.err < /dev/null; rc=$?
    out=$(tr -d '\r' < $D/kapic/pcidev.out)
    eoi=$(sed -n 's/^exits handled by the emulator: .* ioapic-eoi \([0-9]*\).*/\1/p' $D/kapic/pcidev.err)
    echo "  pc_pcidev on KVM --kernel-apic: $(echo "$out" | grep -c '^ok ') checks passed, ${eoi:-?} I/O APIC EOIs reported by KVM" >&3
    [ $rc -eq 0 ] && [ "$(echo "$out" | grep -c '^ok ')" -eq 30 ] || { echo "status $rc: $(echo "$out" | grep -v '^ok ' | head -n 3) $(tail -n 2 $D/kapic/pcidev.err)"; return 1; }
    [ -n "$eoi" ] && [ "$eoi" -ge 2 ] || { echo "${eoi:-no} EOI exits: $(grep '^exits handled' $D/kapic/pcidev.err)"; return 1; }
}
# Our Linux on two vCPUs with KVM's local APICs: both CPUs online, each ran its pinned
# process, each took its own timer's interrupts (LOC); it powers off by ACPI S5.
kapic_linux_smp() {
    timeout -s KILL 600 yakvm run $KAPIC --kernel linux/bzImage --initrd linux/initramfs.cpio.gz --mem 128M --smp 2 --append yakvm.smp --stats \
        < /dev/null 2> $D/kapic/linux-smp.err | tr -d '\r' > $D/kapic/linux-smp.out
    out=$(cat $D/kapic/linux-smp.out)
    sed -n '/^SMP-BEGIN/,/^SMP-END/p' $D/kapic/linux-smp.out | sed 's/^/  | /' >&3
    grep -q 'the guest powered off (ACPI S5)' $D/kapic/linux-smp.err || { echo "$(tail -n 3 $D/kapic/linux-smp.err) / $(tail -c 400 $D/kapic/linux-smp.out)"; return 1; }
    echo "$out" | grep -qx 'cpus: 2' && echo "$out" | grep -qx 'online: 0-1' || { echo "CPUs: $(echo "$out" | grep -E '^(cpus|online):')"; return 1; }
    for p in 0 1; do
        echo "$out" | grep -qx "pinned-$p: sum 89995, ran on cpu $p" || { echo "pinned-$p: $(echo "$out" | grep "^pinned-$p")"; return 1; }
    done
    loc=$(echo "$out" | awk '$1 == "LOC:" { print $2, $3 }')
    set -- $loc
    [ "${1:-0}" -gt 0 ] && [ "${2:-0}" -gt 0 ] || { echo "local timer interrupts: '$loc'"; return 1; }
    # KVM's APICs offer TSC-deadline mode (as yakvm's): Linux takes it on both CPUs.
    [ "$(echo "$out" | grep -cx 'timer clockevent[01]: lapic-deadline')" -eq 2 ] || { echo "timers: $(echo "$out" | grep '^timer' | tr '\n' ' ')"; return 1; }
}

# guests/tsc_deadline.bin (smp.sh) on KVM's local APICs: the same checks.
kapic_tsc_deadline() {
    timeout -s KILL 150 yakvm run $KAPIC --timeout 120 guests/tsc_deadline.bin < /dev/null > $D/kapic/tsc-deadline.out 2> $D/kapic/tsc-deadline.err; rc=$?
    echo "  tsc_deadline on KVM --kernel-apic: $(tr -d '\r' < $D/kapic/tsc-deadline.out | grep '^tsc_deadline')" >&3
    [ $rc -eq 0 ] && tr -d '\r' < $D/kapic/tsc-deadline.out | grep -q '^tsc_deadline: 300 deadlines each fired once and none early' ||
        { echo "status $rc: $(tr -d '\r' < $D/kapic/tsc-deadline.out | tail -n 2) / $(tail -n 2 $D/kapic/tsc-deadline.err)"; return 1; }
}

check kvm_missing_is_explained kvm_missing_is_explained
run_all yakvm
if check kvm_loads use_kvm; then
    run_all kvm
    check kvm_stats_shown kvm_stats_shown
    mkdir -p $D/kapic
    check kvm_kernel_apic_pic_through_lint0 kapic_pic
    check kvm_kernel_apic_lint0_masks_the_pic kapic_lint0
    check kvm_kernel_apic_irqfd_10000_signals kapic_irqfd
    check kvm_kernel_apic_level_triggered_intx_eoi kapic_level
    check kvm_kernel_apic_linux_smp2 kapic_linux_smp
    check kvm_kernel_apic_tsc_deadline_timer kapic_tsc_deadline
    check yakvm_reloads use_yakvm
    echo "$GUESTS" | while read -r name args; do check "same_on_kvm_$name" same "$name"; done
    check differential_results_meaningful expected_results
    check ioeventfd_on_kvm ioeventfd_on_both
else
    use_yakvm
fi
check dmesg_clean dmesg_clean
