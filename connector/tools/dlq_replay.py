"""``altcraft-connector dlq replay``: send selected dead letters through their route again.

Each selected letter goes the way its record went the first time, with today's settings: the route of
its source topic (from its provenance headers) decodes it, applies the op policy and the mapping
(:meth:`~connector.routing.Route.prepare`), and :class:`~connector.sink.client.AltcraftClient` sends
the items in batches of at most ``batching.max_items`` with the route's mode (engage, engage-task or
import), retrying, splitting and bisecting as the connector does.

**Request-IDs come from the dead letters' own position.** A group is the selected letters of one route
within one aligned window of ``batching.max_items`` offsets of one dead-letter partition; its key is
derived from the dead-letter topic, the partition, the offsets of the letters it carries, the route
and ``altcraft.request_id_epoch`` (:func:`replay_request_id`). Replaying the same letters again (same
selection, same settings) sends the same groups under the same keys, which Altcraft answers as
duplicates for its deduplication window: nobody is engaged twice. Aligned windows keep the groups of
later letters the same when ``--since`` moves. Two replays with different selections form different
groups; a letter replayed by both is sent under two keys (said in the README).

**Each record once per run.** The connector may dead-letter a record more than once (with
``dead_letter.exactly_once: false``): only its first letter is replayed. A letter written by
``--dead-letter-again`` names the letter it replaces (``altcraft.replay.of``); it is replayed on its
own, in a group apart from the older letters of its window (whose groups and keys it leaves as they
were), while the letter it replaces no longer counts. If that one was sent by the earlier replay
(Altcraft rejected it), it is still sent in its old group, whose key then stays the same and whose
answer is replayed as a duplicate, but its answer is not counted: without it the group would change,
get a new key, and engage its other letters again.

What is not sent: letters whose value was cut when dead-lettered (``altcraft.dead_letter.truncated``),
letters without provenance headers or of a topic no route reads, and records the route now skips
(deletes, tombstones). Letters that fail again (decode, op, map, size) or that Altcraft rejects are
reported, and written to the dead-letter topic again only with ``--dead-letter-again``. A halt (a
configuration fault: 401, 404, ...) stops the replay: the connector would wait it out, a one-shot
command says so and ends.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from prometheus_client import CollectorRegistry

from connector.config import Mode, RouteSettings, Settings, kafka_common_props
from connector.decode import build_decoder, open_registry
from connector.dlq import DeadLetters
from connector.errors import TransientError
from connector.metrics import Metrics
from connector.models import ImportItem, Reason, SendOutcome
from connector.routing import Route
from connector.sink.client import Abandoned, AltcraftClient, SendJob
from connector.sink.halt import HaltState
from connector.tools.dlq_inspect import letter_of
from connector.tools.kafka_admin import KafkaTools
from connector.tools.letters import REPLAY_OF_HEADER, DeadLetter, Selection, first_per_source, printable
from connector.tools.progress import Progress

SHOWN_FAILURES = 20  # letters listed one by one under "still failing"
EXAMPLE_WIDTH = 160
DELIVERY_GRACE_S = 10.0  # beyond dead_letter.delivery_timeout_s, for the dead letters written again


# ------------------------------------------------------------------------------------ pure: keys and groups


def offset_ranges(offsets: Sequence[int]) -> str:
    """Sorted offsets as compact ranges: ``[3, 4, 5, 7]`` -> ``"3-5,7"``."""
    parts: list[str] = []
    start = prev = None
    for off in sorted(offsets):
        if prev is not None and off == prev + 1:
            prev = off
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = off
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts)


def replay_request_id(
    group_id: str,
    route: RouteSettings,
    dlq_topic: str,
    partition: int,
    offsets: Sequence[int],
    epoch: str = "",
    imports: bool = False,
) -> str:
    """Deterministic key of a replayed group: the same dead letters replayed to the same route always give
    the same key. Built like :func:`connector.replay.request_id`, from the dead letters' position
    instead of the source records': the dead-letter topic (never a source topic), its partition and the
    letters' offsets (each one: two selections sharing a first and last offset but not the letters in
    between must not share a key, or the second would get the first one's answer). ``imports``: the
    group imports without engaging (an op or ``otherwise`` of the route imports these records)."""
    mode = Mode.IMPORT if imports else route.mode
    target = route.db_id if mode is Mode.IMPORT else route.workflow_id
    parts: tuple[object, ...] = ("replay", group_id, route.name, mode.value, target, dlq_topic, partition,
                                 offset_ranges(offsets))  # fmt: skip
    if epoch:
        parts += (f"epoch={epoch}",)
    text = "\x1f".join(str(p) for p in parts)
    return "akc-replay-" + hashlib.sha256(text.encode()).hexdigest()[:40]


IMPORTS = "#import"  # after a route's name: the group imports without engaging (profiles/import_batch)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A dead letter its route turned into an item to send again.

    ``ballast``: a letter a newer one replaces, sent only so that its group keeps the items, and the key,
    of the earlier replay that sent it; its answer is not counted."""

    letter: DeadLetter
    route: str
    item: bytes
    ballast: bool = False


COPY = "a later copy of a dead letter already counted (the same source record)"
REPLACED = "replaced by a newer dead letter (--dead-letter-again)"
RESENT = "replaced by a newer dead letter, resent in its first group to keep its Request-ID"

Position = tuple[int, int]  # (partition, offset) in the dead-letter topic


def choose(
    selected: Sequence[DeadLetter], replaced: Mapping[Position, set[str]]
) -> tuple[list[DeadLetter], set[Position], Counter[str]]:
    """The letters to prepare, those of them that are ballast, and the letters left out by reason.

    ``replaced``: the positions that letters written by ``--dead-letter-again`` replace, with the stages
    those newer letters name (``api``: the replaced letter was sent, and refused)."""
    chosen, copies = first_per_source(selected)
    skipped: Counter[str] = Counter()
    if copies:
        skipped[COPY] = len(copies)
    keep: list[DeadLetter] = []
    ballast: set[Position] = set()
    for letter in chosen:
        stages = replaced.get((letter.partition, letter.offset))
        if stages is None:
            keep.append(letter)
        elif "api" in stages:
            keep.append(letter)
            ballast.add((letter.partition, letter.offset))
        else:
            skipped[REPLACED] += 1
    return keep, ballast, skipped


@dataclass(frozen=True, slots=True)
class ReplayGroup:
    """One request's worth of letters: one route, one window of one dead-letter partition."""

    route: str
    partition: int
    candidates: tuple[Candidate, ...]
    request_id: str

    @property
    def offsets(self) -> list[int]:
        return [c.letter.offset for c in self.candidates]

    @property
    def items(self) -> list[bytes]:
        return [c.item for c in self.candidates]


KeyOf = Callable[[str, int, Sequence[int]], str]  # (route, partition, offsets) -> Request-ID


def plan_groups(
    candidates: Sequence[Candidate], *, max_items: int, max_bytes: int, overheads: Mapping[str, int], key: KeyOf
) -> list[ReplayGroup]:
    """Cut ``candidates`` into groups: per dead-letter partition, per window of ``max_items`` offsets
    aligned on multiples of ``max_items``, per route; a group that would exceed ``max_bytes`` as sent is
    cut before the item that would take it past. Ordered by partition and first offset."""
    # A letter written by --dead-letter-again is grouped apart from the older letters of its window: it may
    # land in a window that holds some (offsets are not contiguous: transaction markers take some), and
    # joining their group would change its key, so that a second replay engaged them again.
    windows: dict[tuple[int, int, str, bool], list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: (c.letter.partition, c.letter.offset)):
        window = (c.letter.partition, c.letter.offset // max_items, c.route, c.letter.replay_of is not None)
        windows.setdefault(window, []).append(c)
    groups: list[ReplayGroup] = []
    for (partition, _window, route, _again), members in windows.items():
        current: list[Candidate] = []
        size = overheads.get(route, 0)
        for c in members:
            grown = size + len(c.item) + (1 if current else 0)
            if current and grown > max_bytes:
                groups.append(_group(route, partition, current, key))
                current, grown = [], overheads.get(route, 0) + len(c.item)
            current.append(c)
            size = grown
        if current:
            groups.append(_group(route, partition, current, key))
    groups.sort(key=lambda g: (g.partition, g.candidates[0].letter.offset, g.route))
    return groups


def _group(route: str, partition: int, members: list[Candidate], key: KeyOf) -> ReplayGroup:
    offsets = [c.letter.offset for c in members]
    return ReplayGroup(route, partition, tuple(members), key(route, partition, offsets))


# ------------------------------------------------------------------------------------ pure: outcomes


@dataclass(slots=True)
class Summary:
    """What became of the selected dead letters."""

    read: int = 0
    selected: int = 0
    to_send: int = 0
    groups: int = 0
    requests: int = 0
    duplicate_requests: int = 0
    engaged: int = 0  # accepted in requests Altcraft executed, engage modes
    imported: int = 0  # the same, import mode
    already: int = 0  # accepted in answers Altcraft replayed as duplicates: an earlier replay sent them
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    failing: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # a message per failing label
    failures: list[tuple[DeadLetter, Reason]] = field(default_factory=list)  # failed again or rejected
    not_sent: int = 0  # prepared, but the replay stopped before sending them
    stopped: str | None = None  # why the replay stopped early
    dead_lettered_again: int = 0
    dead_letters_unconfirmed: int = 0

    def fail(self, letter: DeadLetter, reason: Reason) -> None:
        label = f"{reason.stage} {reason.exception}"
        self.failing[label] += 1
        self.examples.setdefault(label, reason.message)
        self.failures.append((letter, reason))

    def reject(self, letter: DeadLetter, reason: Reason) -> None:
        self.rejected[f"{reason.api_code} {printable(reason.api_text or '', 60)}"] += 1
        self.failures.append((letter, reason))

    def take(self, group: ReplayGroup, outcome: SendOutcome, mode: Mode) -> None:
        """Count one group's outcome (ballast items aside); its rejected items become failures with
        Altcraft's reason."""
        self.requests += outcome.requests
        self.duplicate_requests += outcome.duplicates
        refused = {rej.index for rej in outcome.rejected}
        accepted = sum(1 for i, c in enumerate(group.candidates) if i not in refused and not c.ballast)
        if outcome.duplicates and outcome.duplicates == outcome.requests:
            self.already += accepted
        elif mode is Mode.IMPORT:
            self.imported += accepted
        else:
            self.engaged += accepted
        for rej in outcome.rejected:
            candidate = group.candidates[rej.index]
            if candidate.ballast:
                continue
            text = f"Altcraft error {rej.code}: {rej.text}"
            reason = Reason("api", "AltcraftRejected", text, rej.code, rej.text, outcome.request_id, rej.debug or None)
            self.reject(candidate.letter, reason)

    @property
    def still_failing(self) -> int:
        return sum(self.failing.values()) + self.not_sent

    @property
    def ok(self) -> bool:
        return not self.still_failing and not self.rejected and self.stopped is None


def _counts(counter: Counter[str]) -> str:
    return "; ".join(f"{label}: {n}" for label, n in counter.most_common())


def render_summary(topic: str, s: Summary, *, dry_run: bool) -> list[str]:
    """The closing report, as lines."""
    lines = [f"dlq replay of {topic}{' (dry run: nothing sent)' if dry_run else ''}:",
             f"  read            {s.read} dead letter(s); selected {s.selected}"]  # fmt: skip
    if dry_run:
        lines.append(f"  would replay    {s.to_send} in {s.groups} request(s)")
    else:
        sent = s.to_send - s.not_sent
        lines.append(f"  replayed        {sent} in {s.groups} group(s), {s.requests} request(s)")
        lines.append(f"  engaged         {s.engaged}")
        if s.imported:
            lines.append(f"  imported        {s.imported} (import routes: not engaged)")
        lines.append(f"  already done    {s.already} (answered as duplicates of an earlier replay: nobody engaged "
                     f"again)")  # fmt: skip
        lines.append(f"  rejected        {sum(s.rejected.values())}" + (f"  ({_counts(s.rejected)})" if s.rejected
                                                                          else ""))  # fmt: skip
    lines.append(f"  skipped         {sum(s.skipped.values())}" + (f"  ({_counts(s.skipped)})" if s.skipped else ""))
    failing = Counter(s.failing)
    if s.not_sent:
        failing[f"not sent: {s.stopped or 'stopped'}"] += s.not_sent
    lines.append(f"  still failing   {s.still_failing}" + (f"  ({_counts(failing)})" if failing else ""))
    for label, example in s.examples.items():
        lines.append(f"    {label}, e.g.: {printable(example, EXAMPLE_WIDTH)}")
    if s.dead_lettered_again or s.dead_letters_unconfirmed:
        lines.append(f"  dead-lettered again {s.dead_lettered_again} (new letters in {topic})"
                     + (f"; {s.dead_letters_unconfirmed} NOT confirmed by Kafka" if s.dead_letters_unconfirmed
                        else ""))  # fmt: skip
    if s.stopped:
        lines.append(f"  stopped early: {s.stopped}")
    return lines


def render_failures(
    topic: str, failures: Sequence[tuple[DeadLetter, Reason]], limit: int = SHOWN_FAILURES
) -> list[str]:
    """The letters that failed again or were rejected, one per line, at most ``limit``."""
    if not failures:
        return []
    lines = ["what still fails (dead letter, source, why):"]
    for letter, reason in failures[:limit]:
        src = letter.source
        where = f"{src[0]}[{src[1]}]@{src[2]}" if src else "?"
        lines.append(f"  {topic}[{letter.partition}]@{letter.offset}  {printable(where, 120)}  {reason.stage} "
                     f"{reason.exception}: {printable(reason.message, EXAMPLE_WIDTH)}")  # fmt: skip
    if len(failures) > limit:
        lines.append(f"  ... and {len(failures) - limit} more")
    return lines


def render_plan(topic: str, groups: Sequence[ReplayGroup]) -> list[str]:
    lines = [f"planned requests ({len(groups)}):"]
    for g in groups:
        size = sum(len(i) for i in g.items) + max(0, len(g.items) - 1)
        lines.append(f"  route {g.route}  {topic}[{g.partition}] offsets {offset_ranges(g.offsets)}  "
                     f"{len(g.items)} item(s), {size} bytes  Request-ID {g.request_id}")  # fmt: skip
    return lines


# ------------------------------------------------------------------------------------ preparing letters


class _Routes:
    """The compiled routes, built on first use (an Avro route connects to its registry when built)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._by_name: dict[str, Route] = {}
        self._registry = open_registry(settings.schema_registry, settings.routes)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def of_topic(self, topic: str) -> Route | None:
        try:
            rs = self._settings.route_for(topic)
        except KeyError:
            return None
        route = self._by_name.get(rs.name)
        if route is None:
            decoder = build_decoder(rs, self._registry)
            route = self._by_name[rs.name] = Route(rs, self._settings.altcraft.max_body_bytes, decoder)
        return route

    def get(self, name: str) -> Route:
        return self._by_name[name.removesuffix(IMPORTS)]

    @property
    def overheads(self) -> dict[str, int]:
        out = {name: r.shape.overhead for name, r in self._by_name.items()}
        out.update({name + IMPORTS: r.import_shape.overhead for name, r in self._by_name.items() if r.import_shape})
        return out


def prepare(
    letters: Sequence[DeadLetter], routes: _Routes, summary: Summary, ballast: set[Position] | None = None
) -> list[Candidate]:
    """Each letter through its route: an item to send, or a skip or failure counted in ``summary``.
    A ballast letter that becomes no item is only counted as replaced."""
    out: list[Candidate] = []
    for letter in letters:
        if ballast and (letter.partition, letter.offset) in ballast:
            item = _ballast_item(letter, routes)
            if item is None:
                summary.skipped[REPLACED] += 1
            else:
                summary.skipped[RESENT] += 1
                out.append(item)
            continue
        src = letter.source
        if src is None:
            summary.skipped["no provenance headers (not a dead letter of this connector)"] += 1
            continue
        if letter.truncated:
            summary.skipped["value truncated when dead-lettered"] += 1
            continue
        route = routes.of_topic(src[0])
        if route is None:
            summary.skipped[f"no route reads topic {printable(src[0], 80)}"] += 1
            continue
        try:
            prepared = route.prepare(letter.value)
        except TransientError as exc:
            summary.fail(letter, Reason("decode", type(exc).__name__, f"transient: {exc}"))
            continue
        if isinstance(prepared, bytes):
            out.append(Candidate(letter, route.name, prepared))
        elif isinstance(prepared, ImportItem):
            out.append(Candidate(letter, route.name + IMPORTS, prepared.item))
        elif prepared.skip is not None:
            summary.skipped[prepared.skip] += 1
        elif prepared.dead is not None:
            summary.fail(letter, prepared.dead)
    return out


def _ballast_item(letter: DeadLetter, routes: _Routes) -> Candidate | None:
    route = routes.of_topic(letter.source[0]) if letter.source and not letter.truncated else None
    if route is None:
        return None
    try:
        prepared = route.prepare(letter.value)
    except TransientError:
        return None
    if isinstance(prepared, ImportItem):
        return Candidate(letter, route.name + IMPORTS, prepared.item, ballast=True)
    return Candidate(letter, route.name, prepared, ballast=True) if isinstance(prepared, bytes) else None


# ------------------------------------------------------------------------------------ I/O


def _send(client: AltcraftClient, job: SendJob, halt: HaltState, on_wait: Callable[[], None]) -> SendOutcome | str:
    """Send one group in a worker thread; the outcome, or why it stopped (a halt). Ctrl-C cancels it."""
    cancel = threading.Event()
    result: list[SendOutcome | BaseException] = []

    def work() -> None:
        try:
            result.append(client.send(job, cancel))
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    thread = threading.Thread(target=work, name="replay-sender", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
            reasons = halt.reasons()
            if reasons:
                cancel.set()
                thread.join()
                return "halted: " + "; ".join(f"{k} ({v})" for k, v in sorted(reasons.items()))
            on_wait()
    except KeyboardInterrupt:
        cancel.set()
        thread.join()
        raise
    outcome = result[0]
    if isinstance(outcome, Abandoned):
        return "abandoned"
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _dead_letter_again(settings: Settings, failures: Sequence[tuple[DeadLetter, Reason]], summary: Summary) -> None:
    """Write each failure to the dead-letter topic again, as the connector would have: the source record's
    key, value, original headers and timestamp, its source position, the new stage and reason, and
    ``altcraft.replay.of`` naming the letter it replaces. Waits for the broker's confirmations."""
    topic = settings.dead_letter.topic
    props: dict[str, Any] = {**kafka_common_props(settings), **settings.kafka.producer}
    props.setdefault("message.timeout.ms", int(settings.dead_letter.delivery_timeout_s * 1000))
    writer = DeadLetters(props, topic, clock=time.monotonic)
    confirmed = [0]

    def done() -> None:
        confirmed[0] += 1

    for letter, reason in failures:
        src = letter.source
        assert src is not None  # only letters with a source are prepared and sent
        headers: list[tuple[str, str | bytes | None]] = [
            *letter.original_headers,
            (REPLAY_OF_HEADER, f"{topic}/{letter.partition}/{letter.offset}".encode()),
        ]
        ts = (TIMESTAMP_CREATE_TIME, letter.timestamp_ms) if letter.timestamp_ms is not None else (0, 0)
        msg = Message(topic=src[0], partition=src[1], offset=src[2], key=letter.key, value=letter.value,
                      headers=headers, timestamp=ts)  # fmt: skip
        writer.publish(msg, reason, done)
    deadline = time.monotonic() + settings.dead_letter.delivery_timeout_s + DELIVERY_GRACE_S
    while confirmed[0] < len(failures) and time.monotonic() < deadline:
        writer.poll()
        writer.flush(0.2)
    writer.poll()
    summary.dead_lettered_again = confirmed[0]
    summary.dead_letters_unconfirmed = len(failures) - confirmed[0]


def run_replay(
    settings: Settings,
    *,
    since_ms: int | None,
    selection: Selection,
    dry_run: bool,
    dead_letter_again: bool,
    out: TextIO,
    err: TextIO,
    progress_every_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    transport: Any = None,
) -> int:
    """Replay the selected dead letters; the report goes to ``out``, progress to ``err``. Exit code 0 when
    everything selected went through (or was skipped on purpose), 1 when something still fails, 130 on
    Ctrl-C. ``transport``: an httpx transport for tests."""
    topic = settings.dead_letter.topic
    summary = Summary()
    progress = Progress(err.write, progress_every_s, clock)
    selected, replaced = _select(settings, since_ms, selection, summary, progress)
    chosen, ballast, skipped = choose(selected, replaced)
    summary.skipped.update(skipped)
    routes = _Routes(settings)
    try:
        candidates = prepare(chosen, routes, summary, ballast)
        groups = plan_groups(
            candidates,
            max_items=settings.batching.max_items,
            max_bytes=settings.batching.max_bytes,
            overheads=routes.overheads,
            key=lambda route, partition, offsets: replay_request_id(
                settings.kafka.group_id, routes.get(route).settings, topic, partition, offsets,
                settings.altcraft.request_id_epoch, imports=route.endswith(IMPORTS),
            ),
        )  # fmt: skip
        summary.to_send = sum(1 for c in candidates if not c.ballast)
        summary.groups = len(groups)
        if dry_run:
            lines = [*render_plan(topic, groups), "", *render_summary(topic, summary, dry_run=True)]
            lines += ["", *render_failures(topic, summary.failures)] if summary.failures else []
            out.write("\n".join(lines) + "\n")
            return 0 if summary.ok else 1
        code = _send_all(settings, routes, groups, summary, progress, transport)
    finally:
        routes.close()
    if dead_letter_again and summary.failures:
        _dead_letter_again(settings, summary.failures, summary)
    lines = render_summary(topic, summary, dry_run=False)
    lines += ["", *render_failures(topic, summary.failures)] if summary.failures else []
    if summary.failures and not dead_letter_again:
        lines.append("(they stay where they are; --dead-letter-again writes them to the dead-letter topic again)")
    out.write("\n".join(lines) + "\n")
    if code:
        return code
    return 0 if summary.ok else 1


def _select(
    settings: Settings, since_ms: int | None, selection: Selection, summary: Summary, progress: Progress
) -> tuple[list[DeadLetter], dict[Position, set[str]]]:
    """Read the dead-letter topic: the selected letters, and what every letter written by
    ``--dead-letter-again`` replaces (selected or not), with the stages they name."""
    topic = settings.dead_letter.topic
    selected: list[DeadLetter] = []
    replaced: dict[Position, set[str]] = {}
    with KafkaTools(settings) as kafka:
        ranges = kafka.ranges(topic, since_ms)
        total = sum(b - a for a, b in ranges.values())
        for msg in kafka.read(topic, ranges):
            letter = letter_of(msg)
            summary.read += 1
            if letter.replay_of is not None and letter.replay_of[0] == topic:
                replaced.setdefault(letter.replay_of[1:], set()).add(letter.stage)
            if selection.matches(letter):
                selected.append(letter)
            progress(lambda: f"dlq replay: read {summary.read} of about {total} dead letters")
    summary.selected = len(selected)
    return selected, replaced


def _send_all(
    settings: Settings,
    routes: _Routes,
    groups: Sequence[ReplayGroup],
    summary: Summary,
    progress: Progress,
    transport: Any,
) -> int:
    """Send every group in order; stop at a halt or Ctrl-C (the rest counted as not sent)."""
    if not groups:
        return 0
    halt = HaltState()
    client = AltcraftClient(settings.altcraft, settings.token(), Metrics(CollectorRegistry()), halt,
                            transport=transport)  # fmt: skip
    done = 0

    def line() -> str:
        return (f"dlq replay: {done}/{len(groups)} request group(s) done; engaged {summary.engaged}, already done "
                f"{summary.already}, rejected {sum(summary.rejected.values())}, still failing "
                f"{sum(summary.failing.values())}")  # fmt: skip

    try:
        for i, group in enumerate(groups):
            route = routes.get(group.route)
            if group.route.endswith(IMPORTS) and route.import_shape is not None:
                job = SendJob(route.name, Mode.IMPORT, route.import_shape, group.items, group.request_id)
            else:
                job = SendJob(route.name, route.settings.mode, route.shape, group.items, group.request_id)
            try:
                outcome = _send(client, job, halt, lambda: progress(line))
            except KeyboardInterrupt:
                summary.stopped = "interrupted (Ctrl-C)"
                summary.not_sent = sum(len(g.candidates) for g in groups[i:])
                return 130
            if isinstance(outcome, str):
                summary.stopped = outcome
                summary.not_sent = sum(len(g.candidates) for g in groups[i:])
                return 1
            summary.take(group, outcome, route.settings.mode)
            done += 1
            progress(line)
    finally:
        client.close()
    return 0
