# Tests of the pc machine (interrupts, PIC, PIT, UART console, hostile guests), run inside
# the image by scripts/test.sh. Each guest reports through the UART; the figures printed
# start with two spaces.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
# Figures go straight to the console (`check` keeps a test's own output for its message).
exec 3>&1

# Hundredths of a second since boot (busybox date has no %N).
now_cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }

# 100 PIT ticks at 100 Hz in `sti; hlt` loops: about 1 s of host time, whatever the exits.
# (The time is the run's own, from --stats: the VM's setup takes most of a second too
# under QEMU's software SVM.)
timer_100hz() {
    out=$(yakvm run --machine pc --stats guests/pc_timer.bin 2>&1 < /dev/null); rc=$?
    ms=$(echo "$out" | sed -n 's/^time: \([0-9]*\)\.\([0-9]*\) s in the guest.*, \([0-9]*\)\.\([0-9]*\) s in the emulator.*/\1\2 \3\4/p' |
        awk '{ print $1 + $2 }')
    echo "  pc_timer: 100 ticks at 100 Hz took ${ms:-?} ms" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $out"; return 1; }
    echo "$out" | grep -qx 'ticks 100' || { echo "output: $out"; return 1; }
    echo "$out" | grep -qx 'ok pit counter moves' || { echo "output: $out"; return 1; }
    echo "$out" | grep -q '^interrupts by line: irq0 100$' || { echo "output: $out"; return 1; }
    # The 100th tick comes 1.0000015 s after programming.
    [ -n "$ms" ] && [ "$ms" -ge 1000 ] && [ "$ms" -le 1300 ] || { echo "took $ms ms, not about 1 s"; return 1; }
}

# Bytes piped on stdin arrive by receive interrupts and are echoed (uppercased) through
# the transmit ring, driven by THR-empty interrupts.
uart_echo() {
    out=$(printf 'hello\nquit\n' | yakvm run --machine pc guests/pc_uart.bin 2>&1); rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $out"; return 1; }
    [ "$(echo "$out" | head -n 2)" = "$(printf 'HELLO\nQUIT')" ] || { echo "output: $out"; return 1; }
    echo "$out" | grep -qE '^rx 11 tx-irqs [1-9][0-9]*$' || { echo "output: $out"; return 1; }
}

# --vga: console input is typed on the PS/2 keyboard: the guest's IRQ1 handler reads the
# scan codes (set 1) of what was typed, after the controller's self test and the
# keyboard's reset answered by polling. (Typed 2 s in: the guest reports a key that
# came before it looked.)
keyboard_irq1() {
    out=$( (sleep 2; printf 'aB\n') | yakvm run --machine pc --vga --timeout 60 guests/pc_kbd.bin 2>&1); rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $out"; return 1; }
    [ "$out" = "$(printf 'ok controller self test 0x55\nok keyboard reset 0xfa 0xaa\nkeys 1e 9e 2a 30 b0 aa 1c 9c\nok aB and Enter as set 1 scan codes, read by the IRQ1 handler')" ] ||
        { echo "output: $out"; return 1; }
}

# --ide: the guest reads and writes sectors by PIO, each transfer ending in IRQ14; the
# host file then holds what it wrote (and the rest as it was).
ide_pio() {
    img=/tmp/ide.img
    dd if=/dev/zero of=$img bs=512 count=64 2>/dev/null
    printf 'SECTOR-ONE' | dd of=$img bs=512 seek=1 conv=notrunc 2>/dev/null
    printf 'SECTOR-TWO' | dd of=$img bs=512 seek=2 conv=notrunc 2>/dev/null
    out=$(yakvm run --machine pc --ide $img --timeout 60 guests/pc_ide.bin 2>&1 < /dev/null); rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $out"; return 1; }
    [ "$(echo "$out" | grep -c '^ok ')" -eq 5 ] || { echo "output: $out"; return 1; }
    for n in 3 4; do
        got=$(dd if=$img bs=512 skip=$n count=1 2>/dev/null | tr -d '\000')
        [ "$got" = "yakvm-ide-write-$n" ] || { echo "sector $n of the host file: '$got'"; return 1; }
    done
    [ "$(dd if=$img bs=512 skip=1 count=1 2>/dev/null | tr -d '\000')" = SECTOR-ONE ] || { echo "sector 1 changed"; return 1; }
    [ "$(stat -c %s $img)" -eq 32768 ] || { echo "the file's size changed"; return 1; }
    out=$(yakvm run --machine pc --ide $img --ide $img --ide $img guests/pc_ide.bin 2>&1 < /dev/null) &&
        { echo "three --ide accepted"; return 1; }
    echo "$out" | grep -q 'an IDE channel has two drives' || { echo "three --ide: $out"; return 1; }
    out=$(yakvm run --ide $img guests/hello.bin 2>&1 < /dev/null) && { echo "--ide on the seed machine accepted"; return 1; }
    echo "$out" | grep -q 'the IDE channel is a pc machine' || { echo "--ide on seed: $out"; return 1; }
    rm -f $img
}

# Timer interrupts while the guest does MMIO in a tight loop: the guest's handler count
# equals the interrupts the emulator injected (none lost in an exit, none doubled).
ticks_during_mmio() {
    yakvm run --machine pc --stats guests/pc_mmio_ticks.bin > "$OUT/pc_mmio_ticks.out" 2> "$OUT/pc_mmio_ticks.err" < /dev/null; rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $(cat "$OUT/pc_mmio_ticks.out" "$OUT/pc_mmio_ticks.err")"; return 1; }
    guest=$(sed -n 's/^ticks \([0-9]*\) mmio \([0-9]*\)$/\1/p' "$OUT/pc_mmio_ticks.out")
    mmio=$(sed -n 's/^ticks \([0-9]*\) mmio \([0-9]*\)$/\2/p' "$OUT/pc_mmio_ticks.out")
    injected=$(sed -n 's/^interrupts by line:.*irq0 \([0-9]*\).*/\1/p' "$OUT/pc_mmio_ticks.err")
    reinjected=$(sed -n 's/^interrupts: [0-9]* injected, \([0-9]*\) re-injected.*/\1/p' "$OUT/pc_mmio_ticks.err")
    echo "  pc_mmio_ticks: $guest ticks counted by the guest, ${injected:-?} injected, ${reinjected:-?} re-injected, $mmio MMIO round trips" >&3
    [ -n "$guest" ] && [ "$guest" -ge 300 ] && [ "$guest" = "$injected" ] ||
        { echo "guest counted '$guest', emulator injected '$injected': $(cat "$OUT/pc_mmio_ticks.out")"; return 1; }
}

# hostile CMD: the guest misbehaves forever (see guests/pc_hostile.bin); Ctrl-C (SIGINT)
# still ends the run at once, with the signal's status, and the host stays responsive.
hostile() {
    printf '%s' "$1" | yakvm run --machine pc guests/pc_hostile.bin > "$OUT/hostile-$1.out" 2>&1 &
    pid=$!
    # Once the guest runs (it says so first)...
    n=0; while [ $n -lt 600 ] && ! grep -q "hostile $1" "$OUT/hostile-$1.out"; do sleep 0.1; n=$((n + 1)); done
    grep -q "hostile $1" "$OUT/hostile-$1.out" || { kill -9 $pid; wait $pid; echo "the guest did not start in 60 s: $(head -c 300 "$OUT/hostile-$1.out")"; return 1; }
    # ...the other host CPU does real work meanwhile: 50000 shell iterations (at most 60 s).
    t0=$(now_cs)
    i=0; while [ $i -lt 50000 ]; do
        i=$((i + 1))
        [ $((i % 5000)) -ne 0 ] || [ $(( $(now_cs) - t0 )) -lt 6000 ] || break
    done
    busy=$(( $(now_cs) - t0 ))
    [ "$busy" -lt 100 ] && sleep 1
    kill -INT $pid
    t0=$(now_cs)
    # It must end: after 10 s say what its threads are doing, and kill it.
    n=0; while kill -0 $pid 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    if kill -0 $pid 2>/dev/null; then
        threads=$(for t in /proc/$pid/task/*; do echo "[$(grep State $t/status | tr -d '\t') $(head -n 4 $t/stack | tr '\n' ' ')]"; done)
        kill -9 $pid; wait $pid
        echo "still running 10 s after SIGINT (loop of $i iterations took ${busy}0 ms): $threads"; return 1
    fi
    wait $pid; rc=$?
    stop=$(( $(now_cs) - t0 ))
    echo "  pc_hostile $1: the host's loop ($i iterations) took ${busy}0 ms meanwhile; Ctrl-C ended the run in ${stop}0 ms" >&3
    [ $rc -eq 130 ] || { echo "status $rc (want 130): $(head -c 300 "$OUT/hostile-$1.out")"; return 1; }
    [ "$stop" -le 100 ] || { echo "SIGINT took ${stop}0 ms"; return 1; }
}
fastest_pit_never_eoi() { hostile p; }
fast_pit_with_eoi() { hostile e; }
uart_flood() { hostile u; }

# HLT with interrupts disabled ends the run (status 0), with a message.
halt_with_if_clear() {
    out=$(printf h | yakvm run --machine pc guests/pc_hostile.bin 2>&1); rc=$?
    [ $rc -eq 0 ] && echo "$out" | grep -q 'halted with interrupts disabled' || { echo "status $rc: $out"; return 1; }
}

# Waiting for an interrupt nothing can send (no timer, input ended): a clear error.
waits_forever() {
    out=$(printf i | yakvm run --machine pc --timeout 30 guests/pc_hostile.bin 2>&1); rc=$?
    [ $rc -eq 1 ] && echo "$out" | grep -q 'nothing can send' || { echo "status $rc: $out"; return 1; }
}

# ACPI as an OS finds it (guests/pc_acpi.bin, with N vCPUs): the RSDP by a scan, the
# XSDT, FADT, MADT (N local APICs) and DSDT, the PM timer from the FADT advancing at about
# 3.58 MHz, then \_S5's SLP_TYP with SLP_EN to PM1a_CNT: yakvm ends with status 0 and says
# the guest powered off. The PM block is one range of whole accesses: the guest's four
# dword timer reads and one word write are 5 accesses (byte by byte they would be 18).
acpi_poweroff() {
    out=$(yakvm run --machine pc --smp "$1" --stats --timeout 120 guests/pc_acpi.bin 2>&1 < /dev/null); rc=$?
    echo "  pc_acpi --smp $1: $(echo "$out" | grep -E '^(pm timer ticks per pit tick|madt local apics) ' | tr '\n' ' ')" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $out"; return 1; }
    echo "$out" | grep -q '^FAIL' && { echo "output: $out"; return 1; }
    for line in 'ok rsdp found by the scan, its checksum right' 'rsdp at 917504' 'ok xsdt checksum' \
        'ok fadt through the xsdt, checksum' 'ok madt through the xsdt, checksum' 'ok dsdt through the fadt, checksum' \
        "madt local apics $1" 'ok madt local apics = mp table processors' 'pm timer port 1544' 'pm1a control port 1540' \
        'ok pm timer advances' 'ok pm timer at about 3.58 MHz against the pit' 'ok dsdt: \_S5 package found' \
        's5 slp_typ 5' 'powering off' 'yakvm: the guest powered off (ACPI S5)'; do
        echo "$out" | grep -qxF "$line" || { echo "no line '$line' in: $out"; return 1; }
    done
    echo "$out" | grep -qE '^  port acpi pm \(0x600-0x60b\) +5$' || { echo "accesses of the PM block: $out"; return 1; }
}

# PCI as an OS probes it, then attacked (guests/pc_pci.bin): only the host bridge on bus 0,
# ECAM (found through the MCFG) and 0xcf8/0xcfc giving the same bytes, 20 000 random
# configuration writes of random widths through both, the host bridge unchanged after
# them and the machine still running. Both ways in are counted by --stats.
pci_probe_and_attack() {
    out=$(yakvm run --machine pc --stats --timeout 300 guests/pc_pci.bin 2>&1 < /dev/null); rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -E '^(FAIL|yakvm)' | head -n 5)"; return 1; }
    echo "$out" | grep -q '^FAIL' && { echo "$(echo "$out" | grep '^FAIL')"; return 1; }
    [ "$(echo "$out" | grep -c '^ok ')" -eq 13 ] || { echo "$(echo "$out" | grep -c '^ok ') checks: $(echo "$out" | grep -v '^ok' | head -n 5)"; return 1; }
    ecam=$(echo "$out" | awk '$1 == "mmio" && $2 == "pci" && $3 == "ecam" { print $NF }')
    [ "${ecam:-0}" -gt 10000 ] || { echo "ECAM accesses: '$ecam'"; return 1; }
    echo "  pc_pci: $ecam ECAM accesses, $(echo "$out" | awk '$2 == "pci" && $3 == "config" && $4 == "data" { print $NF }') through 0xcfc" >&3
}

# PCI interrupts end to end and hostile BARs (guests/pc_pcidev.bin with --pci-testdev):
# INTx through the I/O APIC as the _PRT says (Interrupt Disable, Interrupt Status, two
# functions wired-OR on GSI 22), MSI and MSI-X (masks, pending bits), then BARs moved over
# RAM, the APICs and each other and 20 000 random configuration writes: nothing shadowed,
# the refusals counted by --stats.
pci_interrupts_and_hostile_bars() {
    out=$(yakvm run --machine pc --pci-testdev --stats --timeout 300 guests/pc_pcidev.bin 2>&1 < /dev/null); rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -E '^(FAIL|yakvm)' | head -n 5)"; return 1; }
    n=$(echo "$out" | grep -c '^ok ')
    [ "$n" -eq 30 ] || { echo "$n checks: $(echo "$out" | grep -v '^ok' | head -n 5)"; return 1; }
    refused=$(echo "$out" | sed -n 's/^pci bars: moved \([0-9]*\), refused \([0-9]*\)$/\2/p')
    [ "${refused:-0}" -ge 4 ] || { echo "BARs refused: '$refused'"; return 1; }
    echo "  pc_pcidev: $(echo "$out" | grep '^pci bars')" >&3
}

# LVT LINT0 masked keeps the PIC's interrupts from vCPU 0 and unmasked lets them through
# again (guests/lint0.bin), with the kernel's APIC (the default: the module's LINT0, which
# it reports on every return from RUN, decides) and the emulator's (--user-apic).
lint0() {
    out=$(yakvm run --machine pc --timeout 60 "$@" guests/lint0.bin 2>&1 < /dev/null); rc=$?
    got=$(echo "$out" | tr -d '\r' | grep '^lint0')
    want=$(printf 'lint0: ticks with LINT0 unmasked\nlint0: no tick with LINT0 masked\nlint0 ok: ticks again with LINT0 unmasked')
    [ $rc -eq 0 ] && [ "$got" = "$want" ] || { echo "status $rc: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; return 1; }
}

check pc_timer_100hz timer_100hz
check pc_acpi_poweroff acpi_poweroff 1
check pc_acpi_poweroff_smp2 acpi_poweroff 2
check pc_pci_probe_ecam_and_hostile_writes pci_probe_and_attack
check pc_pci_interrupts_and_hostile_bars pci_interrupts_and_hostile_bars
check pc_uart_echo_by_interrupts uart_echo
check pc_keyboard_scan_codes_by_irq1 keyboard_irq1
check pc_ide_pio_sectors_by_irq14 ide_pio
check pc_ticks_during_mmio_exactly_once ticks_during_mmio
check pc_hostile_fastest_pit_never_eoi fastest_pit_never_eoi
check pc_hostile_fast_pit fast_pit_with_eoi
check pc_hostile_uart_flood uart_flood
check pc_halt_with_interrupts_disabled halt_with_if_clear
check pc_wait_for_an_interrupt_that_cannot_come waits_forever
check pc_lint0_masks_the_pic_user_apic lint0 --user-apic
check pc_lint0_masks_the_pic_kernel_apic lint0 --kernel-apic
check dmesg_clean_pc dmesg_clean
