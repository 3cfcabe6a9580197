#!/usr/bin/env python3
"""supervisord event listener: shut supervisord down when a program is FATAL.

A program goes FATAL when it could not be started `startretries` times in a row (a
crash loop, a port in use, a broken config). Restarting it further would hide the
problem; an appliance half up (a server without its object store) is worse than one
that is visibly down. So stop everything: the container runtime, systemd or run.sh's
caller then sees supervisord exit and can restart or report it.

Protocol (supervisor docs, "Event Listeners"): write READY, read one header line and
its payload, answer RESULT 2 OK, repeat. Standard library only.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:  # supervisord went away
            return 0
        headers = dict(token.split(":", 1) for token in line.split())
        payload = sys.stdin.read(int(headers.get("len", "0")))
        if headers.get("eventname") == "PROCESS_STATE_FATAL":
            fields = dict(token.split(":", 1) for token in payload.split())
            name = fields.get("processname", "?")
            print(f"stop-on-fatal: {name} is FATAL; shutting supervisord down", file=sys.stderr)
            sys.stderr.flush()
            # Our parent is supervisord; SIGTERM is its orderly shutdown.
            os.kill(os.getppid(), signal.SIGTERM)
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
