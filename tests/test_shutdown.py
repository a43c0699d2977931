"""Shutdown: close(), and what happens to tasks when the interpreter exits.

The exit tests run a real interpreter (a script, or ``django-admin runserver``)
in a subprocess with a deadline, on a tiny settings module written for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.tasks import TaskResultStatus, task_backends

from tests import tasks
from tests.helpers import (
    DEADLINE,
    free_port,
    hang_worker_start,
    http_get,
    temporary_alias,
    wait_until,
    wait_until_running,
)
from tests.tasks import finish_in, log_label, square

REPO = Path(__file__).resolve().parent.parent

SITE_SETTINGS = """
import os

SECRET_KEY = "shutdown-tests"
USE_TZ = True
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
# The app of the model that tests/tasks.py imports (no database is used).
INSTALLED_APPS = ["tests"]
ROOT_URLCONF = "shutdown_urls"
DATABASES = {}

OPTIONS = {"MAX_WORKERS": 1}
if "SHUTDOWN_TIMEOUT" in os.environ:
    OPTIONS["SHUTDOWN_TIMEOUT"] = float(os.environ["SHUTDOWN_TIMEOUT"])
TASKS = {
    "default": {"BACKEND": "django_tasks_local.ThreadPoolBackend", "OPTIONS": OPTIONS},
    "processes": {"BACKEND": "django_tasks_local.ProcessPoolBackend", "OPTIONS": OPTIONS},
    "broken": {"BACKEND": "tests.helpers.BrokenShutdownBackend"},
    "unused": {"BACKEND": "django_tasks_local.ThreadPoolBackend"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"django_tasks_local": {"handlers": ["stderr"], "level": "INFO"}},
}
"""

SITE_URLS = """
import os
import time
from pathlib import Path

from django.http import HttpResponse
from django.urls import path

from tests.tasks import block_until


def enqueue_hung_task(request):
    started = Path(os.environ["STARTED_FILE"])
    never = started.with_name("never")
    task = block_until.using(backend=request.GET["backend"])
    task.enqueue(str(never), started=str(started))
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return HttpResponse("started" if started.exists() else "not started")


urlpatterns = [path("enqueue/", enqueue_hung_task)]
"""

EXIT_SCRIPT = """
import sys
import time
from pathlib import Path

import django


def main(backend, scenario, queued, marker):
    from tests.tasks import block_until, finish_in, square

    if scenario == "enqueue-at-exit":
        import atexit

        from django_tasks_local import BackendClosed

        def enqueue_late(alias):
            # atexit hooks run after the backends' exit hook: closing is final.
            try:
                square.using(backend=alias).enqueue(1)
            except BackendClosed as exc:
                print("refused:", exc, flush=True)

        from django.tasks import task_backends

        done = square.using(backend=backend).enqueue(2)
        task_backends[backend].wait_for_result(done.id, timeout=30)
        # The alias used before, then one never used before the exit.
        atexit.register(enqueue_late, "unused")
        atexit.register(enqueue_late, backend)
        print("enqueued", flush=True)
        return
    if scenario == "broken":
        # A backend whose executor fails to shut down, made first: it is
        # closed first at exit, and must not keep `backend` from closing.
        from django.tasks import task_backends

        done = square.using(backend="broken").enqueue(2)
        task_backends["broken"].wait_for_result(done.id, timeout=30)
    if scenario == "slow-receiver":
        from django.tasks.signals import task_finished

        def slow(sender, task_result, **kwargs):
            time.sleep(3)  # a receiver that writes to a slow service, say

        task_finished.connect(slow, weak=False)
    if scenario == "deaf":
        import atexit

        from django.tasks import task_backends

        from tests.tasks import block_until_deaf_to_sigterm

        enqueued = []

        def report():
            # Registered before the pool exists, so it runs after the pool's
            # own exit hook (atexit runs the last registered first).
            result = task_backends[backend].get_result(enqueued[0].id)
            errors = [(e.exception_class_path, e.traceback) for e in result.errors]
            print(result.status, errors, flush=True)

        atexit.register(report)
        never = marker.with_name("never")
        task = block_until_deaf_to_sigterm.using(backend=backend)
        enqueued.append(task.enqueue(str(never), str(marker)))
    elif scenario in ("hang", "broken", "slow-receiver"):
        never = marker.with_name("never")
        block_until.using(backend=backend).enqueue(str(never), started=str(marker))
    else:
        finish_in.using(backend=backend).enqueue(0.5, str(marker))
        marker = marker.with_suffix(".started")
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the first task never started"
    for n in range(queued):
        square.using(backend=backend).enqueue(n)
    print("enqueued", flush=True)
    # Returns with one task running and `queued` waiting: the interpreter exits.


# Guarded: a spawned worker process imports this module too.
if __name__ == "__main__":
    django.setup()
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
"""


@pytest.fixture
def site(tmp_path):
    """Environment for a subprocess that runs Django on the tiny settings module."""
    (tmp_path / "shutdown_site.py").write_text(SITE_SETTINGS)
    (tmp_path / "shutdown_urls.py").write_text(SITE_URLS)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "shutdown_site",
        # src too: the subprocess runs the code of this tree, installed or not.
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), str(REPO / "src")]),
        "STARTED_FILE": str(tmp_path / "started"),
        # Short: the exits with a hung task wait this long for it.
        "SHUTDOWN_TIMEOUT": "0.5",
    }
    return env


def run_exit_script(env, tmp_path, backend, scenario, queued, timeout=DEADLINE):
    (tmp_path / "exit_script.py").write_text(EXIT_SCRIPT)
    marker = tmp_path / f"{scenario}-marker"
    return subprocess.run(
        [
            sys.executable,
            str(tmp_path / "exit_script.py"),
            backend,
            scenario,
            str(queued),
            str(marker),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def package_log_lines(stderr, fragment):
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("django_tasks_local ") and fragment in line
    ]


# -- close() -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_close_then_enqueue_runs_on_fresh_workers(kind):
    with temporary_alias(kind) as own:
        backend = task_backends[own]
        result = square.using(backend=own).enqueue(7)
        assert backend.wait_for_result(result.id, timeout=DEADLINE).return_value == 49
        backend.close(timeout=DEADLINE)
        backend.close(timeout=DEADLINE)
        # Results stay readable after close, and the alias can be used again.
        assert backend.get_result(result.id).return_value == 49
        again = square.using(backend=own).enqueue(8)
        assert backend.wait_for_result(again.id, timeout=DEADLINE).return_value == 64


def test_close_drops_waiting_tasks_with_one_warning_and_lets_the_running_one_finish(
    caplog, tmp_path
):
    with temporary_alias("threads", MAX_WORKERS=1) as own:
        backend = task_backends[own]
        running = finish_in.using(backend=own).enqueue(0.5, str(tmp_path / "done"))
        wait_until_running(own, running.id)
        waiting = [square.using(backend=own).enqueue(n) for n in range(20)]
        with caplog.at_level("WARNING", logger="django_tasks_local"):
            backend.close(timeout=DEADLINE)
        warnings = [r for r in caplog.records if r.name == "django_tasks_local"]
        assert [r.getMessage() for r in warnings] == [
            f"Task backend '{own}' closed with 20 tasks that never started; they were dropped."
        ]
        assert backend.get_result(running.id).status == TaskResultStatus.SUCCESSFUL
        for result in waiting:
            dropped = backend.get_result(result.id)
            assert dropped.status == TaskResultStatus.FAILED
            assert (
                dropped.errors[0].exception_class_path
                == "django_tasks_local.exceptions.NotStarted"
            )


def pool_threads():
    return sum(t.name == "django-tasks-local-pool" for t in threading.enumerate())


def test_close_right_away_drops_the_tasks_of_workers_still_starting(
    caplog, tmp_path, monkeypatch
):
    gate = hang_worker_start(tmp_path, monkeypatch)
    pools_before = pool_threads()
    ran = tmp_path / "ran"
    with temporary_alias("processes", MP_CONTEXT="spawn", MAX_WORKERS=2) as own:
        backend = task_backends[own]
        try:
            results = [
                log_label.using(backend=own).enqueue(str(ran), n) for n in range(3)
            ]
            with caplog.at_level("WARNING", logger="django_tasks_local"):
                backend.close(timeout=0)
        finally:
            gate.touch()
        assert [
            r.getMessage() for r in caplog.records if r.name == "django_tasks_local"
        ] == [
            f"Task backend '{own}' closed with 3 tasks that never started; they were dropped."
        ]
        for result in results:
            dropped = backend.get_result(result.id)
            assert dropped.status == TaskResultStatus.FAILED
            assert dropped.errors[0].exception_class_path.endswith(".NotStarted")
        # The closed pool's workers start, find nothing to run, and stop; its
        # supervisor ends with the last of them.
        wait_until(lambda: pool_threads() == pools_before, message="the pool ended")
        assert not ran.exists()


def test_close_waits_no_longer_than_its_timeout_for_a_hung_task(caplog):
    tasks.reset_wait_for_event()
    with temporary_alias("threads", MAX_WORKERS=1) as own:
        backend = task_backends[own]
        try:
            hung = tasks.wait_for_event.using(backend=own).enqueue()
            assert tasks.wait_for_event_started.wait(DEADLINE)
            with caplog.at_level("WARNING", logger="django_tasks_local"):
                backend.close(timeout=0.2)
            assert backend.get_result(hung.id).status == TaskResultStatus.RUNNING
            assert [
                r.getMessage() for r in caplog.records if r.name == "django_tasks_local"
            ] == [f"Task backend '{own}' closed while tasks were still running."]
        finally:
            # Let it end: the alias's last close waits for it.
            tasks.wait_for_event_release.set()


def test_shutdown_timeout_defaults_to_five_seconds():
    with temporary_alias("threads") as own:
        assert task_backends[own].settings["SHUTDOWN_TIMEOUT"] == 5.0
        assert task_backends[own].runtime.config.shutdown_timeout == 5.0


# -- interpreter exit ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["default", "processes"])
def test_an_enqueue_after_the_exit_hook_raises_backend_closed(site, tmp_path, backend):
    done = run_exit_script(site, tmp_path, backend, "enqueue-at-exit", queued=0)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "enqueued\n"
        f"refused: Task backend {backend!r} is closed: the interpreter is exiting, "
        "so it cannot enqueue 'tests.tasks.square'.\n"
        "refused: Task backend 'unused' is closed: the interpreter is exiting, "
        "so it cannot enqueue 'tests.tasks.square'.\n"
    )


@pytest.mark.parametrize("backend", ["default", "processes"])
def test_exit_with_a_hung_task_and_waiting_tasks(site, tmp_path, backend):
    done = run_exit_script(site, tmp_path, backend, "hang", queued=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "enqueued\n"
    dropped = package_log_lines(done.stderr, "that never started")
    assert dropped == [
        f"django_tasks_local WARNING Task backend '{backend}' closed with 300 tasks "
        "that never started; they were dropped."
    ], done.stderr
    assert len(package_log_lines(done.stderr, "still running")) == 1, done.stderr


@pytest.mark.parametrize("backend", ["default", "processes"])
def test_exit_is_not_held_up_by_a_slow_receiver_of_the_dropped_tasks(
    site, tmp_path, backend
):
    # 10 dropped tasks and a 3 s task_finished receiver: sent one after the
    # other in the exiting thread, they held the exit 30 s.
    done = run_exit_script(
        site, tmp_path, backend, "slow-receiver", queued=10, timeout=DEADLINE / 4
    )
    assert done.returncode == 0, done.stderr
    assert package_log_lines(done.stderr, "closed with 10 tasks that never started")


def test_exit_kills_a_process_task_deaf_to_sigterm_after_the_shutdown_timeout(
    site, tmp_path
):
    # multiprocessing's own exit hook would send SIGTERM and then wait for
    # the worker, for as long as the task runs.
    site["SHUTDOWN_TIMEOUT"] = "1"
    done = run_exit_script(site, tmp_path, "processes", "deaf", queued=0, timeout=15)
    assert done.returncode == 0, done.stderr
    enqueued, report = done.stdout.splitlines()
    assert enqueued == "enqueued"
    assert report.startswith(
        "FAILED [('django_tasks_local.exceptions.WorkerCrashed', "
    ), done.stdout
    assert "killed by signal SIGKILL" in report
    assert len(package_log_lines(done.stderr, "still running")) == 1, done.stderr


def test_exit_closes_every_backend_when_one_fails_to(site, tmp_path):
    done = run_exit_script(site, tmp_path, "default", "broken", queued=10)
    assert done.returncode == 0, done.stderr
    failed = package_log_lines(done.stderr, "failed")
    assert failed == ["django_tasks_local ERROR Closing task backend 'broken' failed."]
    assert "RuntimeError: this executor cannot shut down" in done.stderr
    assert package_log_lines(done.stderr, "closed with 10 tasks that never started")


# inf and 1e12: longer than threading and the exit hook can wait in one go.
@pytest.mark.parametrize("shutdown_timeout", ["30", "inf", "1e12"])
@pytest.mark.parametrize("backend", ["default", "processes"])
def test_exit_gives_a_running_task_time_to_finish(
    site, tmp_path, backend, shutdown_timeout
):
    site["SHUTDOWN_TIMEOUT"] = shutdown_timeout
    done = run_exit_script(site, tmp_path, backend, "finish", queued=0)
    assert done.returncode == 0, done.stderr
    # Written by the task half a second after it started, after the script ended.
    assert (tmp_path / "finish-marker").read_text() == "finished"
    assert not package_log_lines(done.stderr, "still running"), done.stderr


# -- runserver ---------------------------------------------------------------


def live_processes_in_group(pgid):
    """Pids (not zombies) whose process group is ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ")".
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    ("reload", "signum", "backend"),
    [
        (True, signal.SIGINT, "default"),
        (True, signal.SIGTERM, "default"),
        (False, signal.SIGINT, "default"),
        (True, signal.SIGINT, "processes"),
        (False, signal.SIGINT, "processes"),
    ],
    ids=[
        "reload-SIGINT",
        "reload-SIGTERM",
        "noreload-SIGINT",
        "processes-reload-SIGINT",
        "processes-noreload-SIGINT",
    ],
)
def test_runserver_exits_with_a_hung_task(site, tmp_path, reload, signum, backend):
    port = free_port()
    command = [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}"]
    if not reload:
        command.append("--noreload")
    log = (tmp_path / "runserver.log").open("w")
    # A session of its own: the signal goes to its whole process group, as
    # Ctrl-C in a terminal (or a process manager stopping a service) does.
    server = subprocess.Popen(
        command,
        env=site,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        assert (
            http_get(f"http://127.0.0.1:{port}/enqueue/?backend={backend}", deadline)
            == "started"
        )
        os.killpg(server.pid, signum)
        server.wait(timeout=DEADLINE)
        deadline = time.monotonic() + DEADLINE
        while live_processes_in_group(server.pid):
            assert time.monotonic() < deadline, (tmp_path / "runserver.log").read_text()
            time.sleep(0.1)
    finally:
        if live_processes_in_group(server.pid):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=DEADLINE)
        log.close()
