"""LocalTask (task_class.py): its fields, checked when a task is made."""

from __future__ import annotations

import pickle
from datetime import timedelta

import django
import pytest
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from django_tasks_local import LocalTask
from tests import tasks


def make(**fields: object) -> LocalTask:
    return LocalTask(func=tasks.noop.func, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_attempts", 0, "max_attempts must be a whole number of at least 1, not 0"),
        ("max_attempts", -2, "max_attempts must be a whole number"),
        ("max_attempts", "3", "max_attempts must be a whole number"),
        ("max_attempts", True, "max_attempts must be a whole number"),
        ("max_attempts", 2.5, "max_attempts must be a whole number"),
        ("backoff", 30, "backoff must be a callable (or None), not 30"),
        (
            "retry_on",
            ValueError,
            "retry_on must be a non-empty list of exception classes",
        ),
        ("retry_on", [], "retry_on must be a non-empty list"),
        (
            "retry_on",
            ["builtins.ValueError"],
            "retry_on must list exception classes, and 'builtins.ValueError' is not one",
        ),
        (
            "retry_on",
            [int],
            "retry_on must list exception classes, and <class 'int'> is not one",
        ),
        (
            "retry_crashed",
            "yes",
            "retry_crashed must be True, False or None, not 'yes'",
        ),
        ("timeout", 0, "timeout must be a finite number of seconds above 0, not 0"),
        ("timeout", -1, "timeout must be a finite number"),
        ("timeout", float("inf"), "timeout must be a finite number"),
        ("timeout", "30", "timeout must be a finite number"),
        ("timeout", timedelta(seconds=3), "timeout must be a finite number"),
        ("metadata", [1], "metadata must be a dict, not list"),
        ("metadata", {1: "a"}, "metadata has a key 1: its keys must be str"),
        ("metadata", {"a": object()}, "metadata['a'] is not JSON"),
    ],
)
def test_a_bad_field_is_refused_when_the_task_is_made(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(InvalidTask) as raised:
        make(**{field: value})
    assert "tests.tasks.noop" in str(raised.value)
    assert message in str(raised.value)


def test_good_fields() -> None:
    made = make(
        max_attempts=3,
        backoff=tasks.no_wait,
        retry_on=[KeyError, OSError],
        retry_crashed=True,
        timeout=1.5,
    )
    assert made.retry_on == (KeyError, OSError)  # a list is kept as a tuple
    assert (made.max_attempts, made.timeout, made.retry_crashed) == (3, 1.5, True)


def test_using_keeps_the_fields_and_takes_metadata() -> None:
    made = make(max_attempts=3, timeout=2)
    later = timezone.now() + timedelta(hours=1)
    used = made.using(
        priority=5, run_after=later, metadata={"trace": 7, "tags": ("a",)}
    )
    assert isinstance(used, LocalTask)
    assert (used.max_attempts, used.timeout, used.priority) == (3, 2, 5)
    assert used.run_after == later
    # Normalized to JSON: the tuple is a list.
    assert used.metadata == {"trace": 7, "tags": ["a"]}
    assert made.metadata is None  # using() makes a new task
    with pytest.raises(InvalidTask, match="metadata must be a dict"):
        made.using(metadata="no")


def test_a_result_starts_with_the_tasks_metadata() -> None:
    result = tasks.read_metadata.using(
        backend="threads", metadata={"trace": "x1"}
    ).enqueue()
    assert result.metadata == {"trace": "x1"}
    final = task_backends["threads"].wait_for_result(result.id, 60)
    assert final.status == TaskResultStatus.SUCCESSFUL
    assert final.return_value == {"trace": "x1"}
    assert final.metadata == {"trace": "x1"}


@pytest.mark.skipif(
    django.VERSION < (6, 1),
    reason="Django 6.0's Task cannot be pickled (its module holds the Task, not the function)",
)
def test_a_local_task_pickles() -> None:
    made = pickle.loads(pickle.dumps(tasks.fail_times))
    assert made == tasks.fail_times
    assert made.max_attempts == 3


def test_the_backends_make_local_tasks() -> None:
    assert task_backends["threads"].task_class is LocalTask
    assert task_backends["processes"].task_class is LocalTask
    assert isinstance(tasks.noop, LocalTask)
