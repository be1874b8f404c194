"""The profile store and matching: who is the same person, when a match is ambiguous."""

from __future__ import annotations

from connector.emulator.engagements import Engagements
from connector.emulator.importer import BatchCall, import_items, results_json
from connector.emulator.prepare import prepare_items
from connector.emulator.profiles import ProfileStore
from connector.emulator.validation import AMBIGUOUS, INVALID_EMAIL, INVALID_WRAPPER, PROFILE_NOT_FOUND, missing_value


def _call(
    items: list[object],
    matching: str = "email",
    field_name: str | None = None,
    *,
    wrapped: bool = False,
    workflow_id: int | None = 12,
    request_id: str = "r1",
) -> BatchCall:
    prepared = prepare_items(items, wrapped, skip_invalid_subscriptions=False)
    return BatchCall(prepared, matching, field_name, workflow_id, request_id)


def test_ids_are_24_hex_characters_and_follow_the_seed_prefix() -> None:
    a, b = ProfileStore("0000abcd"), ProfileStore("0000abcd")
    pid = a.create({"email": "a@example.com"})
    assert len(pid) == 24
    int(pid, 16)
    assert b.create({"email": "other@example.com"}) == pid
    assert a.number(pid) == 1
    assert a.number("f" * 24) is None
    assert a.number("not-an-id") is None


def test_same_email_same_profile_case_insensitively() -> None:
    store, eng = ProfileStore("01"), Engagements()
    out = import_items(store, eng, _call([{"email": "Ann@Example.com", "_fname": "Ann"}]))
    again = import_items(store, eng, _call([{"email": "ann@example.com", "_lname": "Lee"}]))
    assert out.results == again.results
    assert (out.created, again.updated) == (1, 1)
    pid = out.results[0]
    assert isinstance(pid, str)
    assert store.get(pid) == {"email": "ann@example.com", "_fname": "Ann", "_lname": "Lee"}


def test_repeated_updates_keep_the_last_values_and_the_stored_text_bounded() -> None:
    store, eng = ProfileStore("01"), Engagements()
    first = {"email": "a@example.com", "_fname": "Ann", "_city": "Riga", "CRM_ID": 1}
    pid = import_items(store, eng, _call([first, {"email": "b@example.com"}])).results[0]
    assert isinstance(pid, str)
    for i in range(50):  # batches of two, so that the profile is cut from a batch's serialisation
        out = import_items(store, eng, _call([{"email": "b@example.com"}, {"email": "A@example.com", "CRM_ID": i}]))
        assert out.results[1] == pid and out.updated == 2
    got = store.get(pid)
    assert got == {"email": "A@example.com", "_fname": "Ann", "_city": "Riga", "CRM_ID": 49}
    assert list(got) == ["email", "_fname", "_city", "CRM_ID"]  # keys keep their first position
    n = store.number(pid)
    assert n is not None and len(store.raw[n - 1]) < 4 * len(b'"email":"A@example.com","CRM_ID":49') + 80


def test_two_items_about_one_new_person_in_one_batch_are_one_profile() -> None:
    store = ProfileStore("01")
    out = import_items(store, Engagements(), _call([{"email": "a@example.com"}, {"email": "a@example.com"}]))
    assert out.results[0] == out.results[1]
    assert len(store) == 1


def test_invalid_items_are_neither_imported_nor_engaged() -> None:
    store, eng = ProfileStore("01"), Engagements()
    out = import_items(store, eng, _call([{"email": "a@example.com"}, {"email": "bad"}, {"_fname": "x"}, "junk"]))
    assert out.results[1:] == [INVALID_EMAIL, missing_value("email"), (400, "Invalid profile data: expected an object")]
    assert (out.accepted, out.rejected) == (1, 3)
    assert len(store) == 1
    assert eng.total == 1


def test_wrapped_items_must_carry_data() -> None:
    out = import_items(ProfileStore("01"), Engagements(), _call([{"email": "a@example.com"}], wrapped=True))
    assert out.results == [INVALID_WRAPPER]


def test_profile_id_matching_updates_but_cannot_create() -> None:
    store, eng = ProfileStore("01"), Engagements()
    pid = store.create({"email": "a@example.com"})
    out = import_items(
        store, eng, _call([{"profile_id": pid, "_fname": "Z"}, {"profile_id": "5" * 24}], matching="profile_id")
    )
    assert out.results == [pid, PROFILE_NOT_FOUND]
    assert store.get(pid) == {"email": "a@example.com", "_fname": "Z"}
    assert len(store) == 1


def test_custom_matching_and_a_shared_value_is_ambiguous() -> None:
    store, eng = ProfileStore("01"), Engagements()
    first = import_items(store, eng, _call([{"CRM_ID": "00066", "email": "a@example.com"}], "custom", "CRM_ID"))
    # 77 and "77" are one key.
    second = import_items(store, eng, _call([{"CRM_ID": 77}, {"CRM_ID": "77"}], "custom", "CRM_ID"))
    assert second.results[0] == second.results[1] != first.results[0]
    # A profile created by another mode with the same CRM_ID makes that value ambiguous.
    store.create({"email": "b@example.com", "CRM_ID": "00066"})
    third = import_items(store, eng, _call([{"CRM_ID": "00066"}], "custom", "CRM_ID"))
    assert third.results == [AMBIGUOUS]


def test_email_phone_matching_is_ambiguous_when_email_and_phone_point_to_two_people() -> None:
    store, eng = ProfileStore("01"), Engagements()
    a = store.create({"email": "a@example.com"})
    b = store.create({"email": "b@example.com", "phones": ["+79000000001"]})
    out = import_items(
        store,
        eng,
        _call(
            [
                {"email": "a@example.com", "phones": "+79000000001"},
                {"email": "a@example.com"},
                {"phones": ["+79000000001"]},
                {"email": "c@example.com", "phones": "+79000000009"},
            ],
            "email_phone",
        ),
    )
    assert out.results[:3] == [AMBIGUOUS, a, b]
    assert out.results[3] not in (a, b)


def test_email_phone_sub_matching_searches_email_and_sms_subscriptions_only() -> None:
    store, eng = ProfileStore("01"), Engagements()
    by_email = store.create({"subscriptions": [{"resource_id": 7, "channel": "email", "email": "s@example.com"}]})
    by_phone = store.create({"subscriptions": [{"resource_id": 7, "channel": "sms", "phone": "+79000000001"}]})
    in_fields = store.create({"email": "p@example.com", "phones": "+79000000005"})
    out = import_items(
        store,
        eng,
        _call(
            [
                {"email": "S@example.com", "_fname": "S"},  # an email subscription's address, any case
                {"phones": ["+79000000001"]},  # an SMS subscription's number
                {"email": "s@example.com", "phones": "+79000000001"},  # two people: ambiguous
                {"email": "p@example.com"},  # profile fields are not searched: a new profile
                {"_fname": "nobody"},
            ],
            "email_phone_sub",
        ),
    )
    assert out.results[:3] == [by_email, by_phone, AMBIGUOUS]
    assert out.results[3] not in (by_email, by_phone, in_fields)
    assert out.results[4] == missing_value("email or phone")
    assert store.get(by_email) == {
        "subscriptions": [{"resource_id": 7, "channel": "email", "email": "s@example.com"}],
        "email": "S@example.com",
        "_fname": "S",
    }


def test_email_phone_sub_finds_the_profile_by_the_subscriptions_an_item_carries() -> None:
    store, eng = ProfileStore("01"), Engagements()
    sub = {"resource_id": 7, "channel": "sms", "phone": "+79000000001"}
    first = import_items(store, eng, _call([{"_fname": "A", "subscriptions": [sub]}], "email_phone_sub"))
    again = import_items(store, eng, _call([{"_lname": "B", "subscriptions": [sub]}], "email_phone_sub"))
    assert first.created == 1 and again.results == first.results and again.updated == 1


def test_phone_index_is_built_late_and_then_kept() -> None:
    store, eng = ProfileStore("01"), Engagements()
    early = store.create({"email": "a@example.com", "phones": "+79000000001"})
    out = import_items(store, eng, _call([{"phones": "+79000000001", "_fname": "A"}], "phone"))
    assert out.results == [early]
    moved = import_items(store, eng, _call([{"email": "a@example.com", "phones": ["+79000000002"]}]))
    assert moved.results == [early]
    assert import_items(store, eng, _call([{"phone": "+79000000002"}], "phone")).results == [early]
    # The old number is free again: it creates a new profile.
    assert import_items(store, eng, _call([{"phone": "+79000000001"}], "phone")).results != [early]


def test_email_matching_also_finds_subscription_addresses() -> None:
    store, eng = ProfileStore("01"), Engagements()
    sub = {"resource_id": 7, "channel": "email", "email_data": {"email": "s@example.com"}}
    pid = store.create({"_fname": "S", "subscriptions": [sub]})
    assert import_items(store, eng, _call([{"email": "s@example.com"}])).results == [pid]
    assert import_items(store, eng, _call([{"email": "s@example.com"}], "email_sub")).results == [pid]


def test_email_profile_matching_ignores_subscriptions() -> None:
    store, eng = ProfileStore("01"), Engagements()
    sub = {"resource_id": 7, "email": "s@example.com"}
    pid = store.create({"_fname": "S", "subscriptions": [sub]})
    other = import_items(store, eng, _call([{"email": "s@example.com"}], "email_profile")).results
    assert other != [pid]
    # Now two profiles have the address, one in its fields and one in a subscription.
    assert import_items(store, eng, _call([{"email": "s@example.com"}])).results == [AMBIGUOUS]


def test_engagements_count_each_time_and_keep_request_ids() -> None:
    store, eng = ProfileStore("01"), Engagements()
    import_items(store, eng, _call([{"email": "a@example.com"}], request_id="r1"))
    import_items(store, eng, _call([{"email": "a@example.com"}, {"email": "b@example.com"}], request_id="r2"))
    import_items(store, eng, _call([{"email": "a@example.com"}], workflow_id=None, request_id="r3"))
    records = {pid: rec for _, pid, rec in eng.records()}
    a, b = store.find_by_email("a@example.com")[0], store.find_by_email("b@example.com")[0]
    assert (records[a].count, records[a].request_ids) == (2, ["r1", "r2"])
    assert (records[b].count, records[b].request_ids) == (1, ["r2"])
    assert (eng.total, eng.distinct()) == (3, 2)


def test_results_json_lines_up_with_the_items() -> None:
    assert results_json(["p1", "p2"], all_ok=True) == (
        '[{"error":0,"error_text":"Successful operation","profile_id":"p1"},'
        '{"error":0,"error_text":"Successful operation","profile_id":"p2"}]'
    )
    assert results_json([], all_ok=True) == "[]"
    assert results_json(["p1", (400, 'Bad "x"')], all_ok=False) == (
        '[{"error":0,"error_text":"Successful operation","profile_id":"p1"},'
        '{"error":400,"error_text":"Bad \\"x\\"","profile_id":""}]'
    )
