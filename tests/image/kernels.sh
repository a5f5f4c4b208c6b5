# Kernels booted with `yakvm run --kernel` on the pc machine: a real Linux (the guest
# kernel and initramfs `make env` built, in shares/linux) driven through its console, and
# our Multiboot kernel checking what the specification promises.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
exec 3>&1

KERNEL=linux/bzImage
INITRD=linux/initramfs.cpio.gz
# Hundredths of a second since the image booted.
now_cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }
# wait_for FILE TEXT TICKS [PERIOD [PID]]: prints when TEXT first appeared in FILE, polled
# every PERIOD seconds (default 0.05) for at most TICKS polls; given up as soon as yakvm
# (PID, if given) has ended (a kernel that panics reboots with panic=-1, and yakvm ends).
# (Polling costs the image CPU time that the guest's boot would use: the boot's marker is
# polled more slowly.)
wait_for() {
    file=$1 text=$2 limit=$3 period=${4:-0.05} alive=${5:-}
    t=0
    while [ $t -lt "$limit" ]; do
        grep -q "$text" "$file" 2>/dev/null && { now_cs; return 0; }
        # An ended yakvm the shell has not waited for yet is a zombie: ended too.
        [ -z "$alive" ] || grep -qE '^State:[[:space:]]+[^Z]' /proc/$alive/status 2>/dev/null || return 1
        sleep "$period"; t=$((t + 1))
    done
    return 1
}

# wait_bounded PID SECONDS: waits for yakvm, stopping it after SECONDS (a guest that stops
# making progress, docs/limits.md, fails its check at once instead of holding the
# boot to the image's 20-minute limit): SIGTERM first, so that a run with --stats prints
# them (what the stalled guest was doing), SIGKILL 5 s later; its status.
wait_bounded() {
    ( sleep "$2"; kill -TERM "$1"; sleep 5; kill -KILL "$1" ) > /dev/null 2>&1 &
    killer=$!
    wait "$1"; rc=$?
    kill "$killer" 2>/dev/null
    return $rc
}

# One boot serves every check. The commands are typed once the shell is up, as a user
# would: Linux's 8250 driver discards what arrives before it starts (as on hardware).
boot_linux() {
    rm -f "$OUT/linux.out" "$OUT/linux.err" /tmp/linux.in
    mkfifo /tmp/linux.in
    t0=$(now_cs)
    yakvm run --kernel $KERNEL --initrd $INITRD --mem 128M --stats < /tmp/linux.in > "$OUT/linux.out" 2> "$OUT/linux.err" &
    pid=$!
    exec 5> /tmp/linux.in
    up=$(wait_for "$OUT/linux.out" YAKVM-GUEST-LINUX-UP 1200 0.25) || { kill $pid; exec 5>&-; echo "no marker: $(tail -c 600 "$OUT/linux.out")"; return 1; }
    wait_for "$OUT/linux.out" '/ # ' 600 > /dev/null
    printf 'uname -r\n' >&5
    printf 'grep -m1 "model name" /proc/cpuinfo\n' >&5
    printf 'echo SLEEP-START; sleep 2; echo SLEEP-END\n' >&5
    s1=$(wait_for "$OUT/linux.out" '^SLEEP-START' 2000) || { kill $pid; exec 5>&-; echo "no SLEEP-START: $(tail -c 300 "$OUT/linux.out")"; return 1; }
    s2=$(wait_for "$OUT/linux.out" '^SLEEP-END' 2000) || { kill $pid; exec 5>&-; echo "no SLEEP-END"; return 1; }
    printf 'cat /proc/interrupts\n' >&5
    # What ACPI and PCI gave our kernel: its tables, and an lspci from sysfs.
    printf 'echo "tables:" $(ls /sys/firmware/acpi/tables)\n' >&5
    printf 'for d in /sys/bus/pci/devices/*; do echo "pci: ${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class)"; done\n' >&5
    printf 'read line; echo "answer: $line"\n' >&5
    sleep 1
    printf 'yakvm-says-hello\n' >&5
    printf 'poweroff -f\n' >&5
    wait_bounded $pid 120; rc=$?
    exec 5>&-
    rm -f /tmp/linux.in
    echo $rc > "$OUT/linux.rc"
    echo $(( s2 - s1 )) > "$OUT/linux.sleep_cs"
    b=$(( up - t0 ))
    echo "  Linux on yakvm: yakvm start to init's marker $((b / 100)).$(printf %02d $((b % 100))) s; 'sleep 2' took $(( (s2 - s1) * 10 )) ms of host time" >&3
    sed -n '/^exits:/,$p' "$OUT/linux.err" | sed 's/^/  | /' >&3
}
# reboot -f: Linux resets through the i8042; yakvm ends with status 0 and says so.
# Without ACPI tables (--no-acpi), as a kernel that wants only the MP table: our kernel
# finds its two CPUs there, and `reboot -f` (no FADT reset register) pulses the i8042's
# reset line.
reboot_linux() {
    rm -f /tmp/reboot.in; mkfifo /tmp/reboot.in
    yakvm run --kernel $KERNEL --initrd $INITRD --mem 64M --smp 2 --no-acpi < /tmp/reboot.in > "$OUT/reboot.out" 2>&1 &
    pid=$!
    exec 6> /tmp/reboot.in
    wait_for "$OUT/reboot.out" '/ # ' 1200 0.25 > /dev/null || { kill $pid; exec 6>&-; echo "no shell: $(tail -c 300 "$OUT/reboot.out")"; return 1; }
    printf 'echo "online: $(cat /sys/devices/system/cpu/online)" "acpi: $(ls /sys/firmware/acpi/tables 2>/dev/null | wc -l)"\n' >&6
    printf 'dmesg | grep -E "MP-table|ACPI: (Using|No)" | sed "s/^\\[[^]]*\\] /dmesg: /"\n' >&6
    wait_for "$OUT/reboot.out" '^online: ' 400 > /dev/null
    printf 'reboot -f\n' >&6
    wait_bounded $pid 120; rc=$?
    exec 6>&-
    rm -f /tmp/reboot.in
    [ $rc -eq 0 ] && grep -q 'the guest reset the machine' "$OUT/reboot.out" || { echo "status $rc: $(tail -c 300 "$OUT/reboot.out")"; return 1; }
}
reboot_mp_table() { # the --no-acpi boot: both CPUs through the MP table, no ACPI table
    out=$(tr -d '\r' < "$OUT/reboot.out")
    echo "$out" | grep -qx 'online: 0-1 acpi: 0' || { echo "$(echo "$out" | grep '^online:')"; return 1; }
    echo "$out" | grep -qE '^dmesg: found SMP MP-table at' || { echo "no MP table in dmesg: $(echo "$out" | grep '^dmesg:')"; return 1; }
}
boots_to_init() { [ -f "$OUT/linux.rc" ] && grep -q '^YAKVM-GUEST-LINUX-UP' "$OUT/linux.out"; }
uname_r() { grep -q '^6\.12\.' "$OUT/linux.out" || { echo "no 6.12.x in the output"; return 1; }; }
cpuinfo() { grep -q 'model name.*yakvm virtual CPU' "$OUT/linux.out" || { echo "$(grep 'model name' "$OUT/linux.out")"; return 1; }; }
interrupts_count() {
    timer=$(tr -d '\r' < "$OUT/linux.out" | awk '$1 == "0:" { print $2 }')
    uart=$(tr -d '\r' < "$OUT/linux.out" | awk '$1 == "4:" { print $2 }')
    [ "${timer:-0}" -gt 100 ] && [ "${uart:-0}" -gt 0 ] || { echo "timer '$timer', uart '$uart': $(grep -A6 CPU0 "$OUT/linux.out")"; return 1; }
}
sleep_2s() {
    t=$(cat "$OUT/linux.sleep_cs")
    # 2 s, within 10% (plus the console's 50 ms polling here)
    [ "$t" -ge 180 ] && [ "$t" -le 225 ] || { echo "sleep 2 took ${t}0 ms"; return 1; }
}
# Our kernel with ACPI and PCI: the tables, and the host bridge (vendor, device, class) alone on bus 0.
linux_acpi_tables() {
    t=" $(tr -d '\r' < "$OUT/linux.out" | grep -m1 '^tables: ' | cut -d: -f2) "
    for sig in APIC FACP DSDT MCFG; do
        case "$t" in *" $sig "*) ;; *) echo "no $sig in:$t"; return 1 ;; esac
    done
}
linux_pci() {
    out=$(tr -d '\r' < "$OUT/linux.out")
    echo "$out" | grep -qx 'pci: 0000:00:00.0 0x1b36 0x0008 0x060000' || { echo "$(echo "$out" | grep '^pci: ')"; return 1; }
    [ "$(echo "$out" | grep -cE '^pci: [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] 0x')" -eq 1 ] || { echo "more than the host bridge: $(echo "$out" | grep '^pci: ')"; return 1; }
}
stdin_line_answered() { grep -q '^answer: yakvm-says-hello' "$OUT/linux.out" || { echo "$(tail -c 300 "$OUT/linux.out")"; return 1; }; }
# Our kernel has ACPI: `poweroff -f` is ACPI's S5.
powers_off() {
    [ "$(cat "$OUT/linux.rc")" = 0 ] && grep -q 'the guest powered off (ACPI S5)' "$OUT/linux.err" ||
        { echo "status $(cat "$OUT/linux.rc"): $(tail -n 3 "$OUT/linux.err")"; return 1; }
}

# Linux on two vCPUs (`--smp 2`: local APICs, the I/O APIC, the MP table). The guest's init
# (`yakvm.smp`) says what it sees, runs two pinned and two free processes, shows the
# per-CPU interrupts and powers off: Linux stops vCPU 1, then vCPU 0 enters ACPI's S5.
# The local APICs are the module's (the default), or the emulator's with --user-apic.
linux_smp() {
    t0=$(now_cs)
    timeout 600 yakvm run --kernel $KERNEL --initrd $INITRD --mem 128M --smp 2 --append yakvm.smp --stats "$@" \
        < /dev/null > "$OUT/linux-smp.out" 2> "$OUT/linux-smp.err"; rc=$?
    t=$(( $(now_cs) - t0 ))
    echo "  Linux --smp 2${1:+ $*} on yakvm: start to power-off $((t / 100)).$(printf %02d $((t % 100))) s" >&3
    tr -d '\r' < "$OUT/linux-smp.out" | sed -n '/^SMP-BEGIN/,/^SMP-END/p' | sed 's/^/  | /' >&3
    grep -E '^(vCPU|interrupts by line)' "$OUT/linux-smp.err" | sed 's/^/  | /' >&3
    [ $rc -eq 0 ] && grep -q 'the guest powered off (ACPI S5)' "$OUT/linux-smp.err" ||
        { echo "status $rc: $(tail -n 3 "$OUT/linux-smp.err") / $(tail -c 400 "$OUT/linux-smp.out")"; return 1; }
    out=$(tr -d '\r' < "$OUT/linux-smp.out")
    echo "$out" | grep -qx 'cpus: 2' && echo "$out" | grep -qx 'online: 0-1' ||
        { echo "CPUs: $(echo "$out" | grep -E '^(cpus|online):')"; return 1; }
    # Sum of i % 7 for i below 30000: 89995.
    for p in 0 1; do
        echo "$out" | grep -qx "pinned-$p: sum 89995, ran on cpu $p" || { echo "pinned-$p: $(echo "$out" | grep "^pinned-$p")"; return 1; }
    done
    [ "$(echo "$out" | grep -c '^free-[ab]: sum 89995, ran on cpu [01]$')" -eq 2 ] || { echo "free: $(echo "$out" | grep '^free')"; return 1; }
    for c in cpu0 cpu1; do
        busy=$(echo "$out" | awk -v c="$c:" '$1 == "busy" && $2 == c { print $3 }')
        [ "${busy:-0}" -gt 0 ] || { echo "$c was not busy: $(echo "$out" | grep '^busy')"; return 1; }
    done
    # Each CPU's own timer (the local APIC's) interrupted it.
    # With the kernel's APICs, both vCPUs report the module's APIC work (--stats).
    # Their timers: TSC-deadline mode with the kernel's APICs (which offer it), the
    # APIC's count with the emulator's.
    case "$*" in *user-apic*) timer=lapic ;;
    *)
        grep -E '^ *kernel APIC:' "$OUT/linux-smp.err" | sed 's/^ */  | /' >&3
        [ "$(grep -c '^ *kernel APIC:' "$OUT/linux-smp.err")" -eq 2 ] || { echo "no kernel APIC counters"; return 1; }
        timer=lapic-deadline ;;
    esac
    [ "$(echo "$out" | grep -cx "timer clockevent[01]: $timer")" -eq 2 ] || { echo "timers (want $timer): $(echo "$out" | grep '^timer' | tr '\n' ' ')"; return 1; }
    loc=$(echo "$out" | awk '$1 == "LOC:" { print $2, $3 }')
    set -- $loc
    [ "${1:-0}" -gt 0 ] && [ "${2:-0}" -gt 0 ] || { echo "local timer interrupts: '$loc'"; return 1; }
}

# expect_error WANT COMMAND...: fails with one error line holding WANT, before any VM runs.
expect_error() {
    want=$1; shift
    msg=$("$@" 2>&1 >/dev/null < /dev/null); rc=$?
    [ $rc -ne 0 ] || { echo "status 0 for: $*"; return 1; }
    echo "$msg" | grep -q -- "$want" || { echo "for '$*' got: $msg"; return 1; }
    [ "$(echo "$msg" | wc -l)" -le 2 ] || { echo "more than one error for '$*': $msg"; return 1; }
}
# patch FILE OFFSET BYTES...: writes bytes (octal escapes) at OFFSET of a copy of FILE.
patched() {
    cp "$1" "$2"; printf "$4" | dd of="$2" bs=1 seek=$(($3)) conv=notrunc 2>/dev/null
}
kernel_bad_input() {
    head -c 200000 $KERNEL > /tmp/truncated
    expect_error 'truncated' yakvm run --kernel /tmp/truncated || return 1
    patched $KERNEL /tmp/old 0x206 '\004\002'           # protocol 2.04
    expect_error 'boot protocol 2.04' yakvm run --kernel /tmp/old || return 1
    patched $KERNEL /tmp/new 0x206 '\000\003'           # protocol 3.00
    expect_error 'boot protocol 3.00' yakvm run --kernel /tmp/new || return 1
    dd if=/dev/zero of=/tmp/big-initrd bs=1M count=40 2>/dev/null
    expect_error 'initrd of 41943040 bytes does not fit' yakvm run --kernel $KERNEL --initrd /tmp/big-initrd --mem 48M || return 1
    expect_error 'neither a Linux bzImage' yakvm run --kernel guests/hello.bin || return 1
    expect_error 'cannot read kernel' yakvm run --kernel /nonexistent || return 1
    rm -f /tmp/truncated /tmp/old /tmp/new /tmp/big-initrd
}

# Our Multiboot kernel checks the magic, the memory map against --mem, the command line,
# two modules with their strings and contents, and the boot loader's name.
multiboot_contract() {
    printf 'MODULE-ONE and more' > /tmp/m1.bin
    printf 'MODULE-TWO' > /tmp/m2.bin
    out=$(yakvm run --mem 32M --kernel guests/multiboot.elf --append "mem=32M answer=42" \
        --module "/tmp/m1.bin,first arg1" --module /tmp/m2.bin,second 2>&1 < /dev/null); rc=$?
    echo "$out" > "$OUT/multiboot.out"
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -v '^ok' | head -n 5)"; return 1; }
    [ "$(echo "$out" | grep -c '^ok ')" -eq 20 ] && ! echo "$out" | grep -q FAIL || { echo "$(echo "$out" | grep -v '^ok' | head -n 5)"; return 1; }
    echo "$out" | grep -qx 'cmdline mem=32M answer=42' || { echo "cmdline: $(grep cmdline "$OUT/multiboot.out")"; return 1; }
}
# Our PC-boot kernel, laid out as xv6's (entered at its ELF entry as a physical address):
# what a kernel booted by GRUB on a PC finds (GRUB's selectors, the BIOS data area, the MP
# table by xv6's search order, the CRTC's registers), then text on the VGA screen, which
# --vga mirrors line by line: the whole output, exactly. Without --vga, no screen lines.
pcboot_contract() {
    yakvm run --kernel guests/pcboot.elf --vga > "$OUT/pcboot.out" 2> "$OUT/pcboot.err" < /dev/null; rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $(grep -v '^ok' "$OUT/pcboot.out" | head -n 5)"; return 1; }
    cmp -s "$OUT/pcboot.out" tests/expected/pcboot.out ||
        { echo "differs from tests/expected/pcboot.out: $(diff tests/expected/pcboot.out "$OUT/pcboot.out" | head -n 4 | tr '\n' ' ')"; return 1; }
    out=$(yakvm run --kernel guests/pcboot.elf 2>&1 < /dev/null) || { echo "without --vga: status $?"; return 1; }
    [ "$out" = "$(grep -v '^VGA' tests/expected/pcboot.out)" ] || { echo "without --vga: $(echo "$out" | grep -v '^ok' | head -n 3)"; return 1; }
}
# Our Multiboot 2 kernel walks its information structure: command line, boot loader
# name, a module, memory information and map, the EGA text framebuffer, the RSDP tags.
multiboot2_contract() {
    printf 'MODULE-ONE and more' > /tmp/m1.bin
    out=$(yakvm run --mem 32M --kernel guests/multiboot2.elf --append "answer=42" --module "/tmp/m1.bin,first arg1" 2>&1 < /dev/null); rc=$?
    echo "$out" > "$OUT/multiboot2.out"
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -v '^ok' | head -n 5)"; return 1; }
    [ "$(echo "$out" | grep -c '^ok ')" -eq 12 ] && ! echo "$out" | grep -q FAIL || { echo "$(echo "$out" | grep -v '^ok' | head -n 5)"; return 1; }
    echo "$out" | grep -qx 'cmdline answer=42' || { echo "cmdline: $(grep cmdline "$OUT/multiboot2.out")"; return 1; }
}
multiboot_bad_input() {
    # The header's checksum is the third word of the header, at file offset 0x1000.
    off=$(( 0x1008 ))
    patched guests/multiboot.elf /tmp/badsum.elf $off '\001\002\003\004'
    expect_error 'checksum is wrong' yakvm run --kernel /tmp/badsum.elf || return 1
    expect_error 'outside RAM' yakvm run --mem 1152K --kernel guests/multiboot.elf || return 1
    expect_error 'is a Multiboot kernel: give its files as --module' yakvm run --kernel guests/multiboot.elf --initrd /tmp/m1.bin || return 1
    rm -f /tmp/badsum.elf
}

# Debian 12's stock cloud kernel (shares/debian, fetched by scripts/distro-kernel.sh: a
# failed fetch fails these checks) with our initramfs on the pc machine, --smp N. It has
# no MP table parser (no CONFIG_X86_MPPARSE): it finds its CPUs only through the MADT. The
# shell is driven through the console; the markers are computed by the guest's shell, so
# that the echo of the typed line never matches them.
DEBIAN=debian/vmlinuz
debian_boot() { # debian_boot N END: boots with --smp N, asks, ends by END (poweroff or reboot); leaves debian-N.*
    n=$1 end=$2 out="$OUT/debian-$1.out" err="$OUT/debian-$1.err"
    rm -f "$out" "$err" "$OUT/debian-$1.rc" /tmp/debian.in
    [ -f debian/vmlinuz ] || { echo "no Debian kernel: $(cat debian/FETCH-FAILED 2>/dev/null || echo 'not staged (make env)')"; return 1; }
    mkfifo /tmp/debian.in
    t0=$(now_cs)
    yakvm run --kernel $DEBIAN --initrd $INITRD --mem 256M --smp "$n" < /tmp/debian.in > "$out" 2> "$err" &
    pid=$!
    exec 7> /tmp/debian.in
    up=$(wait_for "$out" YAKVM-GUEST-LINUX-UP 2400 0.25) || { kill $pid; exec 7>&-; echo "no marker: $(tail -c 400 "$out") $(tail -n 3 "$err")"; return 1; }
    wait_for "$out" '/ # ' 600 > /dev/null
    # Only emergencies reach the console from here on: a kernel message printed in the
    # middle of an answer ("hrtimer: interrupt took …", under load) would cut its line.
    printf 'echo 1 > /proc/sys/kernel/printk; echo DEBIAN-$((6*7))-BEGIN; uname -r; echo "online: $(cat /sys/devices/system/cpu/online)"\n' >&7
    printf 'echo "tables:" $(ls /sys/firmware/acpi/tables)\n' >&7
    printf 'for d in /sys/bus/pci/devices/*; do echo "pci: ${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class)"; done\n' >&7
    printf 'dmesg | grep -E "ACPI: (Using ACPI|PM-Timer|IOAPIC|PCI Root)|MMCONFIG|smpboot: (Allowing|Total)|PCI host bridge to bus|pci 0000:00:00.0:|x86: Booted" | sed "s/^\\[[^]]*\\] /dmesg: /"\n' >&7
    printf 'echo DEBIAN-$((6*7))-END\n' >&7
    wait_for "$out" '^DEBIAN-42-END' 1200 > /dev/null || { kill $pid; exec 7>&-; echo "no answers: $(tail -c 400 "$out")"; return 1; }
    t1=$(now_cs)
    printf '%s\n' "$end" >&7
    wait_bounded $pid 120; rc=$?
    t2=$(now_cs)
    exec 7>&-
    rm -f /tmp/debian.in
    echo $rc > "$OUT/debian-$n.rc"
    b=$(( up - t0 )) p=$(( t2 - t1 ))
    echo "  Debian $(tr -d '\r' < "$out" | grep -m1 -E '^6\.[0-9]+\.') --smp $n on yakvm: start to init's marker $((b / 100)).$(printf %02d $((b % 100))) s; $end to exit $((p / 100)).$(printf %02d $((p % 100))) s" >&3
    tr -d '\r' < "$out" | sed -n '/^DEBIAN-42-BEGIN/,/^DEBIAN-42-END/p' | grep -vE '^DEBIAN-42' | sed 's/^/  | /' >&3
}
# answer N PATTERN: the line of debian-N's answers that PATTERN (a whole line) matches.
debian_answer() { tr -d '\r' < "$OUT/debian-$1.out" | sed -n '/^DEBIAN-42-BEGIN/,/^DEBIAN-42-END/p' | grep -xE "$2"; }
debian_cpus() { # every CPU online, found through the MADT
    n=$1 last=$(( $1 - 1 ))
    debian_answer $n "online: 0-$last" > /dev/null || { echo "$(debian_answer $n 'online: .*')"; return 1; }
    debian_answer $n 'dmesg: ACPI: Using ACPI \(MADT\) for SMP configuration information' > /dev/null || { echo "no MADT line in dmesg"; return 1; }
}
debian_tables() { # the ACPI tables Linux took
    t=" $(debian_answer $1 'tables: .*' | cut -d: -f2) "
    for sig in APIC FACP DSDT MCFG; do
        case "$t" in *" $sig "*) ;; *) echo "no $sig in:$t"; return 1 ;; esac
    done
}
debian_pci() { # the host bridge, by vendor, device, class; and Linux took ECAM
    debian_answer $1 'pci: 0000:00:00.0 0x1b36 0x0008 0x060000' > /dev/null || { echo "$(debian_answer $1 'pci: .*')"; return 1; }
    bdf='pci: [0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] 0x[0-9a-f]{4} 0x[0-9a-f]{4} 0x[0-9a-f]{6}'
    [ "$(debian_answer $1 "$bdf" | wc -l)" -eq 1 ] || { echo "more than the host bridge: $(debian_answer $1 'pci: .*')"; return 1; }
    # Linux takes ECAM only where the memory map reserves it, and says so.
    debian_answer $1 'dmesg: PCI: MMCONFIG at \[mem 0xe0000000-0xe00fffff\] reserved (in|as) E820( entry)?' > /dev/null &&
        ! debian_answer $1 'dmesg: .*not using MMCONFIG.*' > /dev/null ||
        { echo "ECAM not taken: $(debian_answer $1 'dmesg: .*MMCONFIG.*')"; return 1; }
    debian_answer $1 'dmesg: ACPI: PCI Root Bridge \[PCI0\] \(domain 0000 \[bus 00\]\)' > /dev/null || { echo "no PCI0 root bridge in dmesg"; return 1; }
}
debian_reset() { # reboot (Linux tries the FADT's reset register, 0xcf9, first): yakvm ends as a reboot, status 0
    [ "$(cat "$OUT/debian-$1.rc" 2>/dev/null)" = 0 ] && grep -q 'the guest reset the machine' "$OUT/debian-$1.err" ||
        { echo "status $(cat "$OUT/debian-$1.rc" 2>/dev/null): $(tail -n 3 "$OUT/debian-$1.err")"; return 1; }
}
debian_s5() { # poweroff is ACPI S5: yakvm ends with status 0 and says so
    [ "$(cat "$OUT/debian-$1.rc" 2>/dev/null)" = 0 ] && grep -q 'the guest powered off (ACPI S5)' "$OUT/debian-$1.err" ||
        { echo "status $(cat "$OUT/debian-$1.rc" 2>/dev/null): $(tail -n 3 "$OUT/debian-$1.err")"; return 1; }
}

# Debian's kernel and Debian's modules with OUR initramfs (not Debian's initramfs-tools
# one: docs/virtio.md#debians-kernel): scripts/distro-kernel.sh adds the package's
# virtio_pci, virtio_blk and virtio_net modules and their dependencies to our initramfs,
# whose init (env/guest-init) loads them first.
DEBIAN_INITRD=debian/initramfs-debian-modules.cpio.gz
debian_staged() {
    [ -f $DEBIAN ] && [ -f $DEBIAN_INITRD ] || { echo "not staged: $(cat debian/FETCH-FAILED 2>/dev/null || echo 'make env')"; return 1; }
}
# Its root file system on a --drive (our ext4 image, linux/root.ext4, its /sbin/init
# env/disk-init), --smp 2: our init loads the modules, mounts /dev/vda and hands over to
# the disk's init, which writes a file, syncs and powers off; the image's file holds it.
# debian_root_on_drive [YAKVM ARGS...] (--hypervisor kvm: the same on KVM)
debian_root_on_drive() {
    debian_staged || return 1
    cp linux/root.ext4 /tmp/debian-root.img
    t0=$(now_cs)
    timeout -s KILL 300 yakvm run "$@" --kernel $DEBIAN --initrd $DEBIAN_INITRD --mem 256M --smp 2 --drive /tmp/debian-root.img \
        --append "yakvm.root=/dev/vda yakvm.disk=write panic=-1" < /dev/null > "$OUT/debian-root.raw" 2> "$OUT/debian-root.err"; rc=$?
    t=$(( $(now_cs) - t0 ))
    out=$(tr -d '\r' < "$OUT/debian-root.raw" | tee "$OUT/debian-root.out")
    echo "  Debian's kernel, root on --drive${1:+ $*}: start to power-off $((t / 100)).$(printf %02d $((t % 100))) s (status $rc)" >&3
    echo "$out" | grep -E '^(kernel|root): ' | sed 's/^/  | /' >&3
    [ $rc -eq 0 ] && grep -q 'the guest powered off (ACPI S5)' "$OUT/debian-root.err" ||
        { echo "status $rc: $(tail -n 3 "$OUT/debian-root.err") / $(echo "$out" | tail -c 400)"; return 1; }
    echo "$out" | grep -qE '^kernel: 6\.1\.[0-9]+-[0-9]+-cloud-amd64, virtio_blk live$' || { echo "$(echo "$out" | grep '^kernel:')"; return 1; }
    echo "$out" | grep -q '^root: /dev/vda / ext4 rw' || { echo "$(echo "$out" | grep -E '^root:|cannot')"; return 1; }
    echo "$out" | grep -q 'virtio_blk virtio[0-9]*: \[vda\] 32768 512-byte logical blocks' || { echo "no vda in the kernel log"; return 1; }
    echo "$out" | grep -qx 'WROTE' || { echo "no WROTE: $(echo "$out" | tail -c 300)"; return 1; }
    grep -q 'written-by-the-first-boot 32768 sectors' /tmp/debian-root.img || { echo "not in the image file"; return 1; }
    rm -f /tmp/debian-root.img
}
# Debian's kernel with DEBIAN'S OWN initramfs and root file system (issues 22 and 23):
# scripts/debian-root.sh debootstraps a bookworm root, installs the same kernel package in
# it with dpkg, whose postinst runs update-initramfs (initramfs-tools), and stages that
# initrd and an ext4 image of the root in shares/debian-root (a failed build fails these
# checks). One boot, --smp 2, the root on /dev/vda (read-only, from the share) and --net (a
# tap yakvm creates in the image, 169.254.81.1/24): the initramfs's udev loads virtio's
# modules, it mounts /dev/vda and runs the root's init (init=/sbin/yakvm-init,
# env/debian-init), which says what it sees, puts eth0 up with the address it is given on
# the command line (the root's iproute2), pings the image, waits for the image's ping and a
# line on the console, and powers off (busybox poweroff -f: ACPI S5).
# debian_initramfs_boot [YAKVM ARGS...] (--hypervisor kvm: the same on KVM)
DROOT=debian-root
debian_initramfs_boot() {
    out="$OUT/debian-initramfs.out" err="$OUT/debian-initramfs.err"
    rm -f "$out" "$err" "$OUT/debian-initramfs.rc" /tmp/debian-initramfs.in /tmp/debian-initramfs.ping
    [ -f $DEBIAN ] && [ -f $DROOT/initrd.img ] && [ -f $DROOT/root.ext4 ] ||
        { echo "not staged: $(cat debian/FETCH-FAILED $DROOT/FETCH-FAILED 2>/dev/null || echo 'make env')"; return 1; }
    mkfifo /tmp/debian-initramfs.in
    t0=$(now_cs)
    yakvm run "$@" --kernel $DEBIAN --initrd $DROOT/initrd.img --mem 512M --smp 2 --drive $DROOT/root.ext4,readonly=on \
        --net tap=yk10,ip=169.254.81.1,mask=255.255.255.0 \
        --append "root=/dev/vda ro init=/sbin/yakvm-init panic=-1 net.ifnames=0 yakvm.ip=169.254.81.2/24 yakvm.ping=169.254.81.1 yakvm.wait=line" \
        < /tmp/debian-initramfs.in > "$out" 2> "$err" &
    pid=$!
    exec 7> /tmp/debian-initramfs.in
    up=$(wait_for "$out" YAKVM-DEBIAN-ROOT-UP 2400 0.25 $pid) && wait_for "$out" YAKVM-DEBIAN-ROOT-READY 1200 0.05 $pid > /dev/null ||
        { kill $pid 2>/dev/null; exec 7>&-; echo "no init: $(tr -d '\r' < "$out" | tail -c 400) $(tail -n 3 "$err")"; return 1; }
    ping -c 3 -W 10 169.254.81.2 > /tmp/debian-initramfs.ping 2>&1; echo $? >> /tmp/debian-initramfs.ping
    printf 'image-pinged\n' >&7
    wait_bounded $pid 120; rc=$?
    t=$(now_cs)
    exec 7>&-
    rm -f /tmp/debian-initramfs.in
    echo $rc > "$OUT/debian-initramfs.rc"
    b=$(( up - t0 )) p=$(( t - t0 ))
    echo "  Debian's kernel and initramfs, root on /dev/vda, --net${1:+ $*}: start to its init $((b / 100)).$(printf %02d $((b % 100))) s, to power-off $((p / 100)).$(printf %02d $((p % 100))) s (status $rc)" >&3
    tr -d '\r' < "$out" | grep -E '^(kernel|root|os|run|dev|modules|cpus|net|guest ping): ' | sed 's/^/  | /' >&3
    [ $rc -eq 0 ] && grep -q 'the guest powered off (ACPI S5)' "$err" ||
        { echo "status $rc: $(tail -n 3 "$err") / $(tr -d '\r' < "$out" | tail -c 300)"; return 1; }
}
# debian_initramfs_line PATTERN: the output line that PATTERN (an extended regex, a whole line) matches.
debian_initramfs_line() { tr -d '\r' < "$OUT/debian-initramfs.out" | grep -xE "$1"; }
debian_initramfs_root() { # Debian's initramfs mounted /dev/vda (ext4, ro) and ran the root's init, on both CPUs
    o="$OUT/debian-initramfs.out"
    # initramfs-tools says so on the console (scripts/local, not quiet), before run-init.
    debian_initramfs_line 'Begin: Mounting root file system \.\.\. .*' > /dev/null ||
        { echo "no 'Begin: Mounting root file system' from initramfs-tools: $(tr -d '\r' < "$o" | grep -m3 -E '^(Begin|Loading)')"; return 1; }
    debian_initramfs_line 'Loading, please wait\.\.\.' > /dev/null || { echo "no 'Loading, please wait...' from initramfs-tools' init"; return 1; }
    debian_initramfs_line 'YAKVM-DEBIAN-ROOT-UP pid 1' > /dev/null || { echo "the root's init did not run as PID 1: $(debian_initramfs_line 'YAKVM-DEBIAN-ROOT-UP.*')"; return 1; }
    # initramfs-tools' /run (a tmpfs with /run/initramfs) and /dev (devtmpfs), moved to the root.
    for want in 'kernel: 6\.1\.[0-9]+-[0-9]+-cloud-amd64' 'root: /dev/vda / ext4 ro' 'os: Debian GNU/Linux 12 \(bookworm\)' \
        'run: tmpfs tmpfs, /run/initramfs' 'dev: udev devtmpfs' 'modules: virtio_pci virtio_blk virtio_net ' 'cpus: 0-1'; do
        debian_initramfs_line "$want" > /dev/null || { echo "$(debian_initramfs_line "${want%%:*}: .*")"; return 1; }
    done
}
debian_initramfs_net() { # eth0 (virtio_net) up with the address given; the guest pings the image, the image the guest
    debian_initramfs_line 'net: eth0 169\.254\.81\.2/24 virtio_net up' > /dev/null || { echo "$(debian_initramfs_line 'net: .*')"; return 1; }
    debian_initramfs_line 'guest ping: 0 3 packets transmitted, 3 received, 0% packet loss.*' > /dev/null || { echo "$(debian_initramfs_line 'guest ping: .*')"; return 1; }
    [ "$(tail -n 1 /tmp/debian-initramfs.ping)" = 0 ] && grep -q '3 packets received' /tmp/debian-initramfs.ping ||
        { echo "image ping: $(tail -n 3 /tmp/debian-initramfs.ping | tr '\n' ' ')"; return 1; }
    debian_initramfs_line 'answer: image-pinged' > /dev/null || { echo "no answer to the console line"; return 1; }
}

check kernel_bad_input kernel_bad_input
check multiboot_contract multiboot_contract
check multiboot_bad_input multiboot_bad_input
check pcboot_xv6s_pc_and_the_vga_mirror pcboot_contract
check multiboot2_contract multiboot2_contract
check linux_boots boot_linux
check linux_reaches_init boots_to_init
check linux_uname uname_r
check linux_cpuinfo_shows_yakvm cpuinfo
check linux_interrupts_timer_and_uart interrupts_count
check linux_sleep_2s_is_2s_of_host_time sleep_2s
check linux_reads_stdin_and_answers stdin_line_answered
check linux_poweroff_ends_yakvm powers_off
check linux_reboot_ends_yakvm reboot_linux
check linux_no_acpi_smp2_through_the_mp_table reboot_mp_table
check linux_acpi_tables_apic_facp_dsdt_mcfg linux_acpi_tables
check linux_pci_host_bridge linux_pci
check linux_smp2_both_cpus_work_user_apic linux_smp --user-apic
check linux_smp2_kernel_apic linux_smp --kernel-apic
check debian_smp2_boots debian_boot 2 reboot
check debian_smp2_all_cpus_online_through_the_madt debian_cpus 2
check debian_smp2_acpi_tables_apic_facp_dsdt_mcfg debian_tables 2
check debian_smp2_pci_host_bridge_and_ecam debian_pci 2
check debian_smp2_reboot_ends_yakvm_as_a_reboot debian_reset 2
check debian_smp4_boots debian_boot 4 poweroff
check debian_smp4_all_cpus_online_through_the_madt debian_cpus 4
check debian_smp4_acpi_tables_apic_facp_dsdt_mcfg debian_tables 4
check debian_smp4_pci_host_bridge_and_ecam debian_pci 4
check debian_smp4_poweroff_is_acpi_s5 debian_s5 4
check debian_modules_root_on_drive_smp2 debian_root_on_drive
check debian_initramfs_smp2_boots_and_powers_off debian_initramfs_boot
check debian_initramfs_smp2_mounts_vda_and_runs_its_init debian_initramfs_root
check debian_initramfs_net_eth0_up_and_pings debian_initramfs_net
# The same on KVM (`--hypervisor kvm`: the same emulator and devices over /dev/kvm;
# kvm_amd and yakvm both own EFER.SVME: one at a time, lib.sh).
if check kvm_loads_for_debian use_kvm; then
    check debian_modules_root_on_drive_smp2_on_kvm debian_root_on_drive --hypervisor kvm
    check debian_initramfs_smp2_boots_and_powers_off_on_kvm debian_initramfs_boot --hypervisor kvm
    check debian_initramfs_smp2_mounts_vda_and_runs_its_init_on_kvm debian_initramfs_root
    check debian_initramfs_net_eth0_up_and_pings_on_kvm debian_initramfs_net
    check yakvm_reloads_after_debian use_yakvm
else
    use_yakvm
fi
check dmesg_clean_linux dmesg_clean
