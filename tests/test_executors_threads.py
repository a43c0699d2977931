"""ThreadPool, ThreadPoolBackend's executor: its workers and their database connections."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest
from django.db import connections

from django_tasks_local.executors.threads import ThreadPool
from tests.helpers import DEADLINE, wait_until

# -- the executor ------------------------------------------------------------


def test_runs_calls_and_reports_errors():
    pool = ThreadPool(2)
    try:
        assert pool.submit(pow, 3, 4).result(timeout=DEADLINE) == 81
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result(timeout=DEADLINE)
    finally:
        pool.shutdown()


def test_reuses_an_idle_worker_and_never_exceeds_max_workers():
    pool = ThreadPool(3, thread_name_prefix="reuse")
    try:
        names = {
            pool.submit(lambda: threading.current_thread().name).result(DEADLINE)
            for _ in range(20)
        }
        assert len(names) == 1

        release = threading.Event()
        futures = [
            pool.submit(
                lambda: (release.wait(DEADLINE), threading.current_thread().name)[1]
            )
            for _ in range(10)
        ]
        release.set()
        names = {future.result(timeout=DEADLINE) for future in futures}
        assert len(names) <= 3
        assert all(name.startswith("reuse_") for name in names)
    finally:
        pool.shutdown()


def test_workers_are_daemon_threads():
    # The interpreter does not join them at exit: a hung task cannot hang it.
    pool = ThreadPool(1)
    try:
        assert (
            pool.submit(lambda: threading.current_thread().daemon).result(DEADLINE)
            is True
        )
    finally:
        pool.shutdown()


def test_shutdown_cancels_waiting_calls_and_refuses_new_ones():
    pool = ThreadPool(1)
    release = threading.Event()
    running = pool.submit(release.wait, DEADLINE)
    waiting = [pool.submit(pow, 2, n) for n in range(5)]
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 2, 2)
    release.set()
    assert running.result(timeout=DEADLINE) is True
    for future in waiting:
        with pytest.raises(CancelledError):
            future.result(timeout=DEADLINE)
    pool.shutdown(wait=True)


def test_shutdown_without_cancel_runs_what_was_submitted():
    pool = ThreadPool(2)
    futures = [pool.submit(pow, 2, n) for n in range(10)]
    pool.shutdown(wait=True)
    assert [future.result(timeout=0) for future in futures] == [2**n for n in range(10)]


# -- database connections ----------------------------------------------------


def _open_default_connection():
    """Runs in a worker: opens its connection to `default`, returns the wrapper."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    return connections["default"]


@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_closes_its_connection_once_past_conn_max_age(monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 1)
    pool = ThreadPool(1)
    try:
        wrapper = pool.submit(_open_default_connection).result(timeout=DEADLINE)
        # No task comes: the idle worker closes it once it passes its age.
        wait_until(lambda: wrapper.connection is None, message="idle connection closed")
        # The worker is still there and opens a new connection when needed.
        again = pool.submit(_open_default_connection).result(timeout=DEADLINE)
        assert again is wrapper
        assert again.connection is not None
    finally:
        pool.shutdown()


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_a_persistent_connection_until_shutdown(monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", None)
    pool = ThreadPool(1)
    wrapper = pool.submit(_open_default_connection).result(timeout=DEADLINE)
    # Reused by the next call (CONN_MAX_AGE None: persistent) ...
    assert pool.submit(_open_default_connection).result(
        timeout=DEADLINE
    ).connection is (wrapper.connection)
    # ... and closed when the worker leaves.
    pool.shutdown(wait=True)
    assert wrapper.connection is None
