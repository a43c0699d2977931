"""Unit tests of the waiting line: priority, first in first out, run_after."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from django_tasks_local import waiting_line
from django_tasks_local.waiting_line import WaitingLine

NOW = 1_800_000_000.0


@pytest.fixture
def clock(monkeypatch):
    """The waiting line's clock, set by hand."""

    class Clock:
        now = NOW

    # Only the waiting line's view of time: other threads keep the real clock.
    monkeypatch.setattr(waiting_line, "time", SimpleNamespace(time=lambda: Clock.now))
    return Clock


def at(seconds):
    return datetime.fromtimestamp(NOW + seconds, tz=UTC)


def pop_all(line):
    items = []
    while (item := line.pop()) is not None:
        items.append(item)
    return items


def test_highest_priority_first_then_first_in_first_out(clock):
    line = WaitingLine()
    for item, priority in [
        ("a", 0),
        ("b", -100),
        ("c", 100),
        ("d", 0),
        ("e", 50),
        ("f", 0),
        ("g", 100),
    ]:
        line.push(item, priority, None)
    assert len(line) == 7
    assert pop_all(line) == ["c", "g", "e", "a", "d", "f", "b"]
    assert len(line) == 0


def test_deferred_item_waits_for_its_run_after(clock):
    line = WaitingLine()
    line.push("later", 100, at(10))
    line.push("now", 0, None)
    assert line.next_due() == NOW + 10
    assert line.pop() == "now"
    assert line.pop() is None
    assert len(line) == 1
    clock.now = NOW + 9.999
    assert line.pop() is None
    clock.now = NOW + 10
    assert line.pop() == "later"
    assert line.next_due() is None
    assert len(line) == 0


def test_run_after_in_the_past_is_startable_at_once(clock):
    line = WaitingLine()
    line.push("late", 0, at(-5))
    assert line.next_due() is None
    assert line.pop() == "late"


def test_due_items_keep_priority_and_enqueue_order(clock):
    line = WaitingLine()
    line.push("deferred-low", -10, at(5))
    line.push("plain-1", 0, None)
    line.push("deferred-1", 0, at(3))
    line.push("deferred-high", 10, at(4))
    line.push("plain-2", 0, None)
    clock.now = NOW + 5
    assert pop_all(line) == [
        "deferred-high",
        "plain-1",
        "deferred-1",
        "plain-2",
        "deferred-low",
    ]


def test_deferred_items_come_due_earliest_first(clock):
    line = WaitingLine()
    line.push("third", 100, at(30))
    line.push("first", -100, at(10))
    line.push("second", 0, at(20))
    due = []
    for seconds in (10, 20, 30):
        assert line.next_due() == NOW + seconds
        clock.now = NOW + seconds
        due.append(line.pop())
    assert due == ["first", "second", "third"]


def test_promote_due_moves_on_to_the_next_run_after(clock):
    """What the timer relies on when no worker is free to pop the due items."""
    line = WaitingLine()
    line.push("soon", 0, at(1))
    line.push("later", 0, at(60))
    clock.now = NOW + 2
    # Not promoted yet: next_due still names a time already past.
    assert line.next_due() == NOW + 1
    line.promote_due()
    assert line.next_due() == NOW + 60
    assert len(line) == 2
    assert line.pop() == "soon"
    assert line.pop() is None


def test_naive_run_after_is_local_time(clock):
    """With USE_TZ = False, run_after is naive local time, like timezone.now()."""
    line = WaitingLine()
    local = datetime.fromtimestamp(NOW)  # naive, in local time
    line.push("naive", 0, local + timedelta(seconds=7))
    assert line.next_due() == NOW + 7


def test_drain_removes_everything(clock):
    line = WaitingLine()
    line.push("a", 0, None)
    line.push("b", 5, at(100))
    assert sorted(line.drain()) == ["a", "b"]
    assert len(line) == 0
    assert line.pop() is None
    assert line.next_due() is None
