"""dlq replay without a broker: keys from the dead letters' position, groups that stay the same when the
selection's start moves, each letter through its route, and a second replay engaging nobody."""

from __future__ import annotations

import io
from typing import Any

import httpx
import orjson
import pytest

from connector.config import Mode, RouteSettings, Settings
from connector.models import ItemRejection, Reason, SendOutcome
from connector.tools.dlq_replay import (
    COPY,
    REPLACED,
    RESENT,
    Candidate,
    Summary,
    _Routes,
    _send_all,
    choose,
    offset_ranges,
    plan_groups,
    prepare,
    render_summary,
    replay_request_id,
)
from connector.tools.letters import DeadLetter, parse_letter
from connector.tools.progress import Progress

TOPIC = "cdc.customers"
UNROUTED = [("__connect.errors.partition", b"0"), ("__connect.errors.offset", b"1")]
DLQ = "dlq"


def settings(**routes: Any) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"group_id": "g"},
            "altcraft": {"base_url": "http://altcraft.test", "token": "secret-token",
                         "retry": {"initial_backoff_s": 0.001, "max_backoff_s": 0.01}},
            "batching": {"max_items": 4},
            "routes": [{"name": "customers", "topics": [TOPIC], "format": "json", "workflow_id": 7, "db_id": 7,
                        "fields": {"email": "email"}, **routes}],
            "dead_letter": {"topic": DLQ},
        }
    )  # fmt: skip


def dead(
    offset: int, value: bytes | None, *, partition: int = 0, source: int | None = None, **extra: bytes
) -> DeadLetter:
    headers = [("__connect.errors.topic", TOPIC.encode()), ("__connect.errors.partition", b"0"),
               ("__connect.errors.offset", str(offset if source is None else source).encode()),
               ("__connect.errors.stage", b"map"), ("__connect.errors.exception.class.name", b"MappingError"),
               ("__connect.errors.exception.message", b"missing matching field 'email'"), *extra.items()]  # fmt: skip
    return parse_letter(partition, offset, 1_700_000_000_000, b"k", value, headers)


def route(**kw: Any) -> RouteSettings:
    return RouteSettings.model_validate({"name": "r", "topics": ["t"], "workflow_id": 7, "db_id": 7, **kw})


def cand(offset: int, partition: int = 0, route_name: str = "r", size: int = 10) -> Candidate:
    return Candidate(dead(offset, b"{}", partition=partition), route_name, b"x" * size)


def key(route_name: str, partition: int, offsets: Any) -> str:
    return f"{route_name}/{partition}/{offset_ranges(offsets)}"


# ------------------------------------------------------------------------------------ keys


def test_offsets_are_written_as_compact_ranges() -> None:
    assert offset_ranges([7, 3, 4, 5]) == "3-5,7"
    assert offset_ranges([1]) == "1"
    assert offset_ranges([]) == ""


def test_the_same_dead_letters_always_get_the_same_key_and_any_difference_another() -> None:
    r = route()
    one = replay_request_id("g", r, DLQ, 0, [3, 4, 5])
    assert one == replay_request_id("g", r, DLQ, 0, [5, 4, 3])
    assert one.startswith("akc-replay-")
    others = {
        replay_request_id("g", r, DLQ, 0, [3, 5]),  # same first and last, not the same letters
        replay_request_id("g", r, DLQ, 1, [3, 4, 5]),
        replay_request_id("g", r, "other-dlq", 0, [3, 4, 5]),
        replay_request_id("g2", r, DLQ, 0, [3, 4, 5]),
        replay_request_id("g", route(workflow_id=8), DLQ, 0, [3, 4, 5]),
        replay_request_id("g", r, DLQ, 0, [3, 4, 5], epoch="2"),
    }
    assert one not in others and len(others) == 6


# ------------------------------------------------------------------------------------ groups


def test_groups_are_aligned_windows_per_partition_and_route() -> None:
    cands = [cand(o) for o in (1, 2, 3, 5, 9)] + [cand(2, partition=1), cand(6, route_name="s")]
    groups = plan_groups(cands, max_items=4, max_bytes=10_000, overheads={}, key=key)
    assert [g.request_id for g in groups] == ["r/0/1-3", "r/0/5", "s/0/6", "r/0/9", "r/1/2"]


def test_a_letter_written_again_does_not_join_the_group_of_older_letters_in_its_window() -> None:
    older = [cand(o) for o in (15, 16)]  # the window 15-19 (transaction markers took offsets 5 and 11)
    again = Candidate(dead(18, b"{}", **{"altcraft.replay.of": b"dlq/0/3"}), "r", b"x" * 10)
    first = plan_groups(older, max_items=5, max_bytes=10_000, overheads={}, key=key)
    second = plan_groups([*older, again], max_items=5, max_bytes=10_000, overheads={}, key=key)
    assert [g.request_id for g in first] == ["r/0/15-16"]
    assert [g.request_id for g in second] == ["r/0/15-16", "r/0/18"], "the older letters keep their key"


def test_a_later_start_changes_only_the_first_window() -> None:
    everything = plan_groups([cand(o) for o in range(0, 12)], max_items=4, max_bytes=10_000, overheads={}, key=key)
    later = plan_groups([cand(o) for o in range(6, 12)], max_items=4, max_bytes=10_000, overheads={}, key=key)
    assert [g.request_id for g in everything] == ["r/0/0-3", "r/0/4-7", "r/0/8-11"]
    assert [g.request_id for g in later] == ["r/0/6-7", "r/0/8-11"]


def test_a_group_is_cut_before_the_item_that_would_take_it_past_max_bytes() -> None:
    groups = plan_groups([cand(o, size=40) for o in range(4)], max_items=4, max_bytes=100, overheads={"r": 10},
                         key=key)  # fmt: skip
    assert [g.request_id for g in groups] == ["r/0/0-1", "r/0/2-3"]  # 10 + 40 + 1 + 40 = 91; a third is 132


# ------------------------------------------------------------------------------------ each letter through its route


def test_each_letter_goes_through_todays_route() -> None:
    s = settings(ops={"d": "skip"})
    letters = [
        dead(0, orjson.dumps({"email": "a@example.com", "name": "x"})),
        dead(1, orjson.dumps({"name": "still no email"})),
        dead(2, orjson.dumps({"__op": "d", "email": "b@example.com"})),
        dead(3, b"{}" * 10, **{"altcraft.dead_letter.truncated": b"true"}),
        parse_letter(0, 4, None, None, b"{}", [("no", b"provenance")]),
        parse_letter(0, 5, None, None, b"{}", [("__connect.errors.topic", b"unrouted"), *UNROUTED]),
    ]
    summary = Summary()
    routes = _Routes(s)
    candidates = prepare(letters, routes, summary)
    assert [(c.letter.offset, orjson.loads(c.item)) for c in candidates] == [(0, {"data": {"email": "a@example.com"}})]
    assert summary.failing == {"map MappingError": 1}
    assert summary.skipped == {
        "op_d": 1,
        "value truncated when dead-lettered": 1,
        "no provenance headers (not a dead letter of this connector)": 1,
        "no route reads topic unrouted": 1,
    }


# ------------------------------------------------------------------------------------ sending, twice


class Altcraft:
    """Engages each item once per Request-ID; a key seen before gets the stored answer as a duplicate."""

    def __init__(self, reject: str = "") -> None:
        self.answers: dict[str, bytes] = {}
        self.engaged: list[str] = []
        self.reject = reject
        self.status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.status != 200:
            return httpx.Response(self.status, json={"error": self.status, "error_text": "API token required"})
        key = request.headers["Request-ID"]
        if key in self.answers:
            return httpx.Response(200, content=self.answers[key], headers={"Duplicate-Request": "true"})
        results = []
        for item in orjson.loads(request.content)["data"]:
            email = item["data"]["email"]
            if email == self.reject:
                results.append({"error": 400, "error_text": "Invalid email", "profile_id": ""})
            else:
                self.engaged.append(email)
                results.append({"error": 0, "error_text": "Successful operation", "profile_id": "p"})
        body = orjson.dumps({"error": 0, "error_text": "Successful operation", "result": results})
        self.answers[key] = body
        return httpx.Response(200, content=body)


def replay_once(s: Settings, letters: list[DeadLetter], api: Altcraft) -> tuple[int, Summary]:
    summary = Summary()
    replaced: dict[tuple[int, int], set[str]] = {}
    for x in letters:
        if x.replay_of is not None:
            replaced.setdefault(x.replay_of[1:], set()).add(x.stage)
    chosen, ballast, skipped = choose(letters, replaced)
    summary.skipped.update(skipped)
    routes = _Routes(s)
    candidates = prepare(chosen, routes, summary, ballast)
    groups = plan_groups(candidates, max_items=s.batching.max_items, max_bytes=s.batching.max_bytes,
                         overheads=routes.overheads,
                         key=lambda r, p, o: replay_request_id("g", routes.get(r).settings, DLQ, p, o))  # fmt: skip
    summary.to_send, summary.groups = sum(1 for c in candidates if not c.ballast), len(groups)
    code = _send_all(s, routes, groups, summary, Progress(io.StringIO().write, 0), httpx.MockTransport(api))
    return code, summary


def test_replaying_the_same_letters_twice_engages_nobody_twice() -> None:
    s = settings()
    letters = [dead(o, orjson.dumps({"email": f"p{o}@example.com"})) for o in range(10)]
    api = Altcraft(reject="p3@example.com")
    code, first = replay_once(s, letters, api)
    assert code == 0
    assert (first.engaged, first.already, sum(first.rejected.values())) == (9, 0, 1)
    assert first.rejected == {"400 Invalid email": 1}
    assert [(x.offset, r.stage, r.api_code) for x, r in first.failures] == [(3, "api", 400)]
    assert first.requests == 3  # 10 letters, windows of 4 offsets

    code, second = replay_once(s, letters, api)
    assert sorted(api.engaged) == sorted(f"p{o}@example.com" for o in range(10) if o != 3)  # once each
    assert (second.engaged, second.already, second.duplicate_requests) == (0, 9, 3)
    lines = "\n".join(render_summary(DLQ, second, dry_run=False))
    assert "engaged         0" in lines and "already done    9" in lines
    assert "secret-token" not in lines


def test_a_halt_stops_the_replay_and_counts_the_rest_as_not_sent() -> None:
    api = Altcraft()
    api.status = 401
    letters = [dead(o, orjson.dumps({"email": f"p{o}@example.com"})) for o in range(6)]
    code, summary = replay_once(settings(), letters, api)
    assert code == 1
    assert summary.not_sent == 6 and summary.still_failing == 6
    assert summary.stopped is not None and summary.stopped.startswith("halted: unauthorized")
    assert "not sent: halted: unauthorized" in "\n".join(render_summary(DLQ, summary, dry_run=False))


def test_an_outcome_answered_wholly_as_duplicates_counts_as_already_done() -> None:
    summary = Summary()
    group = plan_groups([cand(0), cand(1)], max_items=4, max_bytes=1000, overheads={}, key=key)[0]
    summary.take(group, SendOutcome(1, (ItemRejection(1, 400, "Invalid email"),), "k", 1, 1), Mode.ENGAGE)
    assert (summary.engaged, summary.already) == (0, 1)
    summary.take(group, SendOutcome(2, (), "k", 2, 1), Mode.IMPORT)  # one part executed: counted as new
    assert summary.imported == 2
    assert [r for _, r in summary.failures] == [Reason("api", "AltcraftRejected", "Altcraft error 400: Invalid email",
                                                       400, "Invalid email", "k", None)]  # fmt: skip


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_summary_names_every_outcome(dry_run: bool) -> None:
    s = Summary(read=12, selected=10, to_send=6, groups=2, requests=2, engaged=5)
    s.skipped["op_d"] = 1
    s.fail(dead(1, b"{}"), Reason("map", "MappingError", "missing matching field 'email'"))
    s.reject(dead(2, b"{}"), Reason("api", "AltcraftRejected", "x", 400, "Invalid email"))
    text = "\n".join(render_summary(DLQ, s, dry_run=dry_run))
    assert "read            12 dead letter(s); selected 10" in text
    assert "skipped         1  (op_d: 1)" in text
    assert "still failing   1  (map MappingError: 1)" in text
    assert "e.g.: missing matching field 'email'" in text
    if dry_run:
        assert "would replay    6 in 2 request(s)" in text and "engaged" not in text
    else:
        assert "rejected        1  (400 Invalid email: 1)" in text and "engaged         5" in text


def test_letters_written_again_replace_theirs_without_changing_the_earlier_groups() -> None:
    s = settings()
    letters = [dead(o, orjson.dumps({"email": f"p{o}@example.com"})) for o in range(4)]
    letters.append(dead(4, orjson.dumps({"email": "p1@example.com"}), source=1))  # the connector wrote p1 twice
    api = Altcraft(reject="p2@example.com")
    code, first = replay_once(s, letters, api)
    assert (code, first.ok, first.engaged, first.skipped) == (0, False, 3, {COPY: 1})
    # --dead-letter-again wrote the refused letter anew; meanwhile its data was fixed upstream.
    replaced = {"altcraft.replay.of": b"dlq/0/2", "__connect.errors.stage": b"api"}
    letters.append(dead(9, orjson.dumps({"email": "p2-fixed@example.com"}), source=2, **replaced))
    api.reject = ""
    code, second = replay_once(s, letters, api)
    assert (code, second.ok) == (0, True)
    # The first group (offsets 0-3) is sent as before, under its key: answered as a duplicate; the new
    # letter goes alone. Nobody is engaged twice, the fixed record once.
    assert (second.already, second.engaged, second.requests, second.duplicate_requests) == (3, 1, 2, 1)
    assert second.skipped == {COPY: 1, RESENT: 1}
    assert not second.rejected and not second.failures
    assert sorted(api.engaged) == ["p0@example.com", "p1@example.com", "p2-fixed@example.com", "p3@example.com"]


def test_a_letter_replaced_after_failing_before_sending_is_left_out() -> None:
    x = dead(3, b"{}")
    chosen, ballast, skipped = choose([dead(1, b"{}"), x], {(0, 3): {"map"}, (0, 7): {"api"}})
    assert ([c.offset for c in chosen], ballast, skipped) == ([1], set(), {REPLACED: 1})
    chosen, ballast, _ = choose([dead(1, b"{}"), x], {(0, 3): {"api"}})
    assert ([c.offset for c in chosen], ballast) == ([1, 3], {(0, 3)})
