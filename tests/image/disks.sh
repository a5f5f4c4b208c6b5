# virtio disks (`--drive`, docs/virtio.md): our Linux with its root file system on a
# virtio-blk disk (build/guest-root.ext4, shares/linux/root.ext4), run by scripts/test.sh's
# `disks` boot. The disk images live in the image's /tmp (its RAM), copied fresh here; the
# host of the guest is the image, so "the host file" is that copy.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
exec 3>&1

KERNEL=linux/bzImage
INITRD=linux/initramfs.cpio.gz
ROOT=/tmp/root.img
now_cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }

# boot NAME SECS ARGS...: our kernel with ARGS (drives, --append ...), stdin empty,
# stopped after SECS; output without CRs in $OUT/NAME.out, stderr in $OUT/NAME.err, rc.
boot() {
    name=$1 secs=$2
    shift 2
    t0=$(now_cs)
    timeout -s KILL "$secs" yakvm run --kernel $KERNEL --mem 128M --stats "$@" < /dev/null > "$OUT/$name.raw" 2> "$OUT/$name.err"
    rc=$?
    t=$(( $(now_cs) - t0 ))
    tr -d '\r' < "$OUT/$name.raw" > "$OUT/$name.out"
    echo "  $name: status $rc after $((t / 100)).$(printf %02d $((t % 100))) s" >&3
}
powered_off() { # NAME: yakvm ended by the guest's ACPI S5, status 0
    [ "$rc" -eq 0 ] && grep -q 'the guest powered off (ACPI S5)' "$OUT/$1.err" ||
        { echo "status $rc: $(tail -n 3 "$OUT/$1.err") / $(tail -c 600 "$OUT/$1.out")"; return 1; }
}
pattern() { yes yakvm-durable-0123456789abcdef | head -c 1048576; }

# 1. Root on /dev/vda (the kernel mounts it): a file written and synced, power-off; the
# image file holds it.
root_write() {
    cp linux/root.ext4 $ROOT
    boot disk-write 300 --drive $ROOT --append "root=/dev/vda rw panic=-1 yakvm.disk=write"
    powered_off disk-write || return 1
    grep -q '^root: /dev/root / ext4 rw' "$OUT/disk-write.out" || { echo "root: $(grep '^root:' "$OUT/disk-write.out")"; return 1; }
    grep -q '^WROTE' "$OUT/disk-write.out" || { echo "no WROTE: $(tail -c 300 "$OUT/disk-write.out")"; return 1; }
    grep -q 'virtio_blk virtio0: \[vda\] 32768 512-byte logical blocks' "$OUT/disk-write.out" ||
        { echo "no vda in the kernel log: $(grep -i virtio "$OUT/disk-write.out" | head -n 3)"; return 1; }
}
root_file_on_host() { grep -q 'written-by-the-first-boot 32768 sectors' $ROOT || { echo "not in $ROOT"; return 1; }; }
# 2. The second boot sees it: through our initramfs this time, which mounts the disk
# (yakvm.root=/dev/vda) and hands over to its init.
root_second_boot() {
    boot disk-read 300 --initrd $INITRD --drive $ROOT --append "yakvm.root=/dev/vda yakvm.disk=read"
    powered_off disk-read || return 1
    grep -qx 'READ: written-by-the-first-boot 32768 sectors' "$OUT/disk-read.out" || { echo "$(grep -E '^(READ|root)' "$OUT/disk-read.out")"; return 1; }
}
# 3. Durability: 1 MiB written to /dev/vdb and fsync'ed ("synced"), yakvm SIGKILLed at
# once; the file holds every byte.
durable() {
    dd if=/dev/zero of=/tmp/durable.img bs=1M count=2 2>/dev/null
    rm -f "$OUT/disk-durable.raw"
    yakvm run --kernel $KERNEL --mem 128M --drive $ROOT --drive /tmp/durable.img --append "root=/dev/vda rw panic=-1 yakvm.disk=durable" \
        < /dev/null > "$OUT/disk-durable.raw" 2> "$OUT/disk-durable.err" &
    pid=$!
    t=0
    while ! grep -q '^synced' "$OUT/disk-durable.raw" 2>/dev/null; do
        t=$((t + 1)); [ $t -lt 3000 ] || { kill -KILL $pid; echo "no 'synced': $(tail -c 300 "$OUT/disk-durable.raw")"; return 1; }
        sleep 0.1
    done
    kill -KILL $pid; wait $pid
    want=$(pattern | md5sum | cut -d' ' -f1)
    got=$(head -c 1048576 /tmp/durable.img | md5sum | cut -d' ' -f1)
    [ "$want" = "$got" ] || { echo "the file's first MiB is not the pattern ($got, want $want)"; return 1; }
}
# 4. readonly=on: writes fail in the guest (the device and a file on it); the file's bytes
# are unchanged.
readonly_drive() {
    cp linux/root.ext4 /tmp/ro.img
    before=$(md5sum < /tmp/ro.img)
    boot disk-ro 300 --drive $ROOT --drive /tmp/ro.img,readonly=on --append "root=/dev/vda rw panic=-1 yakvm.disk=readonly"
    powered_off disk-ro || return 1
    out=$(cat "$OUT/disk-ro.out")
    echo "$out" | grep -qx 'vdb ro: 1' || { echo "$(echo "$out" | grep '^vdb ro')"; return 1; }
    echo "$out" | grep -qx 'RO-DEV-WRITE-FAILED' || { echo "a write to /dev/vdb did not fail"; return 1; }
    echo "$out" | grep -qx 'RO-FILE-WRITE-FAILED' || { echo "a file write on vdb did not fail"; return 1; }
    echo "$out" | grep -q '^ro read: init' || { echo "vdb not readable: $(echo "$out" | grep '^ro read')"; return 1; }
    [ "$(md5sum < /tmp/ro.img)" = "$before" ] || { echo "the read-only file changed"; return 1; }
}
# 5. Two more drives: MIB MiB copied from vdb to vdc in the guest; the same bytes on both
# sides. On two vCPUs (the interrupts are MSI-X messages to whichever CPU Linux chose):
# 100 MiB (the issue's size); the variants that check the notification and interrupt
# paths copy 8 MiB.
# two_drives_copy NAME MIB [YAKVM ARGS...]
two_drives_copy() {
    name=$1 mib=$2; shift 2
    yes yakvm-copy-source-$name | head -c $((mib * 1048576)) > /tmp/src.img
    dd if=/dev/zero of=/tmp/dst.img bs=1M count=$mib 2>/dev/null
    boot $name 400 "$@" --drive $ROOT --drive /tmp/src.img --drive /tmp/dst.img --append "root=/dev/vda rw panic=-1 yakvm.disk=copy"
    powered_off $name || return 1
    a=$(md5sum < /tmp/src.img | cut -d' ' -f1); b=$(md5sum < /tmp/dst.img | cut -d' ' -f1)
    [ "$a" = "$b" ] || { echo "files differ: $a $b"; return 1; }
    grep -qx "COPY vdb $a vdc $a" "$OUT/$name.out" || { echo "guest: $(grep '^COPY' "$OUT/$name.out"), host $a"; return 1; }
    rm -f /tmp/src.img /tmp/dst.img
}
# The copy's queue notifications: through ioeventfds (none reached yakvm as an MMIO exit,
# the module counted at least one signal per two requests of the copy's drives), or with
# --no-ioeventfd as exits (no ioeventfd registered or signalled).
# notify_path NAME ioeventfd|exits [kvm]
notify_path() {
    err="$OUT/$1.err"
    lines=$(grep '^virtio-blk 00:0[56]' "$err")
    [ "$(echo "$lines" | wc -l)" -eq 2 ] || { echo "no vdb/vdc stats: $(grep '^virtio-blk' "$err")"; return 1; }
    requests=$(echo "$lines" | sed -n 's/.*: \([0-9]*\) requests.*/\1/p' | awk '{s+=$1} END {print s+0}')
    by_exit=$(echo "$lines" | sed -n 's/.* \([0-9]*\) notifications by exit.*/\1/p' | awk '{s+=$1} END {print s+0}')
    registered=$(echo "$lines" | sed -n 's/.* \([0-9]*\) ioeventfd registrations.*/\1/p' | awk '{s+=$1} END {print s+0}')
    signals=$(awk '$1 == "ioeventfd" {s+=$2} END {print s+0}' "$err")
    echo "  $1: $requests requests, $by_exit notifications by exit, $registered registrations, $signals ioeventfd signals (module)" >&3
    case $2 in
    ioeventfd)
        [ "$by_exit" -eq 0 ] && [ "$registered" -ge 2 ] || { echo "by exit $by_exit, registered $registered"; return 1; }
        # KVM does not count its ioeventfd signals for us.
        [ "$3" = kvm ] || [ $((signals * 2)) -ge "$requests" ] || { echo "$signals ioeventfd signals for $requests requests"; return 1; } ;;
    exits)
        [ "$by_exit" -gt 0 ] && [ $((by_exit * 2)) -ge "$requests" ] && [ "$registered" -eq 0 ] && [ "$signals" -eq 0 ] ||
            { echo "by exit $by_exit for $requests requests, registered $registered, signals $signals"; return 1; } ;;
    esac
}
# The copy's interrupts with the kernel APICs: every one through an irqfd (the disk's
# thread straight into the module's APICs), each drive's vector bound once (Linux sets
# its MSI-X table once); with the emulator's APICs none.
# irq_path NAME irqfd|emulator
irq_path() {
    lines=$(grep '^virtio-blk 00:0[56]' "$OUT/$1.err")
    [ "$(echo "$lines" | wc -l)" -eq 2 ] || { echo "no vdb/vdc stats: $(grep '^virtio-blk' "$OUT/$1.err")"; return 1; }
    sum() { echo "$lines" | sed -n "s/$1/\1/p" | awk '{s+=$1} END {print s+0}'; }
    interrupts=$(sum '.* \([0-9]*\) interrupts (.*')
    by_irqfd=$(sum '.* interrupts (\([0-9]*\) by irqfd.*')
    bindings=$(sum '.* by irqfd, \([0-9]*\) bindings).*')
    echo "  $1: $interrupts interrupts, $by_irqfd by irqfd, $bindings bindings" >&3
    case $2 in
    irqfd) [ "$interrupts" -gt 0 ] && [ "$by_irqfd" -eq "$interrupts" ] && [ "$bindings" -ge 2 ] && [ "$bindings" -le 4 ] ||
        { echo "$interrupts interrupts, $by_irqfd by irqfd, $bindings bindings"; return 1; } ;;
    emulator) [ "$interrupts" -gt 0 ] && [ "$by_irqfd" -eq 0 ] && [ "$bindings" -eq 0 ] ||
        { echo "$interrupts interrupts, $by_irqfd by irqfd, $bindings bindings"; return 1; } ;;
    esac
}
# A hostile driver (guests/virtio_hostile.bin, bare metal): it finds the function by
# scanning bus 0, sets it up through the modern transport and posts malformed chains
# (a loop, a read-only status, an indirect table inside another, a chain over 4 GiB: each
# DEVICE_NEEDS_RESET; buffers past RAM or in the BAR, a 2 GiB buffer: each IOERR) and a
# notification before DRIVER_OK; its memory outside the chains' buffers keeps its
# pattern, a good read works after all of them; the file is unchanged.
# hostile_driver NAME [YAKVM ARGS...]
hostile_driver() {
    name=$1; shift
    yes yakvm-virtio-hostile | head -c 1048576 > /tmp/hostile.img
    before=$(md5sum < /tmp/hostile.img)
    timeout -s KILL 120 yakvm run --machine pc --mem 64M --stats "$@" --drive /tmp/hostile.img guests/virtio_hostile.bin \
        < /dev/null > "$OUT/$name.out" 2> "$OUT/$name.err"
    rc=$?
    n=$(grep -c '^ok ' "$OUT/$name.out")
    stats=$(grep '^virtio-blk' "$OUT/$name.err")
    echo "  $name: $n checks passed; $stats" >&3
    [ $rc -eq 0 ] && [ "$n" -eq 15 ] || { echo "status $rc, $n ok: $(grep -E '^(FAIL|  )' "$OUT/$name.out" | head -n 3) $(tail -n 2 "$OUT/$name.err")"; return 1; }
    echo "$stats" | grep -q ' 4 errors, 4 broken chains)' || { echo "counters: $stats"; return 1; }
    [ "$(md5sum < /tmp/hostile.img)" = "$before" ] || { echo "the file changed"; return 1; }
}
# A second yakvm cannot take a drive the first one holds.
locked_drive() {
    rm -f /tmp/lock.in; mkfifo /tmp/lock.in
    yakvm run --kernel $KERNEL --mem 128M --drive $ROOT --append "root=/dev/vda rw panic=-1" < /tmp/lock.in > "$OUT/disk-lock.out" 2>&1 &
    pid=$!
    exec 7> /tmp/lock.in
    sleep 1
    msg=$(yakvm run --kernel $KERNEL --drive $ROOT 2>&1 < /dev/null); rc2=$?
    # The first one ends by its shell's poweroff (typed once the shell is up: Linux's
    # 8250 driver drops what comes before), or by SIGKILL after two minutes.
    ( sleep 120; kill -KILL $pid ) 2>/dev/null & killer=$!
    t=0
    while ! grep -q '/ # ' "$OUT/disk-lock.out" && [ $t -lt 600 ]; do sleep 0.2; t=$((t + 1)); done
    printf 'poweroff -f\n' >&7
    wait $pid; kill $killer 2>/dev/null
    exec 7>&-
    [ $rc2 -ne 0 ] && echo "$msg" | grep -q "in use by another yakvm" || { echo "status $rc2: $msg"; return 1; }
}

check disk_root_on_vda_write_and_poweroff root_write
check disk_root_file_in_the_host_image root_file_on_host
check disk_second_boot_through_the_initramfs_sees_it root_second_boot
check disk_fsync_survives_sigkill durable
check disk_readonly_refuses_writes_file_unchanged readonly_drive
check disk_two_drives_copy_100mib_smp2 two_drives_copy disk-copy 100 --smp 2
check disk_notifications_through_ioeventfds notify_path disk-copy ioeventfd
check disk_copy_without_ioeventfds two_drives_copy disk-copy-exits 8 --no-ioeventfd
check disk_no_ioeventfd_notifications_exit notify_path disk-copy-exits exits
check disk_interrupts_through_irqfds irq_path disk-copy irqfd
check disk_two_drives_copy_user_apic two_drives_copy disk-copy-uapic 8 --smp 2 --user-apic
check disk_interrupts_with_the_user_apic_through_the_emulator irq_path disk-copy-uapic emulator
check disk_locked_by_another_yakvm locked_drive
check disk_hostile_driver_malformed_chains hostile_driver virtio-hostile
check disk_hostile_driver_user_apic hostile_driver virtio-hostile-uapic --user-apic
grep '^virtio-blk' "$OUT/disk-copy.err" | sed 's/^/  | /'
# The same device on KVM (`--hypervisor kvm`: the same emulator, KVM's exits).
if check kvm_loads_for_disks use_kvm; then
    check disk_two_drives_copy_8mib_on_kvm_user_apic two_drives_copy disk-copy-kvm 8 --hypervisor kvm --user-apic
    check disk_notifications_through_ioeventfds_on_kvm notify_path disk-copy-kvm ioeventfd kvm
    check disk_hostile_driver_malformed_chains_on_kvm hostile_driver virtio-hostile-kvm --hypervisor kvm
    # KVM's split irqchip (the default, --kernel-apic): the drives' interrupts through KVM_IRQFD.
    check disk_two_drives_copy_kernel_apic_on_kvm two_drives_copy disk-copy-kvm-kapic 8 --hypervisor kvm --smp 2 --kernel-apic
    check disk_interrupts_through_irqfds_on_kvm irq_path disk-copy-kvm-kapic irqfd
    check yakvm_reloads_after_disks use_yakvm
else
    use_yakvm
fi
check dmesg_clean_disks dmesg_clean
