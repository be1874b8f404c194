"""``python -m tests.benchmark``: how close to the limit the connector runs.

In one run, against the same real Kafka broker, the same data and the same emulator, it measures

- the ceiling: raw consumption with ``consume(10000)`` and no processing;
- the floor pipeline: a minimal consume -> decode -> build body -> POST -> commit loop without any of
  the connector's guarantees (asynchronous commits, the fairest floor);
- the connector itself, as a user runs it (``altcraft-connector run`` with a production-like config);
- both again with 1,000-item requests (``--small-batch``);
- the cost of exactly-once dead letters (``--at-least-once``): the connector again, at both batch
  sizes, with ``dead_letter.exactly_once: false`` (offsets committed by the consumer, no transactions);
- the latency-bound case: one partition of mostly distinct profiles, an API taking 1 s per request,
  2,000-item batches and 8 requests in flight, against the bound those allow (8 x 2,000 / 1 s);
- with ``--against CHECKOUT``, the connector of another checkout (an earlier commit's worktree) in the
  same repetitions as this one's: a before/after measured side by side;

each as a child process, so that CPU seconds and peak RSS are that process's own (``wait4``), in an
order turned by one place each repetition (:func:`rotated`). It prints events/s, CPU seconds per
million events and peak RSS (medians over the repetitions), the connector's ratios to the floor and the
ceiling (medians of each repetition's own, :func:`paired`), and with ``--latency`` the end-to-end latency
(event produced -> Altcraft answered) at a steady rate. Results are also written as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pydantic
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from connector.decode.avro import encode
from connector.demo_data import DEMO_FIELDS, generate
from connector.emulator import process as emulator_process
from connector.schema_registry.samples import CUSTOMER_ENVELOPE, CUSTOMER_SUBJECT, customer_change, load_schema
from connector.schema_registry.server import RegistryServer
from tests.benchmark import bound
from tests.benchmark.floor import GUARANTEES as FLOOR_GUARANTEES

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-token"
WORKFLOW = 12
PY = sys.executable
LINGER_S = 1.0
CONNECTOR_GUARANTEES = (
    "every record engaged once within Altcraft's deduplication window (offset ranges recorded before "
    "sending, replayed after a crash or rebalance under the same Request-IDs), retries, splits and "
    "bisection, per-item results, dead letters exactly once (each committed in the Kafka transaction that "
    "commits the offset past its record), halts on configuration faults, per-profile Kafka order, memory "
    "bounded by pausing partitions"
)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the data set (default 1000000)")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (default 3)")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""),
                    help="use this Kafka cluster instead of starting the test broker")  # fmt: skip
    ap.add_argument("--out", default="bench-results.json", help="where to write the JSON results")
    ap.add_argument("--latency-rate", type=int, default=20_000, help="events/s of the latency run (0: skip)")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=int, choices=(0, 1), default=1, help="one unmeasured pass first (default 1)")
    ap.add_argument(
        "--slow-seconds",
        type=float,
        default=90.0,
        help="how long the connector runs on the whole backlog against a slow API (0: skip)",
    )
    ap.add_argument("--slow-latency", type=float, default=4.0, help="seconds the API takes per request then")
    ap.add_argument(
        "--small-batch",
        type=int,
        default=1_000,
        help="also measure the floor and the connector with requests of this many items (0: skip)",
    )
    ap.add_argument(
        "--at-least-once",
        type=int,
        choices=(0, 1),
        default=1,
        help="also measure the connector without transactions (dead_letter.exactly_once: false), at both "
        "batch sizes: the cost of exactly-once dead letters (default 1)",
    )
    ap.add_argument(
        "--latency-bound-seconds",
        type=float,
        default=1.0,
        help="the latency-bound case: seconds the API takes per request (0: skip)",
    )
    ap.add_argument("--latency-bound-events", type=int, default=160_000, help="its events, on one partition")
    ap.add_argument("--latency-bound-batch", type=int, default=2_000, help="its batch size (max_items)")
    ap.add_argument(
        "--latency-bound-in-flight",
        type=int,
        default=8,
        help="its max_in_flight (and max_in_flight_per_partition, where the connector has it)",
    )
    ap.add_argument(
        "--latency-bound-update-share",
        type=float,
        default=0.1,
        help="share of its events that update one of a million existing customers; the others are new (default 0.1)",
    )
    ap.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="another checkout of the connector (a git worktree of an earlier commit, say) measured in the same "
        "repetitions as this one's connector: JSON at both request sizes and Avro, with its own "
        "defaults; run with CHECKOUT/.venv/bin/python when there is one, else with this Python",
    )
    args = ap.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from tests.broker.kafka import KafkaBroker

        broker = KafkaBroker().start()  # full JIT: a benchmark, not a quick test
        bootstrap = broker.bootstrap
    emulator, url = start_emulator(latency=args.latency_rate > 0)
    try:
        return run(args, bootstrap, url)
    finally:
        emulator_process.stop(emulator)
        if broker is not None:
            broker.close()


def run(args: argparse.Namespace, bootstrap: str, url: str) -> int:
    tag = f"{int(time.time())}"
    topic = f"bench-json-{tag}"
    create_topic(bootstrap, topic, args.partitions)
    log(f"generating {args.events} events")
    stream = generate(args.events, args.partitions, invalid_share=0.0, seed=1)
    log("producing")
    produce(bootstrap, topic, ((e.key, e.value, e.partition) for e in stream.events))
    del stream
    avro_topic = f"bench-avro-{tag}"
    create_topic(bootstrap, avro_topic, args.partitions)
    registry = RegistryServer().start()
    log("producing the Avro twin of the data")
    produce(bootstrap, avro_topic, avro_twins(registry, generate(args.events, args.partitions, 0.0, seed=1).events))
    runs: dict[str, list[dict[str, Any]]] = {"ceiling": [], "floor": [], "connector": [], "connector_avro": []}
    if args.small_batch > 0:
        runs.update(floor_small=[], connector_small=[])
    if args.at_least_once:
        runs["connector_alo"] = []
        if args.small_batch > 0:
            runs["connector_small_alo"] = []
    if args.against is not None:
        runs.update(against=[], against_avro=[])
        if args.small_batch > 0:
            runs["against_small"] = []
    bound_topic = None
    overlapping = (0, 0)
    if args.latency_bound_seconds > 0:
        bound_topic = f"bench-bound-{tag}"
        create_topic(bootstrap, bound_topic, 1)
        log(f"producing {args.latency_bound_events} mostly distinct changes to one partition")
        records, ids = bound.changes(args.latency_bound_events, args.latency_bound_update_share)
        produce(bootstrap, bound_topic, ((k, v, 0) for k, v in records))
        overlapping = bound.overlapping_batches(ids, args.latency_bound_batch, args.latency_bound_in_flight)
        del records, ids
        runs["latency_bound"] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            if args.warmup:
                # The broker's JIT compiles its fetch path during the first pass over the data; unmeasured,
                # so that the first repetition is not slower than the others for that reason alone.
                log("warm-up (not measured): ceiling and floor on the JSON data, ceiling on the Avro data")
                measure_script("ceiling", bootstrap, topic, f"warm-ceiling-{tag}", args.events, url)
                measure_script("floor", bootstrap, topic, f"warm-floor-{tag}", args.events, url)
                measure_script("ceiling", bootstrap, avro_topic, f"warm-avro-{tag}", args.events, url)
            for rep in range(args.reps):
                plan = repetition_plan(args, bootstrap, topic, avro_topic, bound_topic, url, Path(tmp), registry,
                                       f"{tag}-{rep}")  # fmt: skip
                for name, measure in rotated(plan, rep):
                    log(f"repetition {rep + 1}/{args.reps}: {name}")
                    runs[name].append(measure())
            slow = slow_against = latency_against = None
            if args.slow_seconds > 0:
                log(f"memory on the whole backlog for {args.slow_seconds:.0f} s, {args.slow_latency} s per request")
                slow = measure_slow_api(bootstrap, topic, f"slow-{tag}", url, Path(tmp), args)
            latency = None
            if args.latency_rate > 0 and args.warmup:
                # The first run that produces while it consumes is slower whoever runs it (the broker's
                # produce path is compiled meanwhile): p50 1.2-1.6 s against 0.8 s for the runs after it.
                log("warm-up (not measured): the same steady rate once")
                measure_latency(bootstrap, url, args, Path(tmp), f"{tag}-warm")
            if args.latency_rate > 0:
                log(f"latency at a steady {args.latency_rate} events/s")
                latency = measure_latency(bootstrap, url, args, Path(tmp), tag)
            if args.against is not None:
                with checkout(args.against):
                    if args.slow_seconds > 0:
                        log(f"the same, with the connector of {args.against}")
                        slow_against = measure_slow_api(bootstrap, topic, f"slow-against-{tag}", url, Path(tmp), args)
                    if args.latency_rate > 0:
                        log(f"the same, with the connector of {args.against}")
                        latency_against = measure_latency(bootstrap, url, args, Path(tmp), f"{tag}-against")
    finally:
        registry.stop()
    summary = {name: medians(rs) for name, rs in runs.items()}
    # Ratios between parts are medians of the ratios within each repetition: the host's speed drifts
    # from one repetition to the next (the floor by 15% and more), and both sides of a pair share it.
    pairs = [("connector", "floor"), ("connector", "ceiling")]
    if "connector_small" in summary:
        pairs.append(("connector_small", "floor_small"))
    for mine, theirs, floor_of in (
        ("connector", "against", "floor"),
        ("connector_small", "against_small", "floor_small"),
    ):
        if theirs in summary:
            pairs += [(theirs, floor_of), (mine, theirs)]
    per_repetition = {f"{a}_to_{b}": paired(runs, a, b) for a, b in pairs}
    # The same up to 95% of the events answered: at the end of the data each partition's last batch,
    # short of max_items, waits out the linger (the floor sends each poll at once); a stream that goes
    # on never waits for its end.
    steady = "events_per_s_to_95pct"
    per_repetition |= {
        f"{a}_to_{b}_to_95pct": paired(runs, a, b, steady)
        for a, b in pairs
        if all(steady in r for r in runs[a] + runs[b])
    }
    ratios = {name: statistics.median(values) for name, values in per_repetition.items()}
    for exact, loose, label in (("connector", "connector_alo", "exactly_once_cost"),
                                ("connector_small", "connector_small_alo", "exactly_once_cost_small")):  # fmt: skip
        if exact in summary and loose in summary:
            ratios[label] = 1.0 - summary[exact]["events_per_s"] / summary[loose]["events_per_s"]
            ratios[label + "_cpu"] = summary[exact]["cpu_s_per_million"] / summary[loose]["cpu_s_per_million"] - 1.0
    latency_bound = None
    if "latency_bound" in summary:
        latency_bound = {
            **summary["latency_bound"],
            "events": args.latency_bound_events,
            "request_latency_s": args.latency_bound_seconds,
            "batch": args.latency_bound_batch,
            "max_in_flight": args.latency_bound_in_flight,
            "max_in_flight_per_partition": args.latency_bound_in_flight if knows_per_partition_limit() else None,
            "update_share": args.latency_bound_update_share,
            "batches_overlapping_earlier_in_flight": overlapping[0],
            "batches": overlapping[1],
        }
    result = {
        "events": args.events,
        "partitions": args.partitions,
        "repetitions": args.reps,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "small_batch": args.small_batch,
        "against": str(args.against) if args.against is not None else None,
        "median": summary,
        "ratios": ratios,
        "ratios_per_repetition": per_repetition,
        "latency_bound": latency_bound,
        "guarantees": {"floor": FLOOR_GUARANTEES, "connector": CONNECTOR_GUARANTEES},
        "latency": latency,
        "slow_api": slow,
        "latency_against": latency_against,
        "slow_api_against": slow_against,
        "runs": runs,
    }
    Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print_table(summary, ratios, per_repetition, latency, slow, latency_bound, args)
    if latency_against:
        print(f"against: end-to-end latency p50 {latency_against.get('p50_ms', float('nan')):.0f} ms, "
              f"p99 {latency_against.get('p99_ms', float('nan')):.0f} ms")  # fmt: skip
    if slow_against:
        print(f"against: whole backlog, peak RSS {slow_against['peak_rss_mb']:.0f} MB")
    return 0


Measurement = Callable[[], dict[str, Any]]


def repetition_plan(
    args: argparse.Namespace,
    bootstrap: str,
    topic: str,
    avro_topic: str,
    bound_topic: str | None,
    url: str,
    workdir: Path,
    registry: RegistryServer,
    suffix: str,
) -> list[tuple[str, Measurement]]:
    """The measurements of one repetition, each named by its entry in the results, in the base order."""
    events = args.events
    plan: list[tuple[str, Measurement]] = [
        ("ceiling", lambda: measure_script("ceiling", bootstrap, topic, f"ceiling-{suffix}", events, url)),
        ("floor", lambda: measure_script("floor", bootstrap, topic, f"floor-{suffix}", events, url)),
        ("connector", lambda: measure_connector(bootstrap, topic, f"conn-{suffix}", events, url, workdir)),
        ("connector_avro", lambda: measure_connector(bootstrap, avro_topic, f"avro-{suffix}", events, url, workdir,
                                                     registry_url=registry.url)),
    ]  # fmt: skip
    small = args.small_batch
    if small > 0:
        plan += [
            ("floor_small", lambda: measure_script("floor", bootstrap, topic, f"floor-small-{suffix}", events, url,
                                                   batch=small)),
            ("connector_small", lambda: measure_connector(bootstrap, topic, f"conn-small-{suffix}", events, url,
                                                          workdir, max_items=small)),
        ]  # fmt: skip
    if args.at_least_once:
        sizes = [(10_000, "connector_alo")] + ([(small, "connector_small_alo")] if small > 0 else [])
        for size, name in sizes:

            def loose(size: int = size, group: str = f"{name}-{suffix}") -> dict[str, Any]:
                config = connector_config(bootstrap, topic, group, url, free_port(), max_items=size)
                config["dead_letter"]["exactly_once"] = False
                return measure_connector(bootstrap, topic, group, events, url, workdir, config=config)

            plan.append((name, loose))
    if args.against is not None:
        other = args.against

        def theirs(measure: Measurement) -> Measurement:
            def run_there() -> dict[str, Any]:
                with checkout(other):
                    return measure()

            return run_there

        plan += [
            ("against", theirs(lambda: measure_connector(bootstrap, topic, f"against-{suffix}", events, url, workdir))),
            ("against_avro", theirs(lambda: measure_connector(bootstrap, avro_topic, f"against-avro-{suffix}", events,
                                                              url, workdir, registry_url=registry.url))),
        ]  # fmt: skip
        if small > 0:
            plan.append(("against_small", theirs(lambda: measure_connector(
                bootstrap, topic, f"against-small-{suffix}", events, url, workdir, max_items=small))))  # fmt: skip
    if bound_topic is not None:
        plan.append(("latency_bound", lambda: measure_latency_bound(bootstrap, bound_topic, f"bound-{suffix}", url,
                                                                    workdir, args)))  # fmt: skip
    return plan


def rotated(plan: list[tuple[str, Measurement]], rep: int) -> list[tuple[str, Measurement]]:
    """The plan in the order repetition ``rep`` runs it: the base order turned by ``rep`` places.

    A measurement's place in the order sways it on a shared host (what ran just before, the broker's
    caches and collections): two configurations that differed by 10% swapped places when their order was
    reversed. Turned from one repetition to the next, each part runs in a different place each time
    (every place once in as many repetitions as there are parts), so a median compares like with like."""
    turn = rep % len(plan) if plan else 0
    return plan[turn:] + plan[:turn]


def paired(runs: dict[str, list[dict[str, float]]], mine: str, theirs: str, key: str = "events_per_s") -> list[float]:
    """``mine`` over ``theirs`` in ``key`` (events/s), repetition by repetition (both measured in each)."""
    return [a[key] / b[key] for a, b in zip(runs[mine], runs[theirs], strict=True)]


# ---------------------------------------------------------------------------------------------- parts


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def start_emulator(latency: bool) -> tuple[subprocess.Popen[str], str]:
    args = ["--token", TOKEN, "--workflow", str(WORKFLOW)]
    return emulator_process.spawn([*args, "--latency-field", "bench_produced_ms"] if latency else args)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes | None, int]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000})  # fmt: skip
    for i, (key, value, part) in enumerate(records):
        p.produce(topic, value, key=key, partition=part)
        if i % 50_000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError("not every benchmark event was delivered")


def wait_child(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, Any]:
    """Reap the child and return its exit status and its own resource usage (None when ``poll`` reaped
    it already: it ended by itself, a failure for every child measured here)."""
    if proc.returncode is not None:
        return proc.returncode, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def figures(
    events: int, elapsed: float, usage: Any, peak_rss_mb: float, elapsed_95: float | None = None
) -> dict[str, float]:
    """``usage`` gives CPU time; ru_maxrss is not used, as it counts the parent's pages before exec.
    ``elapsed_95``: until 95% of the events were answered (the floor and the connector)."""
    cpu = usage.ru_utime + usage.ru_stime
    out = {
        "events_per_s": events / elapsed if elapsed > 0 else 0.0,
        "elapsed_s": elapsed,
        "cpu_s_per_million": cpu / events * 1e6,
        "peak_rss_mb": peak_rss_mb,
    }
    if elapsed_95 is not None and elapsed_95 > 0:
        out["events_per_s_to_95pct"] = 0.95 * events / elapsed_95
    return out


def vm_hwm_mb(pid: int) -> float:
    """A process's peak resident memory since its exec (VmHWM), read while it is alive."""
    return proc_status_mb(pid, "VmHWM:")


def vm_rss_mb(pid: int) -> float:
    return proc_status_mb(pid, "VmRSS:")


def proc_status_mb(pid: int, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_script(
    name: str, bootstrap: str, topic: str, group: str, events: int, url: str, batch: int | None = None
) -> dict[str, float]:
    cmd = [PY, "-m", f"tests.benchmark.{name}", "--bootstrap", bootstrap, "--topic", topic, "--group", group,
           "--events", str(events)]  # fmt: skip
    reset_emulator(url)
    if name == "floor":
        cmd += ["--url", url, "--token", TOKEN, "--workflow", str(WORKFLOW)]
        if batch is not None:
            cmd += ["--batch", str(batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    code, usage = wait_child(proc, 900)
    if code != 0:
        raise RuntimeError(f"{name} failed ({code}): {out}")
    got = orjson.loads(out.strip().splitlines()[-1])
    return figures(got["events"], got["elapsed_s"], usage, got["peak_rss_mb"], got.get("elapsed_95_s"))


def knows_per_partition_limit() -> bool:
    """Whether this connector has ``altcraft.max_in_flight_per_partition`` (several requests of one
    partition in flight); before it, a partition had one request in flight at a time."""
    from connector.config import AltcraftSettings

    try:
        AltcraftSettings.model_validate({"token": "t", "max_in_flight_per_partition": 2})
    except pydantic.ValidationError:
        return False
    return True


def connector_config(
    bootstrap: str, topic: str, group: str, url: str, port: int, *, max_items: int = 10_000, max_in_flight: int = 4
) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "altcraft": {"base_url": url, "token": TOKEN, "max_in_flight": max_in_flight},
        "batching": {"max_items": max_items, "max_bytes": 9_000_000, "linger_s": LINGER_S},
        "routes": [{"name": "customers", "topics": [topic], "format": "debezium-json", "workflow_id": WORKFLOW,
                    "db_id": 7, "ops": {"r": "engage"}, "matching": "email",
                    "fields": {**DEMO_FIELDS, "bench_produced_ms": "bench_produced_ms"}}],
        "dead_letter": {"topic": f"{topic}-dlq"},
        "observability": {"host": "127.0.0.1", "port": port, "log_format": "json", "log_level": "WARNING"},
    }  # fmt: skip


@functools.cache
def _local_client() -> httpx.Client:
    return httpx.Client(timeout=5, trust_env=False)


def metrics_page(port: int) -> str:
    """The connector's metrics page, through one client kept for the whole run: ``httpx.get`` builds a
    client per call, and with it a TLS context loading the CA bundle, about 0.1 s of CPU each time. The
    connector was polled every 50 ms around the timed moments, so the benchmark itself took a third of a
    core from the machine while the connector ran, and none while the floor did (measured at
    1,000-item batches: 10 CPU-s per million events more in the benchmark's own process)."""
    return _local_client().get(f"http://127.0.0.1:{port}/metrics").text


def scrape(port: int) -> dict[str, float]:
    text = metrics_page(port)
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def reset_emulator(url: str) -> None:
    """Every part meets the emulator in the same state: empty. What earlier parts stored (a million
    profiles, their engagements, the answers kept for deduplication) would otherwise slow the later
    parts down, and the order of the parts would decide the ratios."""
    httpx.post(f"{url}/_emulator/reset", timeout=60).raise_for_status()


def resolved(metrics: dict[str, float]) -> float:
    """Records the connector is done with: engaged, skipped or dead-lettered."""
    return sum(metrics.get(f"altcraft_connector_records_{k}_total", 0) for k in ("engaged", "skipped", "dead_lettered"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def checkout(root: Path) -> Iterator[None]:
    """Connectors started inside run the code of the checkout at ``root`` (``python -m`` in that
    directory finds its ``connector`` package first), with its own virtualenv's Python when it has one."""
    global ROOT, PY
    saved = ROOT, PY
    own = root / ".venv" / "bin" / "python"
    ROOT, PY = root.resolve(), str(own) if own.exists() else sys.executable
    try:
        yield
    finally:
        ROOT, PY = saved


def start_connector(config: dict[str, Any], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log_file = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen([PY, "-m", "connector.cli", "run", "--config", str(path)], stdout=log_file,
                            stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    log_file.close()
    return proc


def measure_connector(
    bootstrap: str,
    topic: str,
    group: str,
    events: int,
    url: str,
    workdir: Path,
    registry_url: str | None = None,
    *,
    max_items: int = 10_000,
    config: dict[str, Any] | None = None,
    after_reset: Callable[[], None] | None = None,
) -> dict[str, float]:
    """``config``: the connector's settings instead of the usual ones (then ``max_items`` is not used);
    ``after_reset``: called once the emulator was reset, before the connector starts."""
    port = free_port()
    reset_emulator(url)
    if after_reset is not None:
        after_reset()
    if config is None:
        config = connector_config(bootstrap, topic, group, url, port, max_items=max_items)
    else:
        config = {**config, "observability": {**config["observability"], "port": port}}
    if registry_url is not None:
        config["routes"][0]["format"] = "debezium-avro"
        config["schema_registry"] = {"url": registry_url}
    proc = start_connector(config, workdir, group)
    first = None
    done_at = at_95 = None
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                m = scrape(port)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            now = time.monotonic()
            if first is None and m.get("altcraft_connector_records_consumed_total", 0) > 0:
                first = now
            done = resolved(m)
            if at_95 is None and done >= 0.95 * events:
                at_95 = now
            if done >= events:
                done_at = now
                break
            # Rendering and parsing the metrics page takes CPU from the machine being measured: poll
            # often only around the two moments that are timed (the first record and the last ones).
            time.sleep(0.05 if first is None or done >= 0.9 * events else 0.5)
    finally:
        peak = vm_hwm_mb(proc.pid)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        code, usage = wait_child(proc, 120)
    if first is None or done_at is None:
        raise RuntimeError(f"the connector did not finish (exit {code}); see {workdir / group}.log")
    return figures(events, done_at - first, usage, peak, at_95 - first if at_95 is not None else None)


def measure_latency_bound(
    bootstrap: str, topic: str, group: str, url: str, workdir: Path, args: argparse.Namespace
) -> dict[str, float]:
    """One partition, an API taking ``--latency-bound-seconds`` per request, full batches of
    ``--latency-bound-batch`` items, ``--latency-bound-in-flight`` requests in flight: events/s against the
    bound those allow (in flight x batch / latency), and how many requests the emulator saw at once."""
    n = args.latency_bound_in_flight
    config = connector_config(bootstrap, topic, group, url, 0, max_items=args.latency_bound_batch, max_in_flight=n)
    if knows_per_partition_limit():
        config["altcraft"]["max_in_flight_per_partition"] = n

    def slow_api() -> None:  # after the reset measure_connector makes, before the connector starts
        httpx.post(f"{url}/_emulator/faults", json={"latency_s": args.latency_bound_seconds}, timeout=10
                   ).raise_for_status()  # fmt: skip

    try:
        got = measure_connector(bootstrap, topic, group, args.latency_bound_events, url, workdir, config=config,
                                after_reset=slow_api)  # fmt: skip
        stats = httpx.get(f"{url}/_emulator/stats", timeout=30).json()
    finally:
        httpx.post(f"{url}/_emulator/faults", json={"clear": True}, timeout=10)
    limit = n * args.latency_bound_batch / args.latency_bound_seconds
    return {**got, "bound_events_per_s": limit, "to_bound": got["events_per_s"] / limit,
            "requests_in_flight_max": float(stats.get("requests_in_flight_max", 0))}  # fmt: skip


def measure_slow_api(
    bootstrap: str, topic: str, group: str, url: str, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The connector on the whole backlog while every API request takes ``--slow-latency`` seconds:
    its resident memory sampled twice a second, which must level off rather than grow with the backlog."""
    port = free_port()
    httpx.post(f"{url}/_emulator/faults", json={"latency_s": args.slow_latency}, timeout=10).raise_for_status()
    proc = start_connector(connector_config(bootstrap, topic, group, url, port), workdir, group)
    samples: list[tuple[float, float]] = []
    try:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < args.slow_seconds and proc.poll() is None:
            samples.append((elapsed, vm_rss_mb(proc.pid)))
            time.sleep(0.5)
        done = resolved(scrape(port))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        wait_child(proc, 120)
        httpx.post(f"{url}/_emulator/faults", json={"clear": True}, timeout=10)
    peak = max(rss for _, rss in samples)
    quarters = {f"rss_mb_at_{q}pct": next(rss for t, rss in samples if t >= q / 100 * samples[-1][0])
                for q in (25, 50, 75, 100)}  # fmt: skip
    return {"seconds": args.slow_seconds, "request_latency_s": args.slow_latency, "events_resolved": done,
            "peak_rss_mb": peak, **quarters}  # fmt: skip


def measure_latency(bootstrap: str, url: str, args: argparse.Namespace, workdir: Path, tag: str) -> dict[str, Any]:
    """Produce at a steady rate with the production time in each row; the emulator measures when it has
    executed and answered the request carrying it (produced -> acknowledged)."""
    topic = f"bench-latency-{tag}"
    create_topic(bootstrap, topic, args.partitions)
    reset_emulator(url)
    port = free_port()
    proc = start_connector(connector_config(bootstrap, topic, f"lat-{tag}", url, port), workdir, f"lat-{tag}")
    total = int(args.latency_rate * args.latency_seconds)
    stream = generate(total, args.partitions, invalid_share=0.0, seed=2)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the connector must have joined before the clock starts
            try:
                if scrape(port).get("altcraft_connector_assigned_partitions", 0) > 0:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        # Values are encoded before the clock starts, with a fixed-width stamp patched in at send time,
        # so that the producing loop costs little CPU on the machine it shares with what it measures.
        values = [stamped(e.value) for e in stream.events]
        start = time.monotonic()
        for i, (e, template) in enumerate(zip(stream.events, values, strict=True)):
            value = template.replace(STAMP, str(int(time.time() * 1000)).encode(), 1) if template else template
            producer.produce(topic, value, key=e.key, partition=e.partition)
            if i % 100 == 99:  # pace in steps of 100 events
                producer.poll(0)
                delay = start + (i + 1) / args.latency_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        producer.flush(60)
        achieved = total / (time.monotonic() - start)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            m = scrape(port)
            if resolved(m) >= total:
                break
            time.sleep(0.2)
        inside = {name: histogram_quantiles(port, name) for name in (
            "altcraft_connector_batch_latency_seconds", "altcraft_connector_request_duration_seconds",
            "altcraft_connector_commit_duration_seconds")}  # fmt: skip
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        wait_child(proc, 120)
    stats = httpx.get(f"{url}/_emulator/stats", timeout=30).json()
    lat = stats.get("latency") or {}
    return {"rate_target": args.latency_rate, "rate_achieved": achieved, "events": total, **lat,
            "connector_histograms_le_s": inside}  # fmt: skip


def avro_twins(registry: RegistryServer, events: list[Any]) -> Iterator[tuple[bytes, bytes | None, int]]:
    """The same changes as Debezium's Avro converter writes them (the example customer envelope)."""
    schema = load_schema(CUSTOMER_ENVELOPE)
    schema_id = registry.register(CUSTOMER_SUBJECT, schema)
    parsed = fastavro.parse_schema(schema)
    epoch = dt.date(1970, 1, 1)

    def row(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        days = (dt.date.fromisoformat(r["birth_date"]) - epoch).days
        kept = {k: r.get(k) for k in ("email", "first_name", "last_name", "phone", "city")}
        return {"id": r["id"], "birth_date": days, **kept}

    for e in events:
        if e.value is None:
            yield e.key, None, e.partition
            continue
        doc = orjson.loads(e.value)
        change = customer_change(doc["op"], row(doc.get("before")), row(doc.get("after")), doc["ts_ms"])
        yield e.key, encode(schema_id, parsed, change), e.partition


STAMP = b"1000000000000"  # 13 digits, like a Unix time in ms


def stamped(value: bytes | None) -> bytes | None:
    """The event with a ``bench_produced_ms`` placeholder in its row."""
    if value is None:
        return None
    doc = orjson.loads(value)
    if not doc.get("after"):
        return value
    doc["after"]["bench_produced_ms"] = int(STAMP)
    return orjson.dumps(doc)


def histogram_quantiles(port: int, name: str) -> dict[str, float]:
    """Upper bucket bounds holding the median and the 99th percentile of a connector histogram."""
    text = metrics_page(port)
    buckets: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == name + "_bucket":
                le = float(smp.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + smp.value
    ordered = sorted(buckets.items())
    count = ordered[-1][1] if ordered else 0.0
    out = {}
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        out[label] = next((le for le, c in ordered if count and c >= q * count), float("nan"))
    return out


def medians(rs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rs) for k in rs[0]}


def print_table(
    summary: dict[str, dict[str, float]],
    ratios: dict[str, float],
    per_repetition: dict[str, list[float]],
    latency: Any,
    slow: Any,
    latency_bound: Any,
    args: Any,
) -> None:
    print()
    print(f"{args.events} events over {args.partitions} partitions, medians of {args.reps} repetitions")
    print(f"{'':16} {'events/s':>12} {'CPU s / M events':>18} {'peak RSS MB':>12}")
    names = {
        "ceiling": "ceiling",
        "floor": "floor",
        "connector": "connector",
        "connector_avro": "connector_avro",
        "floor_small": f"floor {args.small_batch}",
        "connector_small": f"connector {args.small_batch}",
        "connector_alo": "  at-least-once",
        "connector_small_alo": f"  at-least-once {args.small_batch}",
        "against": "against",
        "against_avro": "against_avro",
        "against_small": f"against {args.small_batch}",
    }
    for key, name in names.items():
        if key in summary:
            r = summary[key]
            print(f"{name:16} {r['events_per_s']:>12,.0f} {r['cpu_s_per_million']:>18.1f} {r['peak_rss_mb']:>12.0f}")

    def spread(name: str) -> str:
        values = per_repetition[name]
        return f"{ratios[name]:.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")

    def steady(name: str) -> str:
        return f"; up to 95% answered {spread(name + '_to_95pct')}" if name + "_to_95pct" in ratios else ""

    print(f"{'':16} ratios: medians of the repetitions' own (their range)")
    print(f"connector / floor   {spread('connector_to_floor')} (10,000-item requests){steady('connector_to_floor')}")
    print(f"connector / ceiling {spread('connector_to_ceiling')}")
    if "connector_small_to_floor_small" in ratios:
        print(f"connector / floor   {spread('connector_small_to_floor_small')} ({args.small_batch:,}-item requests)"
              f"{steady('connector_small_to_floor_small')}")  # fmt: skip
    if args.against is not None:
        print(f"against: the connector of {args.against}, measured in the same repetitions")
        for mine, theirs, size, floor_of in (
            ("connector", "against", 10_000, "floor"),
            ("connector_small", "against_small", args.small_batch, "floor_small"),
        ):
            if f"{theirs}_to_{floor_of}" in ratios:
                print(f"  {size:,}-item requests: against / floor {spread(f'{theirs}_to_{floor_of}')}, "
                      f"connector / against {spread(f'{mine}_to_{theirs}')}")  # fmt: skip
    for label, size in (("exactly_once_cost", 10_000), ("exactly_once_cost_small", args.small_batch)):
        if label in ratios:
            print(f"exactly-once dead letters cost {ratios[label]:.0%} of the throughput and "
                  f"{ratios[label + '_cpu']:+.0%} CPU per event ({size:,}-item requests; transactions at the "
                  "commit cadence, against dead_letter.exactly_once: false)")  # fmt: skip
    for who, what in (("floor", FLOOR_GUARANTEES), ("connector", CONNECTOR_GUARANTEES)):
        print(
            textwrap.fill(
                what, 110, initial_indent=f"{'guarantees of the ' + who + ':':30}", subsequent_indent=" " * 30
            )
        )
    if latency_bound:
        b = latency_bound
        per_partition = (f"{b['max_in_flight_per_partition']} per partition" if b["max_in_flight_per_partition"]
                         else "one per partition: the connector has no max_in_flight_per_partition yet")  # fmt: skip
        print(
            f"latency-bound: 1 partition, {b['request_latency_s']} s per request, {b['batch']:,}-item batches, "
            f"{b['max_in_flight']} in flight ({per_partition})"
        )
        print(
            f"  {b['events_per_s']:,.0f} events/s = {b['to_bound']:.2f} of the bound {b['bound_events_per_s']:,.0f} "
            f"events/s ({b['max_in_flight']} x {b['batch']:,} / {b['request_latency_s']} s); at most "
            f"{b['requests_in_flight_max']:.0f} requests at once at the API"
        )
        print(f"  {b['events']:,} events, {b['update_share']:.0%} of them updates of 1,000,000 existing customers, "
              f"the others new: {b['batches_overlapping_earlier_in_flight']} of {b['batches']} batches share a "
              f"profile with one of the {b['max_in_flight'] - 1} before them")  # fmt: skip
    if latency:
        p50, p99 = latency.get("p50_ms", float("nan")), latency.get("p99_ms", float("nan"))
        print(f"end-to-end latency at {latency['rate_achieved']:,.0f} events/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    if slow:
        print(f"whole backlog, {slow['request_latency_s']} s per request, {slow['seconds']:.0f} s: peak RSS "
              f"{slow['peak_rss_mb']:.0f} MB; at 25/50/75/100% of the time "
              + "/".join(f"{slow[f'rss_mb_at_{q}pct']:.0f}" for q in (25, 50, 75, 100)) + " MB")  # fmt: skip
    print(f"results written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
