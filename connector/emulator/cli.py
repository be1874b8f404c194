"""``altcraft-connector emulator``: serve the Altcraft API emulator until SIGTERM or SIGINT.

On start it prints one line, ``EMULATOR_URL=http://host:port``, to stdout (with ``--port 0`` the
port is the one the system picked), so that a parent process can read where it listens.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from connector.emulator.config import (
    DEFAULT_DEDUP_WINDOW_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TOKEN,
    EmulatorConfig,
)
from connector.emulator.faults import FaultConfig, FaultConfigError, apply_changes

EXIT_OK = 0
EXIT_BAD_ARGS = 2


def _ids(text: str) -> list[int]:
    """``12`` or a range ``1-100``."""
    lo, sep, hi = text.partition("-")
    try:
        ids = list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id or id range: {text!r}") from None
    if not ids or min(ids) < 1:
        raise argparse.ArgumentTypeError(f"ids must be positive: {text!r}")
    return ids


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a fraction between 0 and 1 is expected, got {text}")
    return value


def default_workers() -> int:
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(cpus, 4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8088, help="port to listen on; 0 picks a free one (default 8088)")
    parser.add_argument(
        "--token",
        action="append",
        dest="tokens",
        metavar="TOKEN",
        help=f"accepted API token, repeatable (default: {DEFAULT_TOKEN})",
    )
    parser.add_argument(
        "--workflow",
        action="append",
        dest="workflows",
        type=_ids,
        metavar="ID",
        help="existing workflow id or range (12, 1-100), repeatable (default: 1-100)",
    )
    parser.add_argument(
        "--db",
        action="append",
        dest="dbs",
        type=_ids,
        metavar="ID",
        help="existing database id or range, repeatable (default: 1-100)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"request body limit in bytes (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of fault decisions and generated ids (default 0)")
    parser.add_argument(
        "--dedup-window-s",
        type=float,
        default=DEFAULT_DEDUP_WINDOW_S,
        help="how long a Request-ID is remembered, in seconds (default 86400)",
    )
    parser.add_argument(
        "--task-delay-s", type=float, default=0.2, help="processing time of a batch task, in seconds (default 0.2)"
    )
    parser.add_argument(
        "--request-log-size", type=int, default=10_000, help="requests kept for /_emulator/requests (default 10000)"
    )
    parser.add_argument(
        "--latency-field",
        default=None,
        help="measure produced-to-acknowledged latency from this item field (Unix ms), shown in /_emulator/stats",
    )
    parser.add_argument(
        "--order-field",
        default=None,
        help="record, per profile, this item field's values in applied order, shown in /_emulator/order",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes that parse and validate big bodies in parallel; 0 parses in the server process "
        f"(default: the CPU count, at most 4, 0 on one CPU: {default_workers()} here)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    faults = parser.add_argument_group("faults (also changeable at run time: POST /_emulator/faults)")
    faults.add_argument("--latency-s", type=float, default=0.0, help="added latency per API request, in seconds")
    faults.add_argument(
        "--latency-max-s", type=float, default=None, help="with it, latency is uniform in [latency-s, latency-max-s]"
    )
    faults.add_argument("--error-500-rate", type=_rate, default=0.0, help="fraction answered HTTP 500, error 500")
    faults.add_argument("--http-502-rate", type=_rate, default=0.0, help="fraction answered HTTP 502")
    faults.add_argument("--http-503-rate", type=_rate, default=0.0, help="fraction answered HTTP 503")
    faults.add_argument("--rate-limit-rate", type=_rate, default=0.0, help="fraction answered HTTP 429")
    faults.add_argument("--retry-after-s", type=int, default=1, help="Retry-After of the 429 answers (default 1)")
    faults.add_argument("--reset-rate", type=_rate, default=0.0, help="fraction of connections reset, not executed")
    faults.add_argument(
        "--reset-after-execute-rate",
        type=_rate,
        default=0.0,
        help="fraction executed, then the connection reset (the answer is lost)",
    )
    faults.add_argument("--outage-s", type=float, default=None, help="every API request fails 503 for this long")
    faults.add_argument("--quota-profiles", type=int, default=None, help="error 402 once this many profiles were sent")
    faults.add_argument("--quota-requests", type=int, default=None, help="error 402 once this many requests ran")
    faults.add_argument(
        "--strict", action="store_true", help="a batch with any invalid item fails whole with error 400"
    )
    faults.add_argument(
        "--refuse-matching",
        action="append",
        default=[],
        metavar="MODE",
        help="refuse every request with this matching mode (error 400, a configuration fault); repeatable",
    )


def config_from_args(args: argparse.Namespace, now: float) -> EmulatorConfig:
    """The emulator settings a command line asks for; ValueError/FaultConfigError when invalid."""
    changes: dict[str, object] = {
        "latency_s": args.latency_s,
        "latency_max_s": args.latency_max_s,
        "error_500_rate": args.error_500_rate,
        "http_502_rate": args.http_502_rate,
        "http_503_rate": args.http_503_rate,
        "rate_limit_rate": args.rate_limit_rate,
        "retry_after_s": args.retry_after_s,
        "reset_rate": args.reset_rate,
        "reset_after_execute_rate": args.reset_after_execute_rate,
        "quota_profiles": args.quota_profiles,
        "quota_requests": args.quota_requests,
        "strict": args.strict,
        "refuse_matching": args.refuse_matching or None,
    }
    if args.outage_s:
        changes["outage_s"] = args.outage_s
    faults = apply_changes(FaultConfig(), changes, now)
    defaults = EmulatorConfig()
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        tokens=args.tokens or defaults.tokens,
        workflows=sorted({i for group in args.workflows for i in group}) if args.workflows else defaults.workflows,
        dbs=sorted({i for group in args.dbs for i in group}) if args.dbs else defaults.dbs,
        max_body_bytes=args.max_body_bytes,
        seed=args.seed,
        dedup_window_s=args.dedup_window_s,
        task_delay_s=args.task_delay_s,
        request_log_size=args.request_log_size,
        latency_field=args.latency_field,
        order_field=args.order_field,
        workers=args.workers,
        faults=faults,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from connector.emulator.server import Emulator

    try:
        config = config_from_args(args, time.monotonic())
    except (ValueError, FaultConfigError) as exc:
        sys.stderr.write(f"emulator: {exc}\n")
        return EXIT_BAD_ARGS
    stop = threading.Event()

    def ask_to_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    emulator = Emulator(config)
    try:
        try:
            emulator.start()
        except OSError as exc:
            sys.stderr.write(f"emulator: cannot listen on {config.host}:{config.port}: {exc}\n")
            return EXIT_BAD_ARGS
        sys.stdout.write(f"EMULATOR_URL={emulator.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK
