"""A supervisor of fake workers, for supervisor tests.

``python -m support.fakepool WORKERS`` prints ``PORT <n>`` once listening on
127.0.0.1; SIGHUP rolls the workers, SIGTERM drains and exits.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from karpor.app.supervisor import Supervisor

reactor: Any = _reactor


def main() -> None:
    workers = int(sys.argv[1])
    drain = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    sup = Supervisor(
        reactor,
        "127.0.0.1",
        0,
        workers,
        lambda slot, gen: [
            sys.executable,
            "-m",
            "support.fakeworker",
            str(gen),
            "127.0.0.1",
            str(slot),
        ],
        drain_timeout=drain,
        env=env,
    )

    def hup(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(sup.roll)

    signal.signal(signal.SIGHUP, hup)
    reactor.addSystemEventTrigger("before", "shutdown", sup.stopService)
    sup.startService()
    print(f"PORT {sup.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
