"""The floor: a minimal consume -> decode -> build body -> POST -> commit loop, with none of the
connector's guarantees (no per-partition batches, no retries, no dead letters, no replay safety).
Prints one JSON line."""

from __future__ import annotations

import argparse
import sys
import time

import httpx
import orjson
from confluent_kafka import Consumer

FIELDS = {"email": "email", "_fname": "first_name", "_lname": "last_name", "phones": "phone",
          "_bdate": "birth_date", "_city": "city", "_regip": "signup_ip", "CRM_ID": "id"}  # fmt: skip


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
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--workflow", type=int, required=True)
    args = ap.parse_args()
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 4_194_304})  # fmt: skip
    c.subscribe([args.topic])
    http = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.token}",
                                                    "Content-Type": "application/json"}, timeout=60)  # fmt: skip
    head = orjson.dumps({"workflow_id": args.workflow, "matching": "email"})[:-1] + b',"data":'
    seen = 0
    first = None
    n_batch = 0
    deadline = time.monotonic() + 900
    while seen < args.events and time.monotonic() < deadline:
        msgs = c.consume(10_000, 0.5)
        if not msgs:
            continue
        if first is None:
            first = time.monotonic()
        items = []
        for m in msgs:
            if m.error() is not None:
                continue
            seen += 1
            v = m.value()
            if v is None:
                continue
            after = orjson.loads(v).get("after")
            if not after:
                continue
            items.append({"data": {k: after[src] for k, src in FIELDS.items() if after.get(src) is not None}})
        if items:
            n_batch += 1
            body = head + orjson.dumps(items) + b"}"
            http.post("/api/v1.1/workflows/import_and_start_batch", content=body,
                      headers={"Request-ID": f"floor-{args.group}-{n_batch}"}).raise_for_status()  # fmt: skip
        c.commit(asynchronous=False)
    elapsed = time.monotonic() - (first or time.monotonic())
    c.close()
    sys.stdout.write(orjson.dumps({"events": seen, "elapsed_s": elapsed, "peak_rss_mb": peak_rss_mb()}).decode() + "\n")
    return 0 if seen >= args.events else 1


if __name__ == "__main__":
    sys.exit(main())
