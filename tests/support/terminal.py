"""Running a command on a pseudo-terminal of a given size (kubectl ``-t``)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time

#: seconds a command on the terminal may take
DEADLINE = 60.0


def run_in_pty(
    command: list[str], env: dict[str, str], rows: int, cols: int, deadline: float = DEADLINE
) -> tuple[int, bytes]:
    """Run ``command`` with a pty of ``rows`` x ``cols`` as its terminal
    (stdin, stdout and stderr); (its status, what it showed). Killed past
    ``deadline`` seconds."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    output = bytearray()
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)  # the poll of this wait
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every process left the terminal
                    break
                if not data:
                    break
                output += data
            elif proc.poll() is not None:
                break
        if proc.poll() is None:
            proc.kill()
        return proc.wait(deadline), bytes(output)
    finally:
        os.close(master)
