#!/usr/bin/env python3
"""runlog.py - run a command (QEMU) with a time limit, logging its output with timestamps.

Usage: runlog.py [--stop REGEX]... TIMEOUT_S LOG COMMAND [ARG...]

Writes LOG with each output line as "[SECONDS] text" (seconds since the start, terminal
escapes and carriage returns removed) and LOG.raw with the bytes as they came.  The
command runs in its own process group; after TIMEOUT_S seconds the group is killed.
With --stop, the group is also killed 2 s after a (cleaned) output line, or the pending
partial line, matches REGEX: for prompts that mean nothing more will happen (the UEFI
Shell's "Shell> " after a failed boot option, GRUB's "grub> ").
Exit status: the command's own, 124 if it was killed at the time limit, 125 if killed
after a --stop match.  The last line of LOG is "[SECONDS] runlog: exited N",
"[SECONDS] runlog: timeout" or "[SECONDS] runlog: stopped at 'TEXT'".
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[=>c78])")


def main():
    args, stops = sys.argv[1:], []
    while len(args) >= 2 and args[0] == "--stop":
        stops.append(re.compile(args[1]))
        args = args[2:]
    if len(args) < 3:
        sys.exit(__doc__)
    timeout, log_path, cmd = float(args[0]), args[1], args[2:]
    stopped = []    # the text that matched a --stop pattern
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log = open(log_path, "w", encoding="utf-8")
    raw = open(log_path + ".raw", "wb")

    def stamp():
        return "[%7.2f] " % (time.monotonic() - start)

    def check(text):
        for rx in stops:
            m = rx.search(text)
            if m and not stopped:
                stopped.append(m.group(0))

    def reader():
        pending = b""
        while True:
            data = proc.stdout.read1(65536)
            if not data:
                break
            raw.write(data)
            raw.flush()
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = ANSI.sub("", line.decode("utf-8", errors="replace")).replace("\r", "")
                log.write(stamp() + text + "\n")
                check(text)
            check(ANSI.sub("", pending.decode("utf-8", errors="replace")))
            log.flush()
        if pending:
            text = ANSI.sub("", pending.decode("utf-8", errors="replace")).replace("\r", "")
            log.write(stamp() + text + "\n")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline, rc, status = start + timeout, None, None
    while rc is None:
        try:
            rc = proc.wait(timeout=0.2)
            status = "exited %d" % rc
        except subprocess.TimeoutExpired:
            if stopped:
                time.sleep(2)           # let the rest of the message reach the log
                rc, status = 125, "stopped at %r" % stopped[0]
            elif time.monotonic() >= deadline:
                rc, status = 124, "timeout"
            else:
                continue
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    t.join(5)
    log.write(stamp() + "runlog: " + status + "\n")
    log.close()
    raw.close()
    sys.exit(rc)


if __name__ == "__main__":
    main()
