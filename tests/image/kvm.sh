# Differential tests: every deterministic guest gives the same output, exit status and
# disk contents on yakvm and on KVM (`yakvm run --hypervisor kvm`: the same emulator and
# devices over /dev/kvm). kvm_amd and yakvm both own EFER.SVME, so the suite runs every
# guest on yakvm, unloads it, loads KVM, runs them again, and puts yakvm back.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
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

check kvm_missing_is_explained kvm_missing_is_explained
run_all yakvm
if check kvm_loads use_kvm; then
    run_all kvm
    check kvm_stats_shown kvm_stats_shown
    check yakvm_reloads use_yakvm
    echo "$GUESTS" | while read -r name args; do check "same_on_kvm_$name" same "$name"; done
    check differential_results_meaningful expected_results
    check ioeventfd_on_kvm ioeventfd_on_both
else
    use_yakvm
fi
check dmesg_clean dmesg_clean
