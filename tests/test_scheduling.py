"""Scheduling in both backends: priority, run_after, async tasks, on-commit dispatch, waiting."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone

from tests.helpers import (
    DEADLINE,
    read_log,
    temporary_alias,
    wait_until,
    wait_until_running,
)
from tests.models import Record
from tests.tasks import (
    async_own_result_id,
    async_with_context,
    block_until,
    log_label,
    read_record,
    square,
    stamp,
)

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL
FAILED = TaskResultStatus.FAILED


class Rollback(Exception):
    """Raised inside transaction.atomic() to roll it back."""


@pytest.fixture
def variant(alias):
    """Makes copies of ``alias`` with other OPTIONS, each a temporary alias.

    A fresh alias is a fresh runtime, which the test may saturate or close;
    every copy is closed after the test.
    """
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(temporary_alias(alias, **options))


@pytest.fixture
def gate(variant, tmp_path):
    """A path that ``block_until`` tasks wait for; opened at the latest after the test."""
    path = tmp_path / "gate"
    yield path
    # Before the variants close (this fixture depends on them): no blocker outlives the test.
    path.touch()


def test_capability_flags(alias):
    backend = task_backends[alias]
    assert backend.supports_priority is True
    assert backend.supports_defer is True
    assert backend.supports_async_task is True
    assert backend.supports_get_result is True


# -- priority and the waiting line -------------------------------------------


def test_waiting_tasks_stay_ready_and_start_by_priority(variant, gate, tmp_path):
    solo = variant(MAX_WORKERS=1)
    backend = task_backends[solo]
    log = tmp_path / "order"
    blocker = block_until.using(backend=solo).enqueue(str(gate))
    wait_until_running(backend, blocker.id)

    plan = [
        ("low", -50),
        ("first-of-equals", 0),
        ("highest", 100),
        ("second-of-equals", 0),
        ("lowest", -100),
        ("third-of-equals", 0),
        ("high", 60),
    ]
    waiting = [
        log_label.using(backend=solo, priority=priority).enqueue(str(log), label)
        for label, priority in plan
    ]
    # The one worker is busy: the others wait, READY, in our line.
    for result in waiting:
        current = backend.get_result(result.id)
        assert current.status == READY
        assert current.started_at is None
        assert current.worker_ids == []

    gate.touch()
    backend.wait_until_idle(timeout=DEADLINE)
    # By priority, then first come first served.
    by_priority = [
        "highest",
        "high",
        "first-of-equals",
        "second-of-equals",
        "third-of-equals",
        "low",
        "lowest",
    ]
    assert read_log(log) == by_priority
    finished = [backend.get_result(result.id) for result in waiting]
    assert all(result.status == SUCCESSFUL for result in finished)


@pytest.mark.parametrize(
    # The last: a user's backend, the core on a stdlib thread pool.
    "backend",
    ["threads", "processes", "tests.helpers.PrefixedThreadPoolBackend"],
)
def test_every_higher_priority_task_starts_before_any_lower_one(backend, tmp_path):
    gate, log = tmp_path / "gate", tmp_path / "order"
    with temporary_alias(backend, MAX_WORKERS=1) as alias:
        try:
            blocker = block_until.using(backend=alias).enqueue(str(gate))
            wait_until_running(task_backends[alias], blocker.id)
            for priority, labels in [(-10, "abc"), (10, "xyz")]:
                for label in labels:
                    task = log_label.using(backend=alias, priority=priority)
                    task.enqueue(str(log), f"{priority}{label}")
        finally:
            gate.touch()
        task_backends[alias].wait_until_idle(timeout=DEADLINE)
    assert read_log(log) == ["10x", "10y", "10z", "-10a", "-10b", "-10c"]


def test_due_task_waits_for_a_free_worker_without_spinning(variant, gate, tmp_path):
    """A run_after that passes while every worker is busy: no busy loop, its turn by priority."""
    solo = variant(MAX_WORKERS=1)
    backend = task_backends[solo]
    log = tmp_path / "order"
    blocker = block_until.using(backend=solo).enqueue(str(gate))
    wait_until_running(backend, blocker.id)
    # Count how often the timer thread looks at the waiting line. Internal on
    # purpose: no API shows a timer that wakes too often (a poll every few
    # milliseconds costs too little CPU to measure reliably).
    line = backend.runtime._line
    looks = 0
    next_due = line.next_due

    def counting_next_due():
        nonlocal looks
        looks += 1
        return next_due()

    line.next_due = counting_next_due

    run_after = timezone.now() + timedelta(seconds=0.2)
    deferred = log_label.using(backend=solo, run_after=run_after).enqueue(
        str(log), "deferred"
    )
    plain = log_label.using(backend=solo, priority=-10).enqueue(str(log), "plain")
    # Let the run_after pass, and some more, with the worker still held.
    wait_until(
        lambda: time.time() > run_after.timestamp() + 0.5,
        message="the run_after has passed",
    )
    assert backend.get_result(deferred.id).status == READY
    assert backend.get_result(plain.id).status == READY
    # A handful of wake-ups (enqueues, the run_after), not a spin.
    assert looks < 50

    gate.touch()
    backend.wait_until_idle(timeout=DEADLINE)
    assert read_log(log) == ["deferred", "plain"]
    assert backend.get_result(deferred.id).started_at >= run_after


# -- run_after ---------------------------------------------------------------


def test_run_after_holds_the_task_until_then(alias):
    backend = task_backends[alias]
    run_after = timezone.now() + timedelta(seconds=0.5)
    result = stamp.using(backend=alias, run_after=run_after).enqueue()
    current = backend.get_result(result.id)
    assert current.status == READY
    assert current.started_at is None

    # Starts by itself on the idle pool (the generous deadline is not a speed test).
    done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.status == SUCCESSFUL
    assert done.return_value >= run_after.timestamp()
    assert done.started_at >= run_after


def test_thousands_of_deferred_tasks_hold_no_thread_each(variant):
    name = variant()
    backend = task_backends[name]
    later = stamp.using(backend=name, run_after=timezone.now() + timedelta(hours=1))
    # The first one starts the runtime's one timer thread.
    results = [later.enqueue()]
    threads = threading.active_count()
    results += [later.enqueue() for _ in range(2000)]
    assert threading.active_count() <= threads
    assert {backend.get_result(result.id).status for result in results} == {READY}


def test_naive_run_after_is_invalid_with_use_tz(alias):
    with pytest.raises(InvalidTask, match="aware"):
        stamp.using(backend=alias, run_after=datetime.now() + timedelta(seconds=1))


def test_naive_run_after_works_without_use_tz(alias, settings):
    settings.USE_TZ = False
    backend = task_backends[alias]
    run_after = timezone.now() + timedelta(seconds=0.5)
    assert timezone.is_naive(run_after)
    result = stamp.using(backend=alias, run_after=run_after).enqueue()
    assert backend.get_result(result.id).status == READY
    done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.status == SUCCESSFUL
    # Naive is local time: the same instant as the worker's POSIX clock.
    assert done.return_value >= run_after.timestamp()


# -- async tasks ---------------------------------------------------------------


def test_async_task_runs_and_knows_its_result_id(alias):
    backend = task_backends[alias]
    result = async_own_result_id.using(backend=alias).enqueue()
    done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.status == SUCCESSFUL, done.errors
    assert done.return_value == result.id


def test_async_task_with_context(alias):
    backend = task_backends[alias]
    result = async_with_context.using(backend=alias).enqueue(value=5)
    done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.status == SUCCESSFUL, done.errors
    assert done.return_value == {
        "context_id": result.id,
        "current_id": result.id,
        "attempt": 1,
        "value": 5,
    }


# -- on-commit dispatch --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_task_enqueued_in_a_transaction_runs_after_commit(alias):
    backend = task_backends[alias]
    with transaction.atomic():
        Record.objects.create(label="committed", value=7)
        result = read_record.using(backend=alias).enqueue("committed")
        assert backend.get_result(result.id).status == READY
    done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.status == SUCCESSFUL, done.errors
    # It ran after the commit: it saw the row.
    assert done.return_value == 7


@pytest.mark.django_db(transaction=True)
def test_task_enqueued_in_a_rolled_back_transaction_vanishes(alias, tmp_path):
    backend = task_backends[alias]
    log = tmp_path / "log"
    with pytest.raises(Rollback), transaction.atomic():
        Record.objects.create(label="rolled back", value=1)
        result = log_label.using(backend=alias).enqueue(str(log), "ran")
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(result.id)
    with pytest.raises(TaskResultDoesNotExist):
        backend.wait_for_result(result.id, timeout=DEADLINE)
    # Nothing is left to wait for, and the task never ran.
    backend.wait_until_idle(timeout=DEADLINE)
    assert read_log(log) == []


@pytest.mark.django_db(transaction=True)
def test_savepoint_rollback_drops_its_task_and_outer_commit_runs_the_rest(
    alias, tmp_path
):
    backend = task_backends[alias]
    log = tmp_path / "log"
    with transaction.atomic():
        Record.objects.create(label="outer", value=1)
        outer = read_record.using(backend=alias).enqueue("outer")
        with pytest.raises(Rollback), transaction.atomic():
            Record.objects.create(label="inner", value=2)
            inner = log_label.using(backend=alias).enqueue(str(log), "inner")
            raise Rollback
        # Gone as soon as its savepoint rolled back; the outer one still waits.
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(inner.id)
        assert backend.get_result(outer.id).status == READY
    done = backend.wait_for_result(outer.id, timeout=DEADLINE)
    assert done.return_value == 1
    backend.wait_until_idle(timeout=DEADLINE)
    assert read_log(log) == []


@pytest.mark.django_db(transaction=True)
def test_outer_rollback_drops_tasks_of_committed_savepoints(alias, tmp_path):
    backend = task_backends[alias]
    log = tmp_path / "log"
    with pytest.raises(Rollback), transaction.atomic():
        outer = log_label.using(backend=alias).enqueue(str(log), "outer")
        with transaction.atomic():
            inner = log_label.using(backend=alias).enqueue(str(log), "inner")
        assert backend.get_result(inner.id).status == READY
        raise Rollback
    for result in (outer, inner):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result.id)
    backend.wait_until_idle(timeout=DEADLINE)
    assert read_log(log) == []


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_false_hands_the_task_over_at_once(variant):
    name = variant(ENQUEUE_ON_COMMIT=False)
    backend = task_backends[name]
    with transaction.atomic():
        result = square.using(backend=name).enqueue(4)
        # Finishes while the transaction is still open.
        done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.return_value == 16


@pytest.mark.django_db(transaction=True)
def test_commit_after_close_runs_the_task_on_fresh_workers(variant):
    name = variant()
    backend = task_backends[name]
    with transaction.atomic():
        result = square.using(backend=name).enqueue(3)
        backend.close(timeout=0)
    done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.status == SUCCESSFUL
    assert done.return_value == 9


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_enqueue_on_commit_follows_the_named_database(variant):
    name = variant(ENQUEUE_ON_COMMIT="postgres")
    backend = task_backends[name]
    with transaction.atomic(using="postgres"):
        Record.objects.using("postgres").create(label="pg", value=11)
        result = read_record.using(backend=name).enqueue("pg", using="postgres")
        assert backend.get_result(result.id).status == READY
    assert backend.wait_for_result(result.id, timeout=DEADLINE).return_value == 11

    with pytest.raises(Rollback), transaction.atomic(using="postgres"):
        dropped = square.using(backend=name).enqueue(2)
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(dropped.id)

    # The default database's transactions are not this backend's concern.
    with transaction.atomic():
        result = square.using(backend=name).enqueue(5)
        assert backend.wait_for_result(result.id, timeout=DEADLINE).return_value == 25


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_enqueue_on_commit_true_follows_the_default_database(alias):
    backend = task_backends[alias]
    with transaction.atomic(using="postgres"):
        result = square.using(backend=alias).enqueue(6)
        # Not held back by another database's transaction.
        assert backend.wait_for_result(result.id, timeout=DEADLINE).return_value == 36


@pytest.mark.parametrize("value", [True, False, "default", "postgres"])
def test_enqueue_on_commit_accepts_a_boolean_or_a_database_alias(variant, value):
    backend = task_backends[variant(ENQUEUE_ON_COMMIT=value)]
    assert backend.check() == []


@pytest.mark.parametrize("value", ["elsewhere", 1, None])
def test_enqueue_on_commit_rejects_anything_else(variant, value):
    errors = task_backends[variant(ENQUEUE_ON_COMMIT=value)].check()
    assert [error.id for error in errors] == ["django_tasks_local.E002"]
    assert "ENQUEUE_ON_COMMIT" in errors[0].msg
    assert repr(value) in errors[0].msg
    assert "'default', 'postgres'" in errors[0].msg


def test_a_run_after_in_year_9999_keeps_the_timer_for_the_others(alias):
    # Beyond the longest wait threading can take: the timer waits on. An alias
    # of its own: the task that never runs must not keep the shared one busy.
    far = datetime(9999, 12, 31, tzinfo=UTC)
    with temporary_alias(alias) as own:
        backend = task_backends[own]
        never = stamp.using(backend=own, run_after=far).enqueue()
        soon = stamp.using(
            backend=own, run_after=timezone.now() + timedelta(seconds=0.2)
        ).enqueue()
        assert backend.wait_for_result(soon.id, timeout=DEADLINE).status == SUCCESSFUL
        assert backend.get_result(never.id).status == READY
