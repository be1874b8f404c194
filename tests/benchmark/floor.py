"""The floor: a minimal consume -> decode -> build body -> POST -> commit loop, the fairest one: one
POST per ``consume(--batch)``, offsets committed asynchronously, nothing waited for but the answer.

It has none of the connector's guarantees (:data:`GUARANTEES`). Prints one JSON line."""

from __future__ import annotations

import sys
import time

import httpx
import orjson

from tests.benchmark.common import consumer, parser, report

GUARANTEES = (
    "none: no replay safety (Request-IDs count requests, not records, so a restart engages again what was "
    "sent after the last commit, and the commit is asynchronous), no retries (a failed POST ends the run), "
    "per-item results not read, no dead letters, no halts, no per-partition batches"
)

FIELDS = {"email": "email", "_fname": "first_name", "_lname": "last_name", "phones": "phone",
          "_bdate": "birth_date", "_city": "city", "_regip": "signup_ip", "CRM_ID": "id"}  # fmt: skip


def main() -> int:
    ap = parser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--workflow", type=int, required=True)
    ap.add_argument("--batch", type=int, default=10_000, help="records per consume() and per request")
    args = ap.parse_args()
    c = consumer(args)
    http = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.token}",
                                                    "Content-Type": "application/json"}, timeout=60)  # fmt: skip
    head = orjson.dumps({"workflow_id": args.workflow, "matching": "email"})[:-1] + b',"data":'
    seen = 0
    first = None
    at_95 = None  # when 95% of the events were answered
    n_batch = 0
    deadline = time.monotonic() + 900
    while seen < args.events and time.monotonic() < deadline:
        msgs = c.consume(args.batch, 0.5)
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
        if at_95 is None and seen >= 0.95 * args.events:
            at_95 = time.monotonic()
        c.commit(asynchronous=True)
    elapsed = time.monotonic() - (first or time.monotonic())
    c.close()
    report(seen, elapsed, at_95 - first if at_95 is not None and first is not None else None)
    return 0 if seen >= args.events else 1


if __name__ == "__main__":
    sys.exit(main())
