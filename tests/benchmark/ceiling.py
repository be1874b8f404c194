"""The ceiling: raw consumption with consume(10000), no processing. Prints one JSON line."""

from __future__ import annotations

import sys
import time

from tests.benchmark.common import consumer, parser, report


def main() -> int:
    ap = parser()
    args = ap.parse_args()
    c = consumer(args)
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
    report(seen, elapsed)
    return 0 if seen >= args.events else 1


if __name__ == "__main__":
    sys.exit(main())
