#!/usr/bin/env python3
"""The interactive image (`make run`) driven through a pseudo-terminal, as a user drives it:
wait for the shell prompt, type what should leave QEMU, check that QEMU ends.

    tests/host/session.py poweroff reboot ctrl-d

Prints one "PASS <name>" or "FAIL <name>: <why>" line per key sequence (one boot each).
"""
import os
import pty
import select
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = {"poweroff": b"poweroff\r", "reboot": b"reboot\r", "ctrl-d": b"\x04"}
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
        # The demo's last line, then the shell's prompt ("... # ").
        while not (b"leaves QEMU" in seen and seen.rstrip().endswith(b"#")):
            if time.monotonic() > deadline or not pump(1.0):
                return f"no shell prompt within {BOOT_TIMEOUT} s; console ended with {seen[-200:]!r}"
        time.sleep(0.5)
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


def main() -> int:
    failed = 0
    for name in sys.argv[1:] or list(KEYS):
        why = session(name)
        if why is None:
            print(f"PASS interactive_{name.replace('-', '_')}_leaves_qemu", flush=True)
        else:
            failed += 1
            print(f"FAIL interactive_{name.replace('-', '_')}_leaves_qemu: {why}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
