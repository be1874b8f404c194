"""``python -m connector.schema_registry [--host H] [--port P] [--register SUBJECT=FILE.avsc ...]``"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from connector.schema_registry.server import RegistryServer

log = logging.getLogger("connector.schema_registry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.schema_registry",
        description="Serve a small Confluent-compatible Schema Registry (in memory) until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (default 8081; 0 picks a free one)")
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="SUBJECT=FILE",
        help="register an .avsc file under a subject at start-up (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = RegistryServer(args.host, args.port)
    for item in args.register:
        subject, sep, path = item.partition("=")
        if not sep or not subject or not path:
            parser.error(f"--register wants SUBJECT=FILE, got {item!r}")
        try:
            schema_id = server.register(subject, Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.error("cannot register %s under %s: %s", path, subject, exc)
            return 2
        log.info("registered %s under %s as id %d", path, subject, schema_id)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    log.info("schema registry serving at %s", server.url)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
