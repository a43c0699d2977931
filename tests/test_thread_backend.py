"""ThreadPoolBackend in real conditions: the connections its workers open, as
PostgreSQL sees them, and an OS that refuses to start a thread."""

from __future__ import annotations

import sys
import threading

import psycopg
import pytest
from django.db import connections
from django.db.backends.signals import connection_created
from django.tasks import task_backends

from tests.helpers import DEADLINE, run_code, temporary_alias, wait_until
from tests.tasks import postgres_backend_pid

# -- against PostgreSQL: what the server sees --------------------------------


def _monitor():
    """A connection of the test's own to the server, outside Django."""
    settings_dict = connections.settings["postgres"]
    return psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        user=settings_dict["USER"],
        dbname="postgres",
        connect_timeout=10,
        autocommit=True,
    )


def _live_backend_pids(pids):
    """Which of ``pids`` are still connected server processes."""
    with _monitor() as monitor:
        rows = monitor.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]
        ).fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def postgres_connections_opened():
    """The names of the threads that open a connection to `postgres`, one per opening."""
    opened = []

    def record(sender, connection, **kwargs):
        if connection.alias == "postgres":
            opened.append(threading.current_thread().name)

    connection_created.connect(record, weak=False)
    yield opened
    connection_created.disconnect(record)


def by_workers_of(alias, opened):
    """The openings by the workers of ``alias`` (ThreadPoolBackend names its threads)."""
    return [name for name in opened if name.startswith(f"django-tasks-local-{alias}_")]


def _run_pid_tasks(alias, count):
    results = [
        postgres_backend_pid.using(backend=alias).enqueue() for _ in range(count)
    ]
    backend = task_backends[alias]
    backend.wait_until_idle(timeout=DEADLINE)
    return [backend.get_result(result.id).return_value for result in results]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_conn_max_age_0_each_task_opens_and_closes_its_own_connection(
    monkeypatch, postgres_connections_opened
):
    monkeypatch.setitem(connections.settings["postgres"], "CONN_MAX_AGE", 0)
    with temporary_alias("threads", MAX_WORKERS=4) as alias:
        pids = _run_pid_tasks(alias, 40)
        assert len(by_workers_of(alias, postgres_connections_opened)) == 40
        assert len(set(pids)) == 40
        # Closed after each task, while the workers are still there.
        wait_until(lambda: not _live_backend_pids(pids), message="connections closed")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_conn_max_age_reuses_connections_then_idle_workers_close_them(
    monkeypatch, postgres_connections_opened
):
    monkeypatch.setitem(connections.settings["postgres"], "CONN_MAX_AGE", 1)
    with temporary_alias("threads", MAX_WORKERS=4) as alias:
        pids = _run_pid_tasks(alias, 40)
        # Reused across tasks: far fewer connections than tasks, one per opening.
        assert len(set(pids)) < 40
        assert len(by_workers_of(alias, postgres_connections_opened)) == len(set(pids))
        # The pool is idle: its workers close what passes CONN_MAX_AGE.
        wait_until(
            lambda: not _live_backend_pids(pids), message="idle connections closed"
        )
        # And the backend still works, on new connections.
        assert len(_run_pid_tasks(alias, 4)) == 4


def _terminate_backend(pid):
    with _monitor() as monitor:
        monitor.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_conn_health_checks_replace_a_connection_that_broke_between_tasks(
    monkeypatch,
):
    monkeypatch.setitem(connections.settings["postgres"], "CONN_MAX_AGE", None)
    monkeypatch.setitem(connections.settings["postgres"], "CONN_HEALTH_CHECKS", True)
    with temporary_alias("threads", MAX_WORKERS=1) as alias:
        [first] = _run_pid_tasks(alias, 1)
        # The server drops the idle worker's connection (a restart, a proxy).
        _terminate_backend(first)
        wait_until(lambda: not _live_backend_pids([first]), message="connection gone")
        # Checked before the next task uses it, found broken, and replaced.
        [second] = _run_pid_tasks(alias, 1)
        assert second != first


# -- the OS refuses a thread -------------------------------------------------

NO_THREAD_SCRIPT = """
import resource
import sys
import threading
from pathlib import Path

import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["tests"],
    USE_TZ=True,
    TASKS={
        "default": {
            "BACKEND": "django_tasks_local.ThreadPoolBackend",
            "OPTIONS": {"MAX_WORKERS": 1},
        }
    },
)
django.setup()

from django.tasks import task_backends

from tests.tasks import log_label

backend = task_backends["default"]
folder = Path(sys.argv[1])
# Every new thread asks for a 1 GiB stack, past the address space allowed:
# the OS refuses ("can't start new thread").
threading.stack_size(1 << 30)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (768 << 20, hard))
refused = log_label.enqueue(str(folder / "refused"), "ran")
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
threading.stack_size(0)
refused = backend.wait_for_result(refused.id, timeout=30)
print(refused.status, refused.errors[0].traceback.splitlines()[-1])
# One worker, in order: had the refused task been queued, it would run first.
later = log_label.enqueue(str(folder / "later"), "ran")
later = backend.wait_for_result(later.id, timeout=30)
print(later.status, (folder / "refused").exists(), (folder / "later").exists())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as Linux applies it")
def test_a_task_whose_worker_thread_cannot_start_fails_and_never_runs(tmp_path):
    done = run_code(NO_THREAD_SCRIPT, str(tmp_path), settings_module=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "FAILED RuntimeError: can't start new thread",
        "SUCCESSFUL False True",
    ], done.stderr
