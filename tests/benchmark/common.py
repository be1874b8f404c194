"""What the ceiling and floor child processes share: arguments, the consumer, the report line."""

from __future__ import annotations

import argparse
import sys

import orjson
from confluent_kafka import Consumer


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--events", type=int, required=True)
    return ap


def consumer(args: argparse.Namespace) -> Consumer:
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 4_194_304})  # fmt: skip
    c.subscribe([args.topic])
    return c


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM: counted from exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def report(events: int, elapsed_s: float, elapsed_95_s: float | None = None) -> None:
    """The one JSON line the benchmark reads (``elapsed_95_s``: until 95% of the events were answered)."""
    line = {"events": events, "elapsed_s": elapsed_s, "elapsed_95_s": elapsed_95_s, "peak_rss_mb": peak_rss_mb()}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
