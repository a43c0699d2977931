"""The hot path's shortcuts give exactly what Django's own code gives."""

from __future__ import annotations

import enum
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest
from django.tasks.base import TaskError
from django.utils.json import normalize_json
from django.utils.safestring import mark_safe

from django_tasks_local.results import (
    LocalTaskResult,
    new_result,
    normalize,
    ready_result,
    snapshot,
)
from django_tasks_local.runner import Envelope, Outcome, TaskReference
from django_tasks_local.serialization import PickleSerializer
from django_tasks_local.states import READY, RUNNING, SUCCESSFUL, transition
from tests.tasks import add


class Colour(enum.IntEnum):
    RED = 1


VALUES: list[Any] = [
    None,
    True,
    0,
    1.5,
    "text",
    mark_safe("<b>safe</b>"),
    Colour.RED,
    b"bytes",
    (1, "two", None),
    [1, [2, [3]]],
    [Colour.RED, b"x"],
    {"a": 1, "b": None},
    {"a": [1, 2], "b": {"c": (3,)}},
    {1: "int key"},
    {"a": b"bytes value"},
    (),
    {},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_normalize_gives_what_normalize_json_gives_in_plain_types(value: Any) -> None:
    expected = normalize_json(value)
    got = normalize(value)
    assert got == expected
    assert_plain(got)


def assert_plain(value: Any) -> None:
    """Only the exact JSON types, however deep (no str or int subclass)."""
    assert type(value) in {dict, list, str, int, float, bool, type(None)}, value
    if type(value) is dict:
        for key, item in value.items():
            assert_plain(key)
            assert_plain(item)
    elif type(value) is list:
        for item in value:
            assert_plain(item)


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, (1, 2)], ids=repr)
def test_normalize_returns_a_new_container(value: Any) -> None:
    # The stored result must not share its arguments with the caller.
    assert normalize(value) is not value


@pytest.mark.parametrize(
    ("value", "error"),
    [(object(), TypeError), ([1, object()], TypeError), (b"\xff", ValueError)],
    ids=["object", "object in a list", "bad utf-8"],
)
def test_normalize_rejects_what_normalize_json_rejects(value: Any, error: type) -> None:
    with pytest.raises(error):
        normalize_json(value)
    with pytest.raises(error):
        normalize(value)


def _fields(args: Any, kwargs: Any) -> dict[str, Any]:
    return {
        "task": add,
        "id": "an-id",
        "status": READY,
        "enqueued_at": datetime(2026, 1, 1, tzinfo=UTC),
        "started_at": None,
        "last_attempted_at": None,
        "finished_at": None,
        "args": args,
        "kwargs": kwargs,
        "backend": "default",
        "errors": [],
        "worker_ids": [],
    }


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1, 2), {}), ([[1], b"x"], {"k": (1, 2)}), ((), {"a": None})],
    ids=["flat", "nested", "kwargs only"],
)
def test_new_result_equals_the_django_constructor(args: Any, kwargs: Any) -> None:
    built = new_result(**_fields(args, kwargs))
    # Django's own constructor, through our subclass (which adds metadata).
    expected = LocalTaskResult(**_fields(args, kwargs))
    assert built == expected
    assert type(built) is LocalTaskResult
    assert built.metadata == {}
    assert type(built.args) is list and type(built.kwargs) is dict


def test_new_result_requires_every_field() -> None:
    fields = _fields((1, 2), {})
    del fields["worker_ids"]
    with pytest.raises(KeyError, match="worker_ids"):
        new_result(**fields)


def test_a_snapshot_equals_its_result_in_every_field() -> None:
    result = new_result(**_fields([1, [2]], {"k": {"n": 1}}))
    started = datetime(2026, 1, 2, tzinfo=UTC)
    transition(
        result,
        RUNNING,
        started_at=started,
        last_attempted_at=started,
        worker_ids=["worker"],
    )
    transition(
        result,
        SUCCESSFUL,
        finished_at=datetime(2026, 1, 2, tzinfo=UTC),
        _return_value={"out": [1]},
    )
    copy = snapshot(result)
    assert copy == result
    assert copy.return_value == {"out": [1]}
    assert copy.return_value is not result.return_value
    assert copy.args[1] is not result.args[1]
    assert copy.worker_ids is not result.worker_ids


def test_what_crosses_to_a_worker_process_pickles_whole() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    reference = TaskReference.from_task(add.using(priority=5, run_after=now))
    envelope = Envelope("an-id", reference, [1, [2]], {"k": "v"}, now)
    error = TaskError(exception_class_path="builtins.ValueError", traceback="tb")
    outcomes = [
        Outcome("worker", now, now, {"out": [1]}),
        Outcome(None, None, now, error=error),
    ]
    for value in [reference, envelope, *outcomes]:
        copy = pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        assert copy == value
        assert type(copy) is type(value)
    assert pickle.loads(pickle.dumps(reference)).run_after == now


def test_an_envelope_checked_at_enqueue_is_not_pickled_twice() -> None:
    result = ready_result(add, "an-id", "default", [1, [2]], {"k": "v"}, None)
    envelope = PickleSerializer().envelope(result, lambda *_: None)
    assert envelope.pickled is not None
    assert envelope.pickled in pickle.dumps(envelope)
    copy = pickle.loads(pickle.dumps(envelope))
    assert copy == envelope
    assert copy.pickled is None
