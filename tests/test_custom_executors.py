"""The basic task contract on the example backends of tests/custom_executors.py.

Each runs on the memory store and on the database store. Both run tasks in other processes (loky's worker processes; one Dask worker
process with two threads), so these checks also show that a worker sets Django
up and that a task's start, which such executors cannot report live, is applied
with its true time and worker when the outcome arrives.
"""

from __future__ import annotations

import os

import pytest
from distributed import LocalCluster
from django.conf import settings
from django.tasks import TaskResultStatus, task_backends
from django.tasks.signals import task_finished, task_started
from django.test import override_settings

from django_tasks_local.models import StoredResult
from tests import tasks
from tests.helpers import DEADLINE, run_and_wait
from tests.models import Record

# Workers in other processes read the database through their own connections,
# so what a test writes must be committed. All tests here are transactional
# for another reason too: pytest-django runs transactional tests in a group of
# their own, and a module split across groups would set the backends up twice.
# The database store's tests (the "-sqlite" aliases) reach its database too.
pytestmark = pytest.mark.django_db(
    transaction=True, databases=["default", "store_sqlite"]
)

ON_THE_DATABASE_STORE = {"STORE": "database", "DATABASE": "store_sqlite"}


@pytest.fixture(scope="module")
def dask_scheduler():
    # One worker process with two threads: tasks leave the test process, and
    # the cluster starts in a few seconds.
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        dashboard_address=":0",
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def executor_settings(dask_scheduler):
    tasks = {
        **settings.TASKS,
        "loky": {
            "BACKEND": "tests.custom_executors.LokyBackend",
            "OPTIONS": {"MAX_WORKERS": 2},
        },
        "dask": {
            "BACKEND": "tests.custom_executors.DaskBackend",
            "OPTIONS": {"MAX_WORKERS": 2, "SCHEDULER": dask_scheduler},
        },
    }
    for name in ("loky", "dask"):
        tasks[f"{name}-sqlite"] = {
            "BACKEND": tasks[name]["BACKEND"],
            "OPTIONS": {**tasks[name]["OPTIONS"], **ON_THE_DATABASE_STORE},
        }
    with override_settings(TASKS=tasks):
        yield
        # Stop the workers (and Dask's client) before the cluster goes.
        for alias in ("loky", "dask", "loky-sqlite", "dask-sqlite"):
            task_backends[alias].close(timeout=DEADLINE)


@pytest.fixture(params=["loky", "dask", "loky-sqlite", "dask-sqlite"])
def backend(request, executor_settings):
    return task_backends[request.param]


def test_the_database_store_records_the_result(backend):
    result = run_and_wait(backend, tasks.add, 40, 2)
    if backend.alias.endswith("-sqlite"):
        stored = StoredResult.objects.using("store_sqlite").get(id=result.id)
        assert (stored.status, stored.return_value) == ("SUCCESSFUL", 42)
        assert stored.worker_ids == result.worker_ids
        assert stored.started_at == result.started_at
    else:
        assert not StoredResult.objects.using("store_sqlite").filter(id=result.id)


def test_success_normalizes_the_return_value(backend):
    assert run_and_wait(backend, tasks.add, 40, 2).return_value == 42
    result = run_and_wait(backend, tasks.nested_tuple)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == [1, [2, 3], {"key": [4]}]


def test_tasks_run_in_another_process(backend):
    result = run_and_wait(backend, tasks.pid)
    assert result.return_value != os.getpid()
    assert f":{result.return_value}" in result.worker_ids[0]


def test_workers_have_django_set_up(backend):
    # The task's module imports a model at the top: it cannot even be
    # imported before Django is set up.
    result = run_and_wait(backend, tasks.orm_roundtrip, "from a worker")
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert "from a worker" in result.return_value["labels"]
    record = Record.objects.get(label="from a worker")
    assert record.value != os.getpid()


def test_failure_is_captured_with_its_traceback(backend):
    result = run_and_wait(backend, tasks.raise_value_error, "the task's message")
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "in raise_value_error" in error.traceback
    assert "ValueError: the task's message" in error.traceback


def test_takes_context(backend):
    result = run_and_wait(backend, tasks.context_of_task, "x")
    assert result.return_value == {
        "id": result.id,
        "attempt": 1,
        "status": TaskResultStatus.RUNNING,
        "worker_ids": result.worker_ids,
        "value": "x",
    }


def test_current_result_id(backend):
    result = run_and_wait(backend, tasks.own_result_id)
    assert result.return_value == result.id


def test_start_is_applied_when_the_outcome_arrives(backend):
    seen = []

    def on_started(sender, task_result, **kwargs):
        seen.append(
            (task_result.id, "started", task_result.status, task_result.worker_ids)
        )

    def on_finished(sender, task_result, **kwargs):
        seen.append(
            (task_result.id, "finished", task_result.status, task_result.worker_ids)
        )

    task_started.connect(on_started, dispatch_uid="custom-executors-started")
    task_finished.connect(on_finished, dispatch_uid="custom-executors-finished")
    try:
        # wait_for_result returns once task_finished has been sent.
        result = run_and_wait(backend, tasks.pid)
    finally:
        task_started.disconnect(dispatch_uid="custom-executors-started")
        task_finished.disconnect(dispatch_uid="custom-executors-finished")
    [worker_id] = result.worker_ids
    assert [event[1:] for event in seen if event[0] == result.id] == [
        ("started", TaskResultStatus.RUNNING, [worker_id]),
        ("finished", TaskResultStatus.SUCCESSFUL, [worker_id]),
    ]
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at


def test_an_added_option_is_checked():
    from tests.custom_executors import DaskBackend

    [error] = DaskBackend("dask", {"OPTIONS": {"SCHEDULER": 8786}}).check()
    assert error.id == "django_tasks_local.E002"
    assert error.msg == (
        "TASKS['dask']['OPTIONS']['SCHEDULER'] must be an address such as "
        "'tcp://10.0.0.5:8786', not 8786."
    )
