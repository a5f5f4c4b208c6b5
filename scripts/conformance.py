#!/usr/bin/env python3
"""`make conformance`'s report: classifies the runs that tests/image/conformance.sh left
(NAME.out: the console, NAME.err: yakvm's stderr, NAME.rc: its exit status, NAME.secs, in
yakvm/ (its default: the local APICs in the module), uapic/ (yakvm --user-apic: the
emulator's APICs, the APIC tests only) and kvm/ (KVM's split irqchip)) and prints one line per
test of tests.list and the summary.

A run's result:
  pass     the test ended through the exit port with status 0, and its SUMMARY line (if it
           prints one) has no unexpected failure and not every test skipped
  fail     status 1 (unexpected failures), or a status the suite does not use
  skip     status 38: every test skipped (a feature the CPU does not offer)
  timeout  the run reached the list's timeout
  abort    the test did not end by itself: the suite's abort (status 63, an ABORT line),
           or yakvm ended the run (an error, a reset, a halt with interrupts off)
yakvm's exit port gives the guest's value V itself (QEMU's isa-debug-exit gives
(V << 1) | 1): 0 pass, 1 fail, 38 all skipped, 63 abort.

    conformance.py RESULTS TESTS.LIST [--known FILE] [--expected FILE] [--table OUT]
With --expected: exits 1 if a test listed there does not pass on yakvm (a name
"user-apic/NAME": NAME on yakvm --user-apic; "xv6/RUN": xv6's run RUN, from the
lines tests/image/xv6.sh left in RESULTS/xv6.txt, passes when its shell answered).
"""

import argparse
import re
import sys
from pathlib import Path

SUMMARY = re.compile(
    r"SUMMARY: (\d+) tests(?:, (\d+) unexpected failures)?(?:, (\d+) known failures)?"
    r"(?:, (\d+) expected failures)?(?:, (\d+) skipped)?")
# How yakvm says it ended a run itself (anything but the exit port).
ENDED = [
    ("yakvm: timed out", "timeout"),
    ("yakvm: stopped by signal", "timeout"),
    ("yakvm: error:", "abort"),
    ("yakvm: the guest reset the machine", "abort"),
    ("yakvm: the guest halted with interrupts disabled", "abort"),
]


class Run:
    """One run's result, its SUMMARY counts and a note saying why it did not pass."""

    def __init__(self, result, counts="", note="", secs=0.0):
        self.result, self.counts, self.note, self.secs = result, counts, note, secs

    def cell(self):
        return f"{self.result} {self.counts}".strip()


def read(path):
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    except FileNotFoundError:
        return ""


def classify(d, name):
    """The result of run NAME in directory D (None if it did not run)."""
    rc_text = read(d / f"{name}.rc").strip()
    if not rc_text.isdigit():
        return None
    rc = int(rc_text)
    out, err = read(d / f"{name}.out"), read(d / f"{name}.err")
    try:
        secs = float(read(d / f"{name}.secs") or 0)
    except ValueError:
        secs = 0.0
    summaries = SUMMARY.findall(out)
    counts, failures, all_skipped = "", 0, False
    if summaries:
        tests, fails, known, _, skipped = (int(x or 0) for x in summaries[-1])
        failures, all_skipped = fails, tests == skipped
        counts = f"{tests}/{fails}/{skipped}" + (f"+{known}k" if known else "")
    first_fail = next((line.strip() for line in out.splitlines() if line.startswith("FAIL")), "")
    # What the suite says when it aborts: report_abort(), an assertion, an exception.
    abort_line = next((line.strip() for line in out.splitlines()
                       if line.startswith(("ABORT", "Unhandled exception")) or "assert failed" in line), "")
    for text, result in ENDED:
        line = next((line for line in err.splitlines() if line.startswith(text)), None)
        if line is not None:
            return Run(result, counts, line.removeprefix("yakvm: "), secs)
    if rc in (124, 137, 143):
        return Run("timeout", counts, f"status {rc}", secs)
    if rc == 0:
        if failures or all_skipped:
            return Run("fail", counts, "status 0 but the SUMMARY disagrees", secs)
        return Run("pass", counts, "", secs)
    if rc == 1:
        return Run("fail", counts, first_fail, secs)
    if rc == 38:
        return Run("skip", counts, "every test skipped", secs)
    if rc == 63:
        return Run("abort", counts, abort_line or "the suite aborted", secs)
    return Run("fail", counts, f"status {rc}" + (f"; {first_fail}" if first_fail else ""), secs)


XV6_LINE = re.compile(r"^xv6: (\S+): (.+?) \(after (\d+) s")
# How far an xv6 run got, from tests/image/xv6.sh's words: these mean its shell answered.
XV6_ANSWERED = ("the shell answers", "usertests running", "ALL TESTS PASSED")


def xv6_runs(path):
    """xv6's runs in PATH (tests/image/xv6.sh's output): {run: (how far, seconds)}."""
    runs = {}
    for line in read(path).splitlines():
        m = XV6_LINE.match(line.strip())
        if m:
            runs[m.group(1)] = (m.group(2), int(m.group(3)))
    return runs


def names_in(path):
    """The first word of each line of PATH that is not a comment."""
    if path is None or not Path(path).exists():
        return {}
    entries = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, why = line.partition(" ")
            entries[name] = why.strip()
    return entries


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("tests_list")
    ap.add_argument("--known")
    ap.add_argument("--expected")
    ap.add_argument("--table")
    a = ap.parse_args()
    results = Path(a.results)
    known, expected = names_in(a.known), names_in(a.expected)
    kvm_ran = (results / "kvm").is_dir() and not (results / "kvm" / "NOT-RUN").exists()

    lines = []
    show = lines.append
    show(f"{'test':<24} {'yakvm':<16} {'--user-apic':<16} {'KVM':<16} why not (yakvm; --user-apic)")
    n = passed = passed_kvm = n_uapic = passed_uapic = 0
    known_failing, passes, diagnostics = [], set(), []
    secs = {"yakvm": 0.0, "uapic": 0.0, "kvm": 0.0}
    for line in Path(a.tests_list).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, env = line.split()[0], line.split()[4]
        y = classify(results / "yakvm", name)
        if y is None:
            continue  # not run (ONLY=...)
        k = classify(results / "kvm", name) if kvm_ran else None
        uapic = classify(results / "uapic", name)
        secs["yakvm"] += y.secs
        secs["uapic"] += uapic.secs if uapic else 0.0
        secs["kvm"] += k.secs if k else 0.0
        note = y.note
        if uapic and uapic.note:
            note = f"{note or 'pass'}; {uapic.note}"
        if name in known and y.result != "pass":
            note = f"[outside yakvm: {known[name]}] {note}".strip()
        if env != "env":
            # The diagnostic runs without the environment: shown, not counted.
            diagnostics.append(name)
            note = f"[diagnostic, not counted] {note}".strip()
        show(f"{name:<24} {y.cell():<16} {(uapic.cell() if uapic else '-'):<16} {(k.cell() if k else '-'):<16} {note[:110]}".rstrip())
        if env != "env":
            continue
        n += 1
        if y.result == "pass":
            passed += 1
            passes.add(name)
        elif name in known:
            known_failing.append(name)
        if k and k.result == "pass":
            passed_kvm += 1
        if uapic:
            n_uapic += 1
            if uapic.result == "pass":
                passed_uapic += 1
                passes.add(f"user-apic/{name}")
    show("(counts: tests/unexpected failures/skipped of the test's SUMMARY line)")
    summary = f"{passed} of {n} pass on yakvm, " + (f"{passed_kvm} on KVM" if kvm_ran else "KVM not run")
    if n_uapic:
        summary += f"; the APIC tests on yakvm --user-apic: {passed_uapic} of {n_uapic} pass"
    if known_failing:
        summary += f"; {len(known_failing)} of the others cannot pass for a reason outside yakvm ({', '.join(known_failing)})"
    show("")
    show(summary)
    show(f"time in the runs: {secs['yakvm']:.0f} s on yakvm, {secs['uapic']:.0f} s on yakvm --user-apic, {secs['kvm']:.0f} s on KVM")
    xv6 = xv6_runs(results / "xv6.txt")
    if xv6:
        show("")
        show("xv6 (kernelmemfs and the disk build, the kernel APIC): a line typed at the shell's prompt")
        for run, (got, secs_run) in xv6.items():
            show(f"  {run:<22} {got} after {secs_run} s")
            if got in XV6_ANSWERED:
                passes.add(f"xv6/{run}")
    bad = read(results / "dmesg-bad").strip()
    if bad:
        show(f"the image's kernel log has warnings: {bad.splitlines()[0]}")
    text = "\n".join(lines)
    print(text)
    if a.table:
        Path(a.table).write_text(text + "\n")

    if a.expected is None:
        return 0
    required = [t for t, why in expected.items() if not why.startswith("not checked")]
    lost = [t for t in required if t not in passes]
    new = sorted(passes - set(expected))
    if new:
        print(f"new passes on yakvm (add them to {a.expected}): {' '.join(new)}")
    if any(t.startswith("xv6/") for t in lost) and not xv6:
        print("xv6 did not run: give its source directory as XV6=DIR (default ../shared/xv6)")
    if lost:
        print(f"FAIL conformance: {len(lost)} expected to pass no longer do: {' '.join(lost)}")
        return 1
    unchecked = [t for t in expected if t not in required]
    print(f"PASS conformance: all {len(required)} tests {a.expected} holds to pass"
          + (f" (not checked: {' '.join(unchecked)}, {'passed' if set(unchecked) <= passes else 'did not all pass'})" if unchecked else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
