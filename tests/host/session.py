#!/usr/bin/env python3
"""The interactive image (`make run`) driven through a pseudo-terminal, as a user drives it:
wait for the shell prompt, type what should leave QEMU, check that QEMU ends.

    tests/host/session.py poweroff reboot ctrl-d console linux

Prints one "PASS <name>" or "FAIL <name>: <why>" line per scenario (one boot each).
`console` runs a pc guest on yakvm's console in the image's terminal: typed keys reach the
guest, Ctrl-A X (sent as Ctrl-A Ctrl-A X: QEMU's console takes the first Ctrl-A) quits
yakvm, and the terminal's settings are back as they were. `linux` boots the guest Linux
from the image's shell and uses its shell.
"""
import os
import pty
import select
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = {"poweroff": b"poweroff\r", "reboot": b"reboot\r", "ctrl-d": b"\x04", "console": b"poweroff\r", "linux": b"poweroff\r"}
BOOT_TIMEOUT = 300  # seconds until the shell prompt (TCG boot + the demo guest)
EXIT_TIMEOUT = 60   # seconds QEMU may take to end after the keys


def session(name: str) -> str | None:
    """One boot: None if QEMU ended after `name`'s keys, else why not."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.environ.pop("CMD", None)
        os.execvp("scripts/qemu.sh", ["scripts/qemu.sh"])
    seen = b""

    def pump(timeout: float) -> bool:
        """Reads what the console printed; False once the terminal closed."""
        nonlocal seen
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return False
        seen += chunk
        return bool(chunk)

    def ended() -> bool:
        return os.waitpid(pid, os.WNOHANG)[0] == pid

    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        # The demo's last line, then the shell's prompt (followed by the line editor's
        # cursor-position query, ESC [ 6 n, which needs no answer).
        while not (b"leaves QEMU" in seen and b"/mnt/shares # " in seen[seen.index(b"leaves QEMU"):]):
            if time.monotonic() > deadline or not pump(1.0):
                return f"no shell prompt within {BOOT_TIMEOUT} s; console ended with {seen[-200:]!r}"
        time.sleep(0.5)
        for check in (BEFORE.get(name), SCENARIOS.get(name)):
            why = check and check(fd, pump, lambda: seen)
            if why:
                return why
        os.write(fd, KEYS[name])
        deadline = time.monotonic() + EXIT_TIMEOUT
        while time.monotonic() < deadline:
            if ended():
                return None
            pump(0.5)
        return f"QEMU still running {EXIT_TIMEOUT} s after {KEYS[name]!r}; console ended with {seen[-200:]!r}"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def expecter(fd: int, pump, seen):
    """expect(TEXT, TIMEOUT): waits until TEXT is among what the console printed since
    shortly before the call; type_line(LINE): types LINE and Enter."""
    def expect(what: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        start = max(len(seen()) - 200, 0)
        while what not in seen()[start:]:
            if time.monotonic() > deadline or not pump(0.5):
                return False
        return True

    def type_line(line: bytes) -> None:
        os.write(fd, line + b"\r")

    return expect, type_line


def linux(fd: int, pump, seen) -> str | None:
    """The demo's Linux command in the image's terminal: a Linux shell inside yakvm inside
    QEMU, answering what is typed; its poweroff ends yakvm and the image's shell is back."""
    expect, type_line = expecter(fd, pump, seen)
    type_line(b"yakvm run --kernel linux/bzImage --initrd linux/initramfs.cpio.gz")
    if not expect(b"YAKVM-GUEST-LINUX-UP", 240) or not expect(b"/ # ", 60):
        return f"no Linux shell; console ended with {seen()[-300:]!r}"
    time.sleep(1)
    type_line(b"echo linux-$((6*7)) on $(uname -r)")
    if not expect(b"linux-42 on 6.12", 60):
        return f"the Linux shell did not answer; console ended with {seen()[-300:]!r}"
    type_line(b"poweroff -f")
    if not expect(b"the guest powered off (ACPI S5)", 60) or not expect(b"/mnt/shares # ", 30):
        return f"poweroff in Linux did not end yakvm; console ended with {seen()[-300:]!r}"
    return None


def console(fd: int, pump, seen) -> str | None:
    """yakvm's console in the image's terminal; None if it behaved."""
    expect, type_line = expecter(fd, pump, seen)

    type_line(b"stty -g > /tmp/tty.before; yakvm run --machine pc guests/pc_uart.bin")
    time.sleep(3)
    for byte in b"typed":
        os.write(fd, bytes([byte]))
        time.sleep(0.05)
    if not expect(b"TYPED", 60):
        return f"the guest did not echo the typed keys; console ended with {seen()[-200:]!r}"
    os.write(fd, b"\x01\x01x")
    if not expect(b"quit (Ctrl-A X)", 30):
        return f"Ctrl-A X did not quit yakvm; console ended with {seen()[-200:]!r}"
    time.sleep(0.5)
    type_line(b"stty -g > /tmp/tty.after; cmp -s /tmp/tty.before /tmp/tty.after && echo TTY-$((20+1))-RESTORED")
    if not expect(b"TTY-21-RESTORED", 30):
        return f"the terminal's settings changed; console ended with {seen()[-200:]!r}"
    return None


def ctrl_c(fd: int, pump, seen) -> str | None:
    """Ctrl-C interrupts a command of the image's shell (the shell is in the foreground,
    with the console as its terminal)."""
    expect, type_line = expecter(fd, pump, seen)
    type_line(b"sleep 120; echo SLEPT-$((60+60))")
    time.sleep(2)
    os.write(fd, b"\x03")
    type_line(b"echo AFTER-$((1+1))")
    if not expect(b"AFTER-2", 20):
        return f"Ctrl-C did not interrupt sleep; console ended with {seen()[-200:]!r}"
    return None


SCENARIOS = {"console": console, "linux": linux}
# Checks made on the way, before the keys of a scenario that leaves QEMU.
BEFORE = {"poweroff": ctrl_c}


def main() -> int:
    failed = 0
    for name in sys.argv[1:] or list(KEYS):
        why = session(name)
        test = f"interactive_yakvm_{name}" if name in SCENARIOS else f"interactive_{name.replace('-', '_')}_leaves_qemu"
        if why is None:
            print(f"PASS {test}", flush=True)
        else:
            failed += 1
            print(f"FAIL {test}: {why}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
