"""The duplicate-answer store: per token, for a window, within a byte budget."""

from __future__ import annotations

from connector.emulator.dedup import DedupStore, StoredAnswer


def _answer(body: bytes, at: float) -> StoredAnswer:
    return StoredAnswer(200, 0, body, "application/json", at)


def test_an_answer_is_found_within_the_window_only() -> None:
    store = DedupStore(window_s=10, max_bytes=1000)
    store.put("t", "k", _answer(b"one", 100.0), now=100.0)
    assert store.get("t", "k", now=109.9) == _answer(b"one", 100.0)
    assert store.get("t", "k", now=110.0) is None
    assert len(store) == 0
    assert store.bytes == 0


def test_keys_are_scoped_per_token() -> None:
    store = DedupStore(window_s=10, max_bytes=1000)
    store.put("t1", "k", _answer(b"one", 0.0), now=0.0)
    assert store.get("t2", "k", now=1.0) is None
    assert store.get("t1", "k", now=1.0) is not None


def test_the_oldest_answers_go_first_past_the_byte_budget() -> None:
    store = DedupStore(window_s=100, max_bytes=10)
    store.put("t", "a", _answer(b"12345", 0.0), now=0.0)
    store.put("t", "b", _answer(b"12345", 1.0), now=1.0)
    store.put("t", "c", _answer(b"1", 2.0), now=2.0)
    assert store.get("t", "a", now=3.0) is None
    assert store.get("t", "b", now=3.0) is not None
    assert store.bytes == 6
