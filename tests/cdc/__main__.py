"""Prepare or try the CDC test bed by hand.

    python -m tests.cdc fetch                 # fetch the Connect/Debezium jars, check the PostgreSQL binaries
    python -m tests.cdc run --bootstrap HOST:PORT
                                              # start a bed, print its addresses, keep it up until Ctrl-C

``fetch`` is what CI runs in its install step, so that a missing Maven artifact or server binary fails
there, before the tests, and the test's own timings no longer include the download.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from tests.cdc.bed import CdcBed
from tests.cdc.connect import ensure_libs
from tests.cdc.postgres import find_bindir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cdc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the jars into the cache and check the PostgreSQL binaries")
    run = sub.add_parser("run", help="start a bed against a Kafka cluster and keep it up until Ctrl-C")
    run.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        began = time.monotonic()
        libs = ensure_libs()
        print(f"cdc: {len(list(libs.glob('*.jar')))} jars in {libs} ({time.monotonic() - began:.1f}s)")
        bindir = find_bindir()
        version = subprocess.run([str(bindir / "postgres"), "-V"], capture_output=True, text=True, check=True)
        print(f"cdc: {version.stdout.strip()} in {bindir}")
        return 0
    with CdcBed(args.bootstrap) as bed:
        print(f"cdc: postgres {bed.postgres.dsn} (pid {bed.postgres.pid}); connect {bed.connect.url} "
              f"(pid {bed.connect.pid}); timings {bed.timings}", flush=True)  # fmt: skip
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
