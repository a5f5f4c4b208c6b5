# virtio-net and virtio-rng (`--net`, `--rng`, docs/net.md): our Linux on a tap that yakvm
# creates in the image (yk0, 169.254.77.1/24; the guest is 169.254.77.2; then yk2 with MTU
# 9000 on 169.254.78.0/24), run by scripts/test.sh's `net` boot. QEMU has no network device: everything stays in the image.
# The guest's side is env/guest-net (/bin/yakvm-net in its initramfs).
. /mnt/shares/tests/lib.sh
cd /mnt/shares

KERNEL=linux/bzImage
INITRD=linux/initramfs.cpio.gz
MIB=${NET_MIB:-64}
now_cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }
secs() { t=$(( $(now_cs) - $1 )); echo "$((t / 100)).$(printf %02d $((t % 100)))"; }

# wait_for FILE PATTERN TENTHS: until FILE has a line matching PATTERN.
wait_for() {
    t=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        t=$((t + 1)); [ $t -lt "$3" ] || return 1
        sleep 0.1
    done
}

# exchange NAME TAP SUBNET MTU MIB [HOLD]: the whole exchange on tap TAP (SUBNET.1, the guest
# SUBNET.2) with MTU, MIB MiB each way; the guest's output in $OUT/NAME.out, yakvm's stderr
# in $OUT/NAME.err, the image's side in /tmp/NAME.*; each check below reads what it left.
# $NETOPT is added to the --net option (",vhost=on"), $YFLAGS to yakvm's flags. Right after
# the image's send, the CPU time of yakvm's vhost thread (vhost-PID) goes to /tmp/NAME.vhost.
NETOPT= YFLAGS=
exchange() {
    N=$1 TAP=$2 HOST=$3.1 GUEST=$3.2 MTU=$4 MIB=$5 HOLD=${6:-}
    head -c $((MIB * 1048576)) /dev/urandom > /tmp/to-guest
    rm -f /tmp/from-guest /tmp/hold; mkfifo /tmp/hold
    # The image's receiver, before the guest exists (stdin a FIFO that never ends: see
    # env/guest-net).
    nc -l -p 5002 <> /tmp/hold > /tmp/from-guest 2>/dev/null & nc_pid=$!
    t0=$(now_cs)
    yakvm run $YFLAGS --kernel $KERNEL --initrd $INITRD --mem 512M --stats --rng \
        --net tap=$TAP,ip=$HOST,mask=255.255.255.0,mtu=$MTU,mac=52:54:00:12:34:56$NETOPT --append "yakvm.net=$GUEST,$HOST,$MIB,$MTU${HOLD:+,$HOLD}" \
        < /dev/null > "$OUT/$N.raw" 2> "$OUT/$N.err" & pid=$!
    # (Its output away from check's pipe: a sleep left holding it would hold check.)
    ( sleep 400; kill -KILL $pid ) > /dev/null 2>&1 & killer=$!
    if ! wait_for "$OUT/$N.raw" '^NET-READY' 3000; then
        kill -KILL $pid; kill $nc_pid $killer 2>/dev/null
        echo "no NET-READY: $(tr -d '\r' < "$OUT/$N.raw" | tail -n 5 | tr '\n' ' ') $(tail -n 3 "$OUT/$N.err")"; return 1
    fi
    echo "  $N: guest ready after $(secs $t0) s" >&3
    ip -o link show $TAP > /tmp/$N.link 2>&1
    ip -o addr show $TAP > /tmp/$N.addr 2>&1
    # Echo requests that fill the MTU (28 bytes of IPv4 and ICMP headers): unfragmented.
    ping -c 3 -W 10 -s $((MTU - 28)) $GUEST > /tmp/$N.ping 2>&1; echo "image ping: $?" > /tmp/$N.ping.rc
    # A second yakvm on the same tap: refused at once.
    yakvm run --kernel $KERNEL --net tap=$TAP < /dev/null > /dev/null 2> /tmp/$N.busy.err; echo $? > /tmp/$N.busy.rc
    t1=$(now_cs)
    nc $GUEST 5001 < /tmp/to-guest
    echo "  $N: $MIB MiB image -> guest in $(secs $t1) s" >&3
    vhost_ticks $pid > /tmp/$N.vhost
    t1=$(now_cs)
    wait $pid; rc=$?
    kill $killer 2>/dev/null
    wait $nc_pid
    echo "  $N: $MIB MiB guest -> image and power-off in $(secs $t1) s (status $rc, whole run $(secs $t0) s)" >&3
    tr -d '\r' < "$OUT/$N.raw" > "$OUT/$N.out"
    cs=$(sed -n 's/^SEND-CS //p' "$OUT/$N.out")
    [ -z "$cs" ] || echo "  $N: $MIB MiB guest -> image in $((cs / 100)).$(printf %02d $((cs % 100))) s (the guest's clock)" >&3
    md5sum < /tmp/to-guest | cut -d' ' -f1 > /tmp/$N.to-guest.md5
    md5sum < /tmp/from-guest | cut -d' ' -f1 > /tmp/$N.from-guest.md5
    wc -c < /tmp/from-guest > /tmp/$N.from-guest.len
    [ "$rc" -eq 0 ] && grep -q 'the guest powered off (ACPI S5)' "$OUT/$N.err" ||
        { echo "status $rc: $(tail -n 3 "$OUT/$N.err") / $(tail -c 400 "$OUT/$N.out")"; return 1; }
    grep -qx 'NET-END' "$OUT/$N.out" || { echo "no NET-END: $(tail -c 300 "$OUT/$N.out")"; return 1; }
}

# vhost_ticks PID: "NAME TICKS" of PID's vhost thread (user + system clock ticks), or nothing.
vhost_ticks() {
    for t in /proc/$1/task/*; do
        case $(cat $t/comm 2>/dev/null) in
            vhost-*) awk '{ print $2, $14 + $15 }' $t/stat; return ;;
        esac
    done
}

rng_virtio() {
    grep -qx 'rng current: virtio_rng.0' "$OUT/net.out" || { echo "$(grep '^rng current' "$OUT/net.out")"; return 1; }
    grep -qx 'rng bytes: 1048576' "$OUT/net.out" || { echo "$(grep '^rng bytes' "$OUT/net.out")"; return 1; }
}
# 1 MiB of /dev/hwrng: incompressible (gzip keeps more than 99%) and, in its first 4096
# bytes, at least 240 of the 256 byte values (a uniform source shows ~255).
rng_random() {
    z=$(sed -n 's/^rng gzip: //p' "$OUT/net.out"); d=$(sed -n 's/^rng distinct in 4096: //p' "$OUT/net.out")
    echo "  net: 1 MiB of /dev/hwrng gzips to $z bytes, $d distinct values in its first 4096" >&3
    [ -n "$z" ] && [ "$z" -gt 1038090 ] && [ -n "$d" ] && [ "$d" -ge 240 ] || { echo "gzip $z, distinct $d"; return 1; }
    grep -q '^virtio-rng .*: [0-9]* requests, [0-9]* B given' "$OUT/net.err" || { echo "no rng stats: $(grep virtio-rng "$OUT/net.err")"; return 1; }
}
# tap_configured NAME TAP SUBNET MTU
tap_configured() {
    grep -q "$2: <[^>]*UP[^>]*> mtu $4 " /tmp/$1.link && grep -q "inet $3.1/24" /tmp/$1.addr || { echo "$(cat /tmp/$1.link /tmp/$1.addr)"; return 1; }
    mac=$(sed -n "s/^eth0: mtu $4 mac //p" "$OUT/$1.out")
    case $mac in 52:54:00:*) ;; *) echo "guest eth0: $(grep '^eth0' "$OUT/$1.out")"; return 1 ;; esac
}
image_pings_guest() { grep -qx 'image ping: 0' /tmp/$1.ping.rc && grep -q '3 packets received' /tmp/$1.ping || { tail -n 3 /tmp/$1.ping; return 1; }; }
guest_pings_image() { grep -qx 'guest ping: ok' "$OUT/$1.out" || { grep '^guest ping' "$OUT/$1.out"; return 1; }; }
tap_busy() { # NAME TAP
    [ "$(cat /tmp/$1.busy.rc)" -ne 0 ] && grep -qx "yakvm: error: --net: tap '$2': busy (another program has it open)" /tmp/$1.busy.err ||
        { echo "status $(cat /tmp/$1.busy.rc): $(cat /tmp/$1.busy.err)"; return 1; }
}
image_to_guest() {
    want=$(cat /tmp/$1.to-guest.md5)
    grep -qx "RECV $want" "$OUT/$1.out" || { echo "sent $want, guest got $(grep '^RECV' "$OUT/$1.out")"; return 1; }
}
guest_to_image() { # NAME MIB
    got=$(cat /tmp/$1.from-guest.md5)
    [ "$(cat /tmp/$1.from-guest.len)" -eq $(($2 * 1048576)) ] || { echo "$(cat /tmp/$1.from-guest.len) bytes"; return 1; }
    grep -qx "SENT $got" "$OUT/$1.out" || { echo "guest sent $(grep '^SENT' "$OUT/$1.out"), image got $got"; return 1; }
}
both_ways() { image_to_guest $1 && guest_to_image $1 $2; }
# yakvm created the tap: it is gone with yakvm.
tap_removed() { ! ip link show $1 > /dev/null 2>&1 || { echo "$1 is still there"; return 1; }; }
net_stats() {
    line=$(grep '^virtio-net' "$OUT/$1.err")
    echo "  | $line" >&3
    echo "$line" | grep -q 'rx [1-9][0-9]* packets' && echo "$line" | grep -q 'tx [1-9][0-9]* packets' && echo "$line" | grep -q ', 0 broken chains' ||
        { echo "$line"; return 1; }
}
# vhost moved the frames: the kernel's vhost thread of yakvm ran (CPU time while the
# image sent), the userspace device moved nothing, vhost took the rings once, and the
# interrupts went by irqfd (MODE kapic: both queues' calls pointed at an irqfd, nothing
# relayed) or through the relay thread (MODE relay: no irqfd, interrupts relayed).
vhost_moved() { # NAME MODE
    line=$(grep '^virtio-net' "$OUT/$1.err")
    echo "  | $line" >&3
    read -r name ticks < /tmp/$1.vhost 2>/dev/null
    echo "  $1: vhost thread ${name:-none}, ${ticks:-0} ticks of CPU after the image's send" >&3
    [ -n "$ticks" ] && [ "$ticks" -gt 0 ] || { echo "no vhost thread with CPU time: '$name $ticks'"; return 1; }
    echo "$line" | grep -q ': rx 0 packets 0 B .*, tx 0 packets 0 B ' || { echo "the userspace device moved frames: $line"; return 1; }
    echo "$line" | grep -q 'vhost-net: 1 starts, ' || { echo "$line"; return 1; }
    relayed=$(echo "$line" | sed -n 's/.*, \([0-9]*\) interrupts relayed.*/\1/p')
    to_irqfd=$(echo "$line" | sed -n 's/.*calls pointed \([0-9]*\) times at an irqfd.*/\1/p')
    case $2 in
        kapic) [ "$to_irqfd" -ge 2 ] && [ "$relayed" -lt 100 ] || { echo "irqfd $to_irqfd, relayed $relayed: $line"; return 1; } ;;
        relay) [ "$to_irqfd" -eq 0 ] && [ "$relayed" -gt 100 ] || { echo "irqfd $to_irqfd, relayed $relayed: $line"; return 1; } ;;
    esac
}
# vhost=on without /dev/vhost-net (moved away for the check): one message, status 1.
vhost_missing() {
    mv /dev/vhost-net /dev/vhost-net.away || { echo "no /dev/vhost-net in the image"; return 1; }
    msg=$(yakvm run --kernel $KERNEL --net tap=yk6,vhost=on < /dev/null 2>&1); rc=$?
    mv /dev/vhost-net.away /dev/vhost-net
    [ $rc -ne 0 ] && [ "$msg" = "yakvm: error: --net tap=yk6,vhost=on: /dev/vhost-net is missing (a kernel without CONFIG_VHOST_NET, or the vhost_net module not loaded)" ] ||
        { echo "status $rc: $msg"; return 1; }
    ! ip link show yk6 > /dev/null 2>&1 || { echo "yk6 is still there"; return 1; }
}

bad_option() {
    msg=$(yakvm run --kernel $KERNEL --net tap=yk1,mac=zz < /dev/null 2>&1); rc=$?
    [ $rc -ne 0 ] && [ "$msg" = "yakvm: error: --net tap=yk1,mac=zz: mac 'zz' is not six hex bytes with ':' (tap=NAME[,ip=A.B.C.D][,mask=A.B.C.D][,mac=XX:XX:XX:XX:XX:XX][,mtu=68-65535][,vhost=on|off])" ] ||
        { echo "status $rc: $msg"; return 1; }
    ! ip link show yk1 > /dev/null 2>&1 || { echo "yk1 was created"; return 1; }
}

# Two guests on a bridge in the image: guest A (tap yk-a, 169.254.79.2) and guest B (yk-b,
# .3), booted together; the taps are persistent (tunctl, made here, so that they can join
# the bridge before the guests start) and the two ports of ykbr, which has no address:
# the image is no IP hop between them. Each pings the other; A sends B 1 MiB over TCP, B
# sends back over TCP the md5 and length it got (env/guest-net's peer mode). The bridge's
# forwarding table, read while A sends, must have learned both guests' MACs on its ports.
peer_run() { # NAME TAP ME PEER ROLE
    yakvm run --kernel $KERNEL --initrd $INITRD --mem 256M --stats --net tap=$2 \
        --append "yakvm.peer=$3,$4,$5" < /dev/null > "$OUT/$1.raw" 2> "$OUT/$1.err"
}
bridge_down() {
    ip link set ykbr down 2>/dev/null; brctl delbr ykbr 2>/dev/null
    tunctl -d yk-a > /dev/null 2>&1; tunctl -d yk-b > /dev/null 2>&1
}
bridge_exchange() {
    bridge_down
    { brctl addbr ykbr && tunctl -t yk-a && tunctl -t yk-b && brctl addif ykbr yk-a && brctl addif ykbr yk-b &&
        ip link set ykbr up; } > /tmp/bridge.setup 2>&1 || { echo "cannot build the bridge: $(tail -n 2 /tmp/bridge.setup)"; bridge_down; return 1; }
    rm -f /tmp/bridge.fdb
    t0=$(now_cs)
    peer_run peer-b yk-b 169.254.79.3 169.254.79.2 recv & pb=$!
    peer_run peer-a yk-a 169.254.79.2 169.254.79.3 send & pa=$!
    ( sleep 300; kill -KILL $pa $pb ) > /dev/null 2>&1 & killer=$!
    # The table while A sends (each entry 16 bytes: the MAC, the port, is_local, ...).
    t=0
    while ! grep -q '^PEER-SENT' "$OUT/peer-a.raw" 2>/dev/null && kill -0 $pa 2>/dev/null && [ $t -lt 2400 ]; do
        t=$((t + 1)); sleep 0.1
    done
    grep -q '^PEER-SENT' "$OUT/peer-a.raw" &&
        od -An -v -tx1 -w16 /sys/class/net/ykbr/brforward | awk '$8 == "00" { print $1 ":" $2 ":" $3 ":" $4 ":" $5 ":" $6 }' > /tmp/bridge.fdb
    wait $pa; ra=$?
    wait $pb; rb=$?
    kill $killer 2>/dev/null
    echo "  bridge: guests A and B done in $(secs $t0) s (status $ra, $rb)" >&3
    for n in peer-a peer-b; do tr -d '\r' < "$OUT/$n.raw" > "$OUT/$n.out"; done
    bridge_down
    [ "$ra" -eq 0 ] && [ "$rb" -eq 0 ] || { echo "status A $ra, B $rb: $(tail -n 2 "$OUT/peer-a.err") / $(tail -n 2 "$OUT/peer-b.err")"; return 1; }
    grep -qx PEER-END "$OUT/peer-a.out" && grep -qx PEER-END "$OUT/peer-b.out" ||
        { echo "no PEER-END: A $(tail -c 200 "$OUT/peer-a.out") / B $(tail -c 200 "$OUT/peer-b.out")"; return 1; }
}
peer_pings() { grep -qx 'peer ping: ok' "$OUT/$1.out" || { grep '^peer' "$OUT/$1.out"; return 1; }; }
peer_tcp() {
    sent=$(sed -n 's/^PEER-SENT //p' "$OUT/peer-a.out"); got=$(sed -n 's/^PEER-RECV //p' "$OUT/peer-b.out")
    [ -n "$sent" ] && [ "$sent" = "$got" ] && [ "${got#* }" = 1048576 ] || { echo "A sent '$sent', B got '$got'"; return 1; }
}
# B's answer to A, over TCP the other way: what B got, as A hears it.
peer_ack() {
    sent=$(sed -n 's/^PEER-SENT //p' "$OUT/peer-a.out"); ack=$(sed -n 's/^PEER-ACK //p' "$OUT/peer-a.out")
    [ -n "$sent" ] && [ "$sent" = "$ack" ] || { echo "A sent '$sent', B answered '$ack'"; return 1; }
}
bridge_learned() {
    for n in peer-a peer-b; do
        mac=$(sed -n 's/^eth0: mac //p' "$OUT/$n.out")
        [ -n "$mac" ] && grep -qx "$mac" /tmp/bridge.fdb || { echo "$n's MAC '$mac' not in the table: $(cat /tmp/bridge.fdb 2>/dev/null | tr '\n' ' ')"; return 1; }
    done
}

# A hostile driver of the network device (guests/net_hostile.bin, bare metal, on tap yk5
# with 169.254.80.1): bad transmit chains (a 6-byte chain, a frame shorter than an
# Ethernet header, a frame past 64 KiB + 18, a writable descriptor, a GSO type the tap
# refuses) returned unsent and the queue going on; a transmit loop and a read-only
# receive buffer each DEVICE_NEEDS_RESET; a 20-byte receive buffer never used while
# frames come (dropped, counted); its memory outside the chains' buffers keeps its
# pattern; a good receive and good sends work after all that. The image sends the frames
# (arping, one a second, from when yakvm has the tap up).
# Then the flood: the guest sets the device up with no receive buffer and says
# FLOOD-READY; the image sends small UDP datagrams to it (logger's lines, which syslogd
# -R forwards one datagram each, to a static ARP entry: no resolution in the way) in
# batches of 10000 until the tap has dropped 100000 frames, notes yakvm's resident memory
# before and after, and sends the guest a byte on COM1; the guest checks nothing was used or
# written and that a buffer then gets a frame.
vmrss() { sed -n 's/^VmRSS:[^0-9]*\([0-9]*\) kB/\1/p' /proc/$1/status; }
tap_count() { cat /sys/class/net/yk5/statistics/$1; }
net_hostile_run() {
    rm -f /tmp/hostile.in /tmp/flood.nums; mkfifo /tmp/hostile.in
    yakvm run --machine pc --mem 64M --stats --net tap=yk5,ip=169.254.80.1,mac=52:54:00:12:34:57 guests/net_hostile.bin \
        < /tmp/hostile.in > "$OUT/net-hostile.out" 2> "$OUT/net-hostile.err" & pid=$!
    exec 7> /tmp/hostile.in
    ( sleep 300; kill -KILL $pid ) > /dev/null 2>&1 & killer=$!
    t=0
    while ! ip -o addr show yk5 2>/dev/null | grep -q 'inet 169.254.80.1/' && kill -0 $pid 2>/dev/null && [ $t -lt 300 ]; do
        t=$((t + 1)); sleep 0.1
    done
    arping -I yk5 -c 200 169.254.80.2 > /dev/null 2>&1 & ap=$!
    t=0
    while ! grep -q '^FLOOD-READY' "$OUT/net-hostile.out" && kill -0 $pid 2>/dev/null && [ $t -lt 1200 ]; do
        t=$((t + 1)); sleep 0.1
    done
    kill $ap 2>/dev/null; wait $ap 2>/dev/null
    if grep -q '^FLOOD-READY' "$OUT/net-hostile.out"; then
        rss0=$(vmrss $pid) d0=$(tap_count tx_dropped) p0=$(tap_count tx_packets)
        arp -i yk5 -s 169.254.80.2 52:54:00:12:34:57
        rm -f /dev/log
        syslogd -n -S -R 169.254.80.2:9 & sl=$!
        t=0; while [ ! -S /dev/log ] && [ $t -lt 50 ]; do t=$((t + 1)); sleep 0.1; done
        t0=$(now_cs) sent=0
        # Batches of 10000 lines until the tap has dropped 100000 frames (120000 at most):
        # the frames its queue keeps (500) are counted nowhere until read.
        while [ $(($(tap_count tx_dropped) - d0)) -lt 100000 ] && [ $sent -lt 120000 ]; do
            yes 'yakvm flood' | head -n 10000 | logger -t yk
            sent=$((sent + 10000))
            # syslogd forwards what it still has (up to 512 lines wait in /dev/log): until
            # the tap's drop counter stands still for 1.5 s.
            last=-1 now=0 still=0 t=0
            while [ $still -lt 3 ] && [ $t -lt 120 ]; do
                last=$now; sleep 0.5; t=$((t + 1))
                now=$(tap_count tx_dropped)
                if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
            done
        done
        kill $sl 2>/dev/null; wait $sl 2>/dev/null; rm -f /dev/log
        arp -i yk5 -d 169.254.80.2 > /dev/null 2>&1
        d1=$(tap_count tx_dropped)
        echo "$rss0 $(vmrss $pid) $((d1 - d0)) $sent $(secs $t0)" > /tmp/flood.nums
    fi
    # (In a subshell: a yakvm already gone would make the write kill this shell.)
    ( printf x >&7 ) 2>/dev/null; exec 7>&-
    wait $pid; echo $? > /tmp/hostile.rc
    kill $killer 2>/dev/null
    n=$(sed '/^FLOOD-READY/q' "$OUT/net-hostile.out" | grep -c '^ok ')
    stats=$(grep '^virtio-net' "$OUT/net-hostile.err")
    echo "  net-hostile: $n checks passed before the flood, status $(cat /tmp/hostile.rc); $stats" >&3
}
net_hostile() {
    n=$(sed '/^FLOOD-READY/q' "$OUT/net-hostile.out" | grep -c '^ok ')
    bad=$(sed '/^FLOOD-READY/q' "$OUT/net-hostile.out" | grep -E '^(FAIL|  )' | head -n 3)
    [ "$n" -eq 16 ] && [ -z "$bad" ] || { echo "$n ok: $bad $(tail -n 2 "$OUT/net-hostile.err")"; return 1; }
    # 2 frames received (the good buffer's, the one after the flood), 3 good frames sent,
    # 5 bad ones; the loop and the read-only buffer broken; frames dropped while the
    # 20-byte buffer was there (one a second for 4 s).
    stats=$(grep '^virtio-net' "$OUT/net-hostile.err")
    drops=$(echo "$stats" | sed -n 's/.* B (\([0-9]*\) dropped,.*/\1/p')
    echo "$stats" | grep -q ': rx 2 packets .*, tx 3 packets [0-9]* B (5 errors), 2 broken chains, [0-9]* dropped by the tap;' && [ -n "$drops" ] && [ "$drops" -ge 1 ] ||
        { echo "counters: $stats"; return 1; }
}
# The tap dropped at least 100000 frames during the flood (the guest had no receive
# buffer: the device read none of them, as the net_hostile_driver check's `rx 2 packets`
# says), and yakvm's --stats line counts at least as many.
flood_dropped() {
    [ -f /tmp/flood.nums ] || { echo "no flood: $(tail -n 3 "$OUT/net-hostile.out")"; return 1; }
    read -r rss0 rss1 dropped sent took < /tmp/flood.nums
    said=$(sed -n 's/^virtio-net.*, \([0-9]*\) dropped by the tap;.*/\1/p' "$OUT/net-hostile.err")
    echo "  flood: $sent datagrams in $took s, $dropped frames dropped by the tap; yakvm says $said; resident $rss0 kB -> $rss1 kB" >&3
    [ "$dropped" -ge 100000 ] && [ -n "$said" ] && [ "$said" -ge "$dropped" ] ||
        { echo "$sent datagrams, dropped $dropped, yakvm says '$said'"; return 1; }
}
# yakvm's resident memory grew by less than 4 MiB during the flood.
flood_memory() {
    read -r rss0 rss1 dropped sent took < /tmp/flood.nums
    [ -n "$rss0" ] && [ -n "$rss1" ] && [ $((rss1 - rss0)) -lt 4096 ] || { echo "resident $rss0 kB -> $rss1 kB"; return 1; }
}
flood_guest() {
    grep -qx 'ok no receive buffer during the flood: nothing used, nothing written' "$OUT/net-hostile.out" &&
        grep -qx 'ok after the flood a receive buffer gets a frame within 2 s' "$OUT/net-hostile.out" ||
        { echo "$(sed -n '/^FLOOD-READY/,$p' "$OUT/net-hostile.out" | head -n 4)"; return 1; }
    [ "$(cat /tmp/hostile.rc)" -eq 0 ] || { echo "status $(cat /tmp/hostile.rc): $(tail -n 2 "$OUT/net-hostile.err")"; return 1; }
    ! ip link show yk5 > /dev/null 2>&1 || { echo "yk5 is still there"; return 1; }
}

exec 3>&1
if check net_guest_exchange_${MIB}mib exchange net yk0 169.254.77 1500 $MIB; then
    check net_rng_is_virtio rng_virtio
    check net_rng_bytes_are_random rng_random
    check net_tap_created_and_configured tap_configured net yk0 169.254.77 1500
    check net_image_pings_guest image_pings_guest net
    check net_guest_pings_image guest_pings_image net
    check net_second_yakvm_on_the_tap_is_refused tap_busy net yk0
    check net_tcp_image_to_guest_md5 image_to_guest net
    check net_tcp_guest_to_image_md5 guest_to_image net $MIB
    check net_stats_count_packets net_stats net
fi
check net_tap_removed_at_exit tap_removed yk0
# MTU 9000 on both sides (the guest can raise eth0's MTU only to what the device offers).
if check net_mtu9000_exchange_1mib exchange net-mtu yk2 169.254.78 9000 1; then
    check net_mtu9000_configured tap_configured net-mtu yk2 169.254.78 9000
    check net_mtu9000_image_pings_guest_8972_bytes image_pings_guest net-mtu
    check net_mtu9000_tcp_both_ways_md5 both_ways net-mtu 1
fi
if check net_bridge_two_guests_run bridge_exchange; then
    check net_bridge_guest_a_pings_guest_b peer_pings peer-a
    check net_bridge_guest_b_pings_guest_a peer_pings peer-b
    check net_bridge_tcp_1mib_a_to_b_md5 peer_tcp
    check net_bridge_tcp_b_answers_a_md5 peer_ack
    check net_bridge_learned_both_guests_macs bridge_learned
fi
net_hostile_run
check net_hostile_driver net_hostile
check net_flood_100000_frames_dropped_by_the_tap flood_dropped
check net_flood_memory_bounded flood_memory
check net_flood_guest_unharmed_then_receives flood_guest
# vhost-net (--net tap=...,vhost=on): the same exchange, with the kernel APICs (calls
# straight to irqfds) and with --user-apic (calls through the relay thread).
for mode in kapic relay; do
    NETOPT=,vhost=on YFLAGS=
    [ $mode = relay ] && YFLAGS=--user-apic
    if check net_vhost_${mode}_exchange_${MIB}mib exchange net-vhost-$mode yk3 169.254.81 1500 $MIB; then
        check net_vhost_${mode}_image_pings_guest image_pings_guest net-vhost-$mode
        check net_vhost_${mode}_guest_pings_image guest_pings_image net-vhost-$mode
        check net_vhost_${mode}_tcp_both_ways_md5 both_ways net-vhost-$mode $MIB
        check net_vhost_${mode}_moved_the_frames vhost_moved net-vhost-$mode $mode
    fi
    NETOPT= YFLAGS=
done
check net_vhost_without_the_device_refused vhost_missing
check net_bad_option_refused bad_option
check dmesg_clean_net dmesg_clean
