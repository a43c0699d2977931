"""The result store: bounded eviction of finished results, alone and through a backend."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.tasks import TaskResult, TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished
from django.utils import timezone

from django_tasks_local.result_store import ResultStore
from tests import tasks
from tests.helpers import DEADLINE, temporary_alias, wait_until_running

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL


def new_result(result_id: str, args=(), kwargs=None) -> TaskResult:
    return TaskResult(
        task=tasks.noop,
        id=result_id,
        status=READY,
        enqueued_at=timezone.now(),
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=list(args),
        kwargs=kwargs or {},
        backend="default",
        errors=[],
        worker_ids=[],
    )


def store_with(max_results: int, *ids: str) -> ResultStore:
    store = ResultStore(max_results)
    for result_id in ids:
        store.add(new_result(result_id))
    return store


def held(store: ResultStore, *ids: str) -> list[str]:
    return [result_id for result_id in ids if result_id in store]


# -- eviction ----------------------------------------------------------------------


def test_finished_results_beyond_the_bound_are_evicted_oldest_finished_first():
    store = store_with(2, "a", "b", "c", "d")

    # Finished in another order than added: the order of finishing counts.
    for result_id in ("c", "a", "d", "b"):
        store.finished(result_id)

    assert held(store, "a", "b", "c", "d") == ["b", "d"]
    assert store.finished_count == 2
    with pytest.raises(TaskResultDoesNotExist):
        store.get("c")


def test_unfinished_results_are_never_evicted():
    store = store_with(1, "ready", "running", "first", "second", "third")

    for result_id in ("first", "second", "third"):
        store.finished(result_id)

    assert held(store, "ready", "running", "first", "second", "third") == [
        "ready",
        "running",
        "third",
    ]
    assert (store.finished_count, store.unfinished_count, len(store)) == (1, 2, 3)


def test_discard_forgets_an_unfinished_result():
    store = store_with(5, "kept", "rolled back")

    store.discard("rolled back")
    store.discard("never there")

    assert held(store, "kept", "rolled back") == ["kept"]
    with pytest.raises(TaskResultDoesNotExist):
        store.get("rolled back")


def test_get_returns_the_stored_result_itself():
    store = ResultStore(1)
    result = new_result("id")
    store.add(result)

    assert store.get("id") is result


# -- through a backend -------------------------------------------------------------


def test_a_backend_keeps_at_most_max_results_finished(alias, tmp_path: Path, request):
    with temporary_alias(alias, MAX_WORKERS=2, MAX_RESULTS=3) as name:
        backend = task_backends[name]
        enqueued = []  # every result id of the alias, from task_enqueued
        finished_counts = []  # at each task_finished: how many finished are kept

        def stored(result_id):
            try:
                return backend.get_result(result_id)
            except TaskResultDoesNotExist:
                return None

        def note_enqueued(sender, task_result, **kwargs):
            if task_result.backend == name:
                enqueued.append(task_result.id)

        def count_finished(sender, task_result, **kwargs):
            if task_result.backend != name:
                return  # another test's straggler
            kept = [stored(result_id) for result_id in list(enqueued)]
            finished_counts.append(
                sum(result is not None and result.is_finished for result in kept)
            )

        task_enqueued.connect(note_enqueued, weak=False)
        request.addfinalizer(lambda: task_enqueued.disconnect(note_enqueued))
        # Enqueued first, so an oldest-enqueued-first eviction would drop them.
        later = timezone.now() + timedelta(hours=1)
        deferred = tasks.noop.using(backend=name, run_after=later).enqueue()
        release = tmp_path / "release"
        blocker = tasks.block_until.using(backend=name).enqueue(str(release))
        wait_until_running(backend, blocker.id)

        task_finished.connect(count_finished, weak=False)
        request.addfinalizer(lambda: task_finished.disconnect(count_finished))
        # The blocker holds one worker; these run one by one on the other.
        quick = [tasks.noop.using(backend=name).enqueue() for _ in range(12)]
        backend.wait_for_result(quick[-1].id, timeout=DEADLINE)

        assert len(finished_counts) == 12
        assert max(finished_counts) == 3
        for result in quick[:-3]:
            with pytest.raises(TaskResultDoesNotExist):
                backend.get_result(result.id)
        assert [backend.get_result(r.id).status for r in quick[-3:]] == [SUCCESSFUL] * 3
        assert backend.get_result(deferred.id).status == READY
        assert backend.get_result(blocker.id).status == RUNNING
        # Nothing else is kept: the three newest finished, and the two unfinished.
        assert len([r for r in map(stored, enqueued) if r is not None]) == 3 + 2

        release.touch()
        backend.wait_for_result(blocker.id, timeout=DEADLINE)

        # The blocker is now the newest finished: the oldest survivor made room.
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(quick[-3].id)
        assert [backend.get_result(r.id).status for r in quick[-2:]] == [SUCCESSFUL] * 2
        assert backend.get_result(deferred.id).status == READY


def test_the_memory_store_records_no_retry_metadata_or_cancel_of_others():
    # Nothing of another process's is here: nothing to write, nor to cancel.
    store = store_with(5, "a")
    store.save_retrying(new_result("a"))
    store.save_metadata("a", {"progress": 1})
    with pytest.raises(TaskResultDoesNotExist, match="no such task result"):
        store.cancel_elsewhere("elsewhere", RuntimeError("cancelled"))
    assert store.get("a").status == READY
