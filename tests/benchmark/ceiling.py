"""The ceiling: raw consumption with consume(10000), no processing. Prints one JSON line."""

from __future__ import annotations

import argparse
import sys
import time

import orjson
from confluent_kafka import Consumer


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM: counted from exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--events", type=int, required=True)
    args = ap.parse_args()
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 4_194_304})  # fmt: skip
    c.subscribe([args.topic])
    seen = 0
    first = None
    deadline = time.monotonic() + 600
    while seen < args.events and time.monotonic() < deadline:
        msgs = c.consume(10_000, 0.5)
        if msgs and first is None:
            first = time.monotonic()
        seen += sum(1 for m in msgs if m.error() is None)
    elapsed = time.monotonic() - (first or time.monotonic())
    c.close()
    sys.stdout.write(orjson.dumps({"events": seen, "elapsed_s": elapsed, "peak_rss_mb": peak_rss_mb()}).decode() + "\n")
    return 0 if seen >= args.events else 1


if __name__ == "__main__":
    sys.exit(main())
