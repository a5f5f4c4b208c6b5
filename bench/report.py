#!/usr/bin/env python3
"""`make bench`: the table from the image's raw CSV. For each workload, the median of each
hypervisor's runs with their min-max, the ratio yakvm/KVM of the median times (lower is
better for yakvm), and the per-unit figure. Writes the summary CSV too."""
import csv
import statistics
import sys

# workload -> (what a unit is, how to show the per-unit figure from seconds and units)
PER_UNIT = {
    "pio": ("port I/O round trip to userspace", lambda s, u: f"{s / u * 1e6:.1f} us/exit"),
    "mmio": ("MMIO round trip to userspace", lambda s, u: f"{s / u * 1e6:.1f} us/exit"),
    "cpuid": ("exit handled in the hypervisor (CPUID)", lambda s, u: f"{s / u * 1e6:.1f} us/exit"),
    "disk": ("seed DMA disk, 4 MiB in 512-byte reads", lambda s, u: f"{u / s / 1e6:.2f} MB/s"),
    "timer": ("timer interrupts (PIT 5 kHz, 2000 taken)", lambda s, u: f"{u / s:.0f} irq/s"),
    "apictimer": ("local APIC timer interrupts (5 kHz, 2000 taken)", lambda s, u: f"{u / s:.0f} irq/s"),
    "ipi": ("IPI round trips between two halted vCPUs (1000)", lambda s, u: f"{s / u * 1e6:.0f} us/round trip"),
    "apicread": ("local APIC ID reads through the xAPIC page (100000)", lambda s, u: f"{s / u * 1e6:.1f} us/read"),
    "apicread-x2": ("local APIC ID reads through the x2APIC MSR (100000)", lambda s, u: f"{s / u * 1e6:.1f} us/read"),
    "linux": ("Linux boot to init and power-off", lambda s, u: f"{s:.2f} s"),
}
# The local APIC rows again with the local APICs in the emulator (--user-apic): the pc rows
# above have them in the hypervisor (the default: yakvm's module, KVM's split irqchip).
for w in ("apicread", "apictimer", "ipi"):
    what, unit = PER_UNIT[w]
    PER_UNIT[f"{w}-uapic"] = (f"{what}, --user-apic", unit)
# The virtio disk rows (bench/image.sh's vblk): O_DIRECT dd in our Linux on a --drive in the
# image's RAM, with ioeventfds (the default) and without (--no-ioeventfd: "-exit"); the
# interrupts through irqfds into the hypervisor's local APICs (the default), or with
# --user-apic ("-uapic") through the emulator's.
for suffix, how in (("", "ioeventfd"), ("-exit", "MMIO exit"), ("-uapic", "user APIC")):
    PER_UNIT[f"vwrite{suffix}"] = (f"virtio-blk sequential write, 1 MiB O_DIRECT ({how})", lambda s, u: f"{u / s / 1e6:.1f} MB/s")
    PER_UNIT[f"vread{suffix}"] = (f"virtio-blk sequential read, 1 MiB O_DIRECT ({how})", lambda s, u: f"{u / s / 1e6:.1f} MB/s")
    PER_UNIT[f"vread4k{suffix}"] = (f"virtio-blk 4 KiB O_DIRECT reads ({how})", lambda s, u: f"{u / s:.0f} IOPS")
# The virtio network rows (bench/image.sh's vnet): 16 MiB over TCP with busybox nc between
# our Linux and the image, through a tap, and 1000 UDP requests and answers of 64 bytes
# (yakvm-udprr); with the userspace device (ioeventfds), with vhost-net ("-vhost": its calls
# straight to irqfds), and vhost-net with --user-apic ("-vhost-uapic": the calls through
# the emulator's relay thread).
for suffix, how in (("", "userspace device"), ("-vhost", "vhost-net"), ("-vhost-uapic", "vhost-net, user APIC")):
    PER_UNIT[f"vnet-rx{suffix}"] = (f"virtio-net TCP image -> guest, 16 MiB ({how})", lambda s, u: f"{u / s / 1e6:.1f} MB/s")
    PER_UNIT[f"vnet-tx{suffix}"] = (f"virtio-net TCP guest -> image, 16 MiB ({how})", lambda s, u: f"{u / s / 1e6:.1f} MB/s")
    PER_UNIT[f"vnet-udprr{suffix}"] = (f"virtio-net UDP request/response, 64 bytes ({how})", lambda s, u: f"{s / u * 1e6:.0f} us/round trip")

def vblk_counters(path):
    """The virtio rows' counters per request (medians over the rounds), if the run wrote them."""
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return
    print("\nvirtio disk runs, per request of the benchmark disk (medians over the rounds):")
    print(f"{'mode':<10} {'hypervisor':<10} {'requests':>8} {'notify exits':>12} {'ioeventfd':>10} {'interrupts':>10} {'by irqfd':>9} {'emulator exits (boot+bench)':>28}")
    for mode in ("ioeventfd", "exit", "uapic"):
        for hv in ("yakvm", "kvm"):
            r = [x for x in rows if x["mode"] == mode and x["hypervisor"] == hv]
            if not r:
                continue
            med = lambda k: statistics.median(float(x[k] or 0) for x in r)
            req = med("requests")
            print(f"{mode:<10} {hv:<10} {req:>8.0f} {med('notify_exits') / req:>12.2f} {med('ioeventfd_signals') / req:>10.2f}"
                  f" {med('interrupts') / req:>10.2f} {med('irqfd_interrupts') / req:>9.2f} {med('emulator_exits'):>17.0f} (mmio {med('emulator_mmio'):.0f})")


def main(raw, summary):
    runs = {}
    with open(raw) as f:
        for row in csv.DictReader(f):
            key = (row["workload"], row["hypervisor"])
            runs.setdefault(key, []).append((float(row["seconds"]), float(row["units"])))
    rows = []
    print(f"{'workload':<9} {'yakvm median (min-max) s':<28} {'KVM median (min-max) s':<28} {'yakvm/KVM':>9}  per unit (yakvm | KVM)")
    for w, (what, unit) in PER_UNIT.items():
        y, k = runs.get((w, "yakvm")), runs.get((w, "kvm"))
        if not y or not k:
            print(f"{w:<9} missing runs (yakvm {len(y or [])}, kvm {len(k or [])})")
            continue
        ym, km = statistics.median(s for s, _ in y), statistics.median(s for s, _ in k)
        span = lambda r: f"{statistics.median(s for s, _ in r):.3f} ({min(s for s, _ in r):.3f}-{max(s for s, _ in r):.3f})"
        ratio = ym / km
        print(f"{w:<9} {span(y):<28} {span(k):<28} {ratio:>9.2f}  {unit(ym, y[0][1])} | {unit(km, k[0][1])}")
        rows.append([w, what, len(y), f"{ym:.6f}", f"{min(s for s, _ in y):.6f}", f"{max(s for s, _ in y):.6f}",
                     len(k), f"{km:.6f}", f"{min(s for s, _ in k):.6f}", f"{max(s for s, _ in k):.6f}",
                     f"{ratio:.3f}", unit(ym, y[0][1]), unit(km, k[0][1])])
    with open(summary, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["workload", "what", "yakvm_runs", "yakvm_median_s", "yakvm_min_s", "yakvm_max_s",
                      "kvm_runs", "kvm_median_s", "kvm_min_s", "kvm_max_s", "ratio_yakvm_kvm",
                      "yakvm_per_unit", "kvm_per_unit"])
        out.writerows(rows)
    vblk_counters(raw.replace("bench-runs.csv", "bench-vblk.csv"))
    print("\nratio: yakvm's median time / KVM's (below 1: yakvm is faster). Per unit: time per exit,")
    print("throughput, or the boot time. Raw runs and this summary: " + raw + ", " + summary)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
