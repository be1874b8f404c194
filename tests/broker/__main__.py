"""Run the test broker by hand: ``python -m tests.broker [--port 9092]``.

Prints ``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT`` once the broker answers metadata requests, then runs
until SIGINT/SIGTERM and stops it (its data folder is deleted unless ``--keep``). With that variable
exported, ``pytest`` uses this broker instead of starting its own.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tests.broker.kafka import KAFKA_VERSION, BrokerError, KafkaBroker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.broker", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="broker (PLAINTEXT) port; default: a free one")
    parser.add_argument("--controller-port", type=int, default=None, help="KRaft controller port")
    parser.add_argument("--work-dir", type=Path, default=None, help="data and log folder (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder on exit")
    parser.add_argument(
        "--fast-start",
        action="store_true",
        help="C1 JIT only: starts twice as fast, lower peak throughput (what the tests use)",
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="extra server.properties entry"
    )
    args = parser.parse_args(argv)

    extra: dict[str, str] = {}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--config wants KEY=VALUE, got {item!r}")
        extra[key.strip()] = value.strip()

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    broker = KafkaBroker(
        port=args.port,
        controller_port=args.controller_port,
        work_dir=args.work_dir,
        extra_config=extra,
        fast_start=args.fast_start,
    )
    try:
        print(f"starting Kafka {KAFKA_VERSION} (KRaft, single node) in {broker.work_dir} ...", file=sys.stderr)
        broker.start()
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}", flush=True)
        print(f"pid {broker.pid}, log {broker.log_path}; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                print(f"the broker exited; last log lines:\n{broker.log_tail()}", file=sys.stderr)
                return 1
        print("stopping ...", file=sys.stderr)
        return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            broker.stop()
            print(f"kept {broker.work_dir}", file=sys.stderr)
        else:
            broker.close()  # also deletes the work folder when it was a temp dir


if __name__ == "__main__":
    sys.exit(main())
