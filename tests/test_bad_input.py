"""Every bad input of docs/bad-input.md: the exact error, and nothing else lost.

One table drives the test. Each row runs on both backends (or on the one it
is about), between a good task enqueued before and one enqueued after, which
must both succeed; rows that close their backend or configure it wrongly get
an alias of their own.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.tasks import TaskResultStatus, task, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist

from django_tasks_local import InvalidTaskArguments, LocalTask
from tests.helpers import DEADLINE, temporary_alias
from tests.tasks import return_set, return_unnormalizable, save_bad_metadata, square


def nested(depth):
    """A list ``depth`` levels deep."""
    value = []
    for _ in range(depth):
        value = [value]
    return value


def _define_inner_task(alias):
    def inner():
        return 1

    return task(backend=alias)(inner)


DATABASE_STORE_KINDS = (
    "threads-sqlite",
    "processes-sqlite",
    "threads-postgres",
    "processes-postgres",
)


@dataclass(frozen=True)
class Row:
    id: str
    action: Any  # alias -> a TaskResult (for errors found in the worker) or raises
    error: type[BaseException]
    fragment: str
    # OPTIONS for the row's own backend: some rows are about bad options.
    options: dict[str, Any] = field(default_factory=dict)
    # True: the error is recorded on the result (the task ran), not raised.
    in_result: bool = False
    # False: the row leaves its alias unusable, so it gets an alias of its own.
    alias_usable_after: bool = True
    # The backends it is about (an option of one backend is unknown to the
    # other), on the memory store and the database store.
    kinds: tuple[str, ...] = ("threads", "processes", *DATABASE_STORE_KINDS)


ROWS = [
    Row(
        "non-module-level function",
        _define_inner_task,
        InvalidTask,
        "Task function must be defined at a module level.",
    ),
    Row(
        "lambda argument",
        lambda alias: square.using(backend=alias).enqueue(lambda: 1),
        InvalidTaskArguments,
        "Unsupported type: <class 'function'>",
    ),
    Row(
        "date argument",
        lambda alias: square.using(backend=alias).enqueue(datetime.date(2026, 1, 1)),
        InvalidTaskArguments,
        "Unsupported type: <class 'datetime.date'>",
    ),
    Row(
        "tuple as a dict key",
        lambda alias: square.using(backend=alias).enqueue({(1, 2): "pair"}),
        InvalidTaskArguments,
        "args[0] has a key of <class 'tuple'>: keys must be str, int, float, bool or None.",
    ),
    Row(
        "nesting too deep",
        lambda alias: square.using(backend=alias).enqueue(nested(5_000)),
        InvalidTaskArguments,
        "args[0][0][0]",
    ),
    Row(
        "bytes that are not UTF-8",
        lambda alias: square.using(backend=alias).enqueue(data=b"\xff\xfe"),
        InvalidTaskArguments,
        "kwargs['data'] is bytes that are not UTF-8 text",
    ),
    Row(
        "priority out of range",
        lambda alias: square.using(backend=alias, priority=101),
        InvalidTask,
        "priority must be a whole number between -100 and 100.",
    ),
    Row(
        "naive run_after",
        lambda alias: square.using(
            backend=alias, run_after=datetime.datetime(2030, 1, 1)
        ),
        InvalidTask,
        "run_after must be an aware datetime.",
    ),
    Row(
        "unknown queue",
        lambda alias: square.using(backend=alias, queue_name="nightly"),
        InvalidTask,
        "Queue 'nightly' is not valid for backend.",
    ),
    Row(
        "unknown option",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "has an unknown option 'MAX_WORKER'. Valid options: ",
        options={"MAX_WORKER": 2},
        alias_usable_after=False,
    ),
    Row(
        "invalid option value",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['MAX_WORKERS'] must be a whole number of at least 1, not 0.",
        options={"MAX_WORKERS": 0},
        alias_usable_after=False,
    ),
    Row(
        "unknown store",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['STORE'] must be one of 'memory', 'database', not 'redis'.",
        options={"STORE": "redis"},
        alias_usable_after=False,
    ),
    Row(
        "invalid worker start timeout",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['WORKER_START_TIMEOUT'] must be a number of seconds above 0, or None, not 0.",
        options={"WORKER_START_TIMEOUT": 0},
        alias_usable_after=False,
        kinds=("processes", "processes-sqlite", "processes-postgres"),
    ),
    Row(
        "max_attempts below 1",
        lambda alias: LocalTask(func=square.func, backend=alias, max_attempts=0),
        InvalidTask,
        "Task 'tests.tasks.square': max_attempts must be a whole number of at least 1, not 0.",
    ),
    Row(
        "backoff that is not callable",
        lambda alias: LocalTask(func=square.func, backend=alias, backoff=30),
        InvalidTask,
        "Task 'tests.tasks.square': backoff must be a callable (or None), not 30.",
    ),
    Row(
        "retry_on that is not a list of exception classes",
        lambda alias: LocalTask(func=square.func, backend=alias, retry_on=[int]),
        InvalidTask,
        "retry_on must list exception classes, and <class 'int'> is not one.",
    ),
    Row(
        "timeout of 0",
        lambda alias: LocalTask(func=square.func, backend=alias, timeout=0),
        InvalidTask,
        "Task 'tests.tasks.square': timeout must be a finite number of seconds above 0, not 0.",
    ),
    Row(
        "metadata that is not a dict",
        lambda alias: square.using(backend=alias, metadata=[1]),
        InvalidTask,
        "Task 'tests.tasks.square': metadata must be a dict, not list.",
    ),
    Row(
        "metadata that is not JSON",
        lambda alias: square.using(backend=alias, metadata={"a": object()}),
        InvalidTask,
        "metadata['a'] is not JSON: Unsupported type: <class 'object'>",
    ),
    Row(
        "saved metadata that is not JSON",
        lambda alias: save_bad_metadata.using(backend=alias).enqueue(),
        TypeError,
        "context.metadata['when'] is not JSON: Unsupported type: <class 'object'>",
        in_result=True,
    ),
    Row(
        "invalid MAX_ATTEMPTS",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['MAX_ATTEMPTS'] must be a whole number of at least 1, not 0.",
        options={"MAX_ATTEMPTS": 0},
        alias_usable_after=False,
    ),
    Row(
        "BACKOFF that cannot be imported",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['BACKOFF'] must be a callable or its dotted path; No module named 'myapp'.",
        options={"BACKOFF": "myapp.backoffs.linear"},
        alias_usable_after=False,
    ),
    Row(
        "RETRY_ON that is not exception classes",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['RETRY_ON'] must list exception classes, and <class 'int'> is not one.",
        options={"RETRY_ON": [int]},
        alias_usable_after=False,
    ),
    Row(
        "invalid RETRY_CRASHED",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['RETRY_CRASHED'] must be True or False, not 'yes'.",
        options={"RETRY_CRASHED": "yes"},
        alias_usable_after=False,
    ),
    Row(
        "invalid TIMEOUT",
        lambda alias: square.using(backend=alias).enqueue(1),
        ImproperlyConfigured,
        "['TIMEOUT'] must be a number of seconds above 0, or None, not 0.",
        options={"TIMEOUT": 0},
        alias_usable_after=False,
    ),
    Row(
        "cancel() with an unknown id",
        lambda alias: task_backends[alias].cancel("0" * 32),
        TaskResultDoesNotExist,
        "0" * 32,
    ),
    Row(
        "unpicklable return value",
        lambda alias: return_unnormalizable.using(backend=alias).enqueue(),
        TypeError,
        "Unsupported type: <class '_thread.lock'>",
        in_result=True,
    ),
    Row(
        "set return value",
        lambda alias: return_set.using(backend=alias).enqueue(),
        TypeError,
        "Unsupported type: <class 'set'>",
        in_result=True,
    ),
    Row(
        "get_result() with an unknown id",
        lambda alias: task_backends[alias].get_result("0" * 32),
        TaskResultDoesNotExist,
        "0" * 32,
    ),
    Row(
        "get_result() with an id from another process",
        lambda alias: task_backends[alias].get_result("f" * 10_000_000),
        TaskResultDoesNotExist,
        f"{'f' * 64}... (10000000 characters): no such task result in this "
        f"process (pid {os.getpid()}). Results are kept in the memory of the "
        "process that enqueued the task",
        kinds=("threads", "processes"),
    ),
    Row(
        "get_result() with an id the database store does not hold",
        lambda alias: task_backends[alias].get_result("f" * 10_000_000),
        TaskResultDoesNotExist,
        f"{'f' * 64}... (10000000 characters): no such task result in the "
        "database store of task backend",
        kinds=DATABASE_STORE_KINDS,
    ),
    Row(
        "get_result() with an id of the wrong type",
        lambda alias: task_backends[alias].get_result(42),
        TaskResultDoesNotExist,
        "42 is not a task result id: ids are str, not int.",
    ),
]


def check_row(row, alias):
    if row.in_result:
        result = row.action(alias)
        finished = task_backends[alias].wait_for_result(result.id, timeout=DEADLINE)
        assert finished.status == TaskResultStatus.FAILED
        [error] = finished.errors
        assert error.exception_class_path == f"builtins.{row.error.__qualname__}"
        assert row.fragment in error.traceback
    else:
        with pytest.raises(row.error, match=re.escape(row.fragment)):
            row.action(alias)


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        pytest.param(
            row,
            kind,
            id=f"{row.id}-{kind}",
            marks=[pytest.mark.postgres] if "postgres" in kind else [],
        )
        for row in ROWS
        for kind in row.kinds
    ],
)
def test_bad_input(row, kind):
    shared = task_backends[kind]
    before = square.using(backend=kind).enqueue(3)
    if row.alias_usable_after:
        # On the shared alias itself, which must go on working.
        check_row(row, kind)
    else:
        # The row breaks its alias (configures it wrongly).
        with temporary_alias(kind, **row.options) as alias:
            check_row(row, alias)
    after = square.using(backend=kind).enqueue(6)
    assert shared.wait_for_result(before.id, timeout=DEADLINE).return_value == 9
    assert shared.wait_for_result(after.id, timeout=DEADLINE).return_value == 36


def test_the_table_in_the_docs_lists_every_row():
    page = (
        Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"
    ).read_text()
    for row in ROWS:
        assert f"| {row.id} |" in page, row.id
