"""ProcessPoolBackend in a real Django project: ORM, connections, crashes, timeouts, forks.

Start methods cost differently: a forked child is ready at once, a spawned or
forkserver child runs django.setup() first (about half a second). So most
tests fork; spawn runs on the settings' shared ``processes`` alias, and the
forkserver tests share one backend.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist

from django_tasks_local import ProcessPoolBackend
from tests import tasks
from tests.helpers import (
    DEADLINE,
    free_port,
    hang_worker_start,
    http_get,
    postgres_pid,
    read_log,
    run_code,
    run_script,
    temporary_alias,
    wait_until,
    wait_until_running,
)
from tests.models import Record

pytestmark = pytest.mark.filterwarnings(
    # The test process has threads (other pools' supervisors) when it forks.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

ROOT = Path(__file__).resolve().parent.parent

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL
FAILED = TaskResultStatus.FAILED


def make_backend(alias: str, **options: Any) -> ProcessPoolBackend:
    return ProcessPoolBackend(
        alias, {"BACKEND": "django_tasks_local.ProcessPoolBackend", "OPTIONS": options}
    )


def enqueue(backend: ProcessPoolBackend, task: Any, *args: Any) -> str:
    return backend.enqueue(task, list(args), {}).id


def worker_pid(result: Any) -> int:
    host, pid = result.worker_ids[-1].split(":")
    assert host == socket.gethostname()
    return int(pid)


def crash_error(result: Any) -> str:
    assert result.status == FAILED
    [error] = result.errors
    assert error.exception_class_path == "django_tasks_local.exceptions.WorkerCrashed"
    return str(error.traceback)


@pytest.fixture(scope="module")
def backends() -> Iterator[Callable[..., ProcessPoolBackend]]:
    """Backends shared by a module's tests, closed at its end.

    pytest-django runs the transactional tests first, so this fixture may be
    set up twice in one session: each time with new aliases (a closed
    backend's runtime stays closed).
    """
    made: dict[str, ProcessPoolBackend] = {}
    suffix = os.urandom(4).hex()

    def get(name: str, **options: Any) -> ProcessPoolBackend:
        if name not in made:
            made[name] = make_backend(f"{name}-{suffix}", **options)
        return made[name]

    yield get
    for backend in made.values():
        backend.close(timeout=10)


@pytest.fixture
def fork2(backends: Callable[..., ProcessPoolBackend]) -> ProcessPoolBackend:
    return backends("fork2", MP_CONTEXT="fork", MAX_WORKERS=2)


@pytest.fixture
def fork1(backends: Callable[..., ProcessPoolBackend]) -> ProcessPoolBackend:
    return backends("fork1", MP_CONTEXT="fork", MAX_WORKERS=1)


@pytest.fixture
def forkserver(backends: Callable[..., ProcessPoolBackend]) -> ProcessPoolBackend:
    return backends(
        "forkserver", MP_CONTEXT="forkserver", MAX_WORKERS=1, MAX_TASKS_PER_CHILD=2
    )


@pytest.fixture
def spawn() -> ProcessPoolBackend:
    backend = task_backends["processes"]
    assert isinstance(backend, ProcessPoolBackend)
    assert backend.settings["MP_CONTEXT"] == "spawn"
    return backend


@pytest.fixture
def fresh_fork() -> Iterator[ProcessPoolBackend]:
    """A backend whose children are forked after the test's own set-up."""
    backend = make_backend(
        f"fresh-{os.urandom(4).hex()}", MP_CONTEXT="fork", MAX_WORKERS=1
    )
    yield backend
    backend.close(timeout=10)


# -- Django-ready children ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_tasks_use_the_orm_under_every_start_method(
    request: pytest.FixtureRequest, start_method: str
) -> None:
    backend = request.getfixturevalue({"fork": "fork1"}.get(start_method, start_method))
    assert backend.settings["MP_CONTEXT"] == start_method
    Record.objects.create(label="from the parent")
    result = backend.wait_for_result(
        enqueue(backend, tasks.orm_roundtrip, f"from a {start_method} child"),
        DEADLINE,
    )
    assert result.status == SUCCESSFUL, result.errors
    assert result.return_value == {
        "labels": [f"from a {start_method} child", "from the parent"],
        "in_atomic_block": False,
    }
    child = Record.objects.get(label=f"from a {start_method} child")
    assert child.value == worker_pid(result) != os.getpid()


CONFIGURED_IN_CODE = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    options = {"MAX_WORKERS": 1, "MP_CONTEXT": sys.argv[1]}
    settings.configure(
        INSTALLED_APPS=["tests"],
        USE_TZ=True,
        TASKS={"default": {"BACKEND": "django_tasks_local.ProcessPoolBackend", "OPTIONS": options}},
    )
    django.setup()
    from django.tasks import default_task_backend
    from tests.tasks import add

    result = default_task_backend.wait_for_result(add.enqueue(1, 2).id, 30)
    value = result.return_value if result.status == "SUCCESSFUL" else None
    print(result.status, value)
    for error in result.errors:
        print(error.exception_class_path)
        print(error.traceback)
    """
)


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_settings_configured_in_code_reach_no_fresh_worker_and_the_error_says_so(
    start_method: str,
) -> None:
    done = run_code(CONFIGURED_IN_CODE, start_method, settings_module=None)
    assert done.returncode == 0, done.stderr
    status, *report = done.stdout.strip().splitlines()
    if start_method == "fork":  # a copy of the configured settings: the fix
        assert status == "SUCCESSFUL 3", done.stdout
        return
    assert status == "FAILED None"
    assert report[0] == "django_tasks_local.exceptions.WorkerError"
    assert report[-1] == (
        "django.core.exceptions.ImproperlyConfigured: A worker process that "
        "starts afresh (MP_CONTEXT 'spawn' or 'forkserver') has no Django "
        "settings: DJANGO_SETTINGS_MODULE is not set, and settings.configure() "
        "in the web process does not reach it. Set DJANGO_SETTINGS_MODULE to "
        "your settings module, or use MP_CONTEXT 'fork', whose workers copy "
        "the settings of the web process."
    ), done.stdout


# -- connections ------------------------------------------------------------


def postgres_sessions() -> set[int]:
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_a_worker_has_its_own_connection_and_leaves_the_parents_alone(
    fresh_fork: ProcessPoolBackend,
) -> None:
    # (A connection the forking thread itself holds: see test_executors_processes.py.)
    parent_pid = postgres_pid()  # open before the child is forked
    first = fresh_fork.wait_for_result(
        enqueue(fresh_fork, tasks.postgres_backend_pid), DEADLINE
    )
    assert first.status == SUCCESSFUL, first.errors
    assert first.return_value != parent_pid
    # The child did not close the parent's session either.
    assert postgres_pid() == parent_pid


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_with_conn_max_age_0_the_childs_connection_closes_after_each_task(
    fresh_fork: ProcessPoolBackend,
) -> None:
    assert connections["postgres"].settings_dict["CONN_MAX_AGE"] == 0
    result = fresh_fork.wait_for_result(
        enqueue(fresh_fork, tasks.postgres_backend_pid), DEADLINE
    )
    assert result.status == SUCCESSFUL, result.errors
    wait_until(
        lambda: result.return_value not in postgres_sessions(),
        message="the task's connection closed",
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_with_persistent_connections_the_child_reuses_its_connection(
    fresh_fork: ProcessPoolBackend,
) -> None:
    # The forked child copies the settings as they are when it starts.
    settings_dict = connections["postgres"].settings_dict
    settings_dict["CONN_MAX_AGE"] = None
    try:
        pids = [
            fresh_fork.wait_for_result(
                enqueue(fresh_fork, tasks.postgres_backend_pid), DEADLINE
            ).return_value
            for _ in range(2)
        ]
    finally:
        settings_dict["CONN_MAX_AGE"] = 0
    assert pids[0] == pids[1]
    assert pids[0] in postgres_sessions()
    fresh_fork.close(timeout=10)
    # The child's exit ends its session.
    wait_until(
        lambda: pids[0] not in postgres_sessions(),
        message="the child's session ended with it",
    )


# -- true state -------------------------------------------------------------


def test_a_task_is_running_only_once_a_child_starts_it(
    fork1: ProcessPoolBackend, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    first_id = enqueue(fork1, tasks.block_until, str(release))
    second_id = enqueue(fork1, tasks.add, 1, 2)
    first = wait_until_running(fork1, first_id)
    assert first.started_at is not None
    # The only child is busy: the second task has not started.
    second = fork1.get_result(second_id)
    assert second.status == READY
    assert second.started_at is None
    assert second.worker_ids == []
    release.touch()
    first = fork1.wait_for_result(first_id, DEADLINE)
    second = fork1.wait_for_result(second_id, DEADLINE)
    # The worker id names the child that ran the task.
    assert worker_pid(first) == first.return_value != os.getpid()
    assert second.return_value == 3
    assert second.started_at >= first.finished_at


# -- crashed workers --------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "args", "message"),
    [
        (tasks.exit_hard, (1,), "exited with code 1"),
        (tasks.segfault, (), "killed by signal SIGSEGV"),
    ],
    ids=["exit", "segfault"],
)
def test_a_task_that_kills_its_worker_fails_and_the_others_run(
    fork2: ProcessPoolBackend, tmp_path: Path, task: Any, args: Any, message: str
) -> None:
    release = tmp_path / "release"
    running_id = enqueue(fork2, tasks.block_until, str(release))
    wait_until_running(fork2, running_id)
    crash_id = enqueue(fork2, task, *args)
    queued = [enqueue(fork2, tasks.add, n, n) for n in range(4)]
    crashed = fork2.wait_for_result(crash_id, DEADLINE)
    assert message in crash_error(crashed)
    assert f"pid {worker_pid(crashed)}" in crash_error(crashed)
    # The queued tasks run on a rebuilt child; the running one goes on.
    for n, result_id in enumerate(queued):
        result = fork2.wait_for_result(result_id, DEADLINE)
        assert (result.status, result.return_value) == (SUCCESSFUL, 2 * n)
        assert worker_pid(result) != worker_pid(crashed)
    assert fork2.get_result(running_id).status == RUNNING
    release.touch()
    assert fork2.wait_for_result(running_id, DEADLINE).status == SUCCESSFUL
    later = fork2.wait_for_result(enqueue(fork2, tasks.add, 2, 3), DEADLINE)
    assert later.return_value == 5


def test_a_worker_killed_from_outside_fails_its_task_and_the_others_run(
    fork2: ProcessPoolBackend, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    victim_id = enqueue(fork2, tasks.block_until, str(tmp_path / "never"))
    other_id = enqueue(fork2, tasks.block_until, str(release))
    queued = [enqueue(fork2, tasks.add, n, 1) for n in range(3)]
    victim = wait_until_running(fork2, victim_id)
    wait_until_running(fork2, other_id)
    os.kill(worker_pid(victim), signal.SIGKILL)  # as the OOM killer does
    victim = fork2.wait_for_result(victim_id, DEADLINE)
    assert f"pid {worker_pid(victim)})" in crash_error(victim)
    assert "killed by signal SIGKILL" in crash_error(victim)
    for n, result_id in enumerate(queued):
        assert fork2.wait_for_result(result_id, DEADLINE).return_value == n + 1
    release.touch()
    assert fork2.wait_for_result(other_id, DEADLINE).status == SUCCESSFUL


NO_NEW_WORKER_SCRIPT = """
import os
import signal
import sys
from pathlib import Path

import django


def main(tmp):
    from django.tasks import task_backends

    from tests.helpers import DEADLINE, no_file_descriptors_left, wait_until_running
    from tests.tasks import block_until, square

    backend = task_backends["processes"]
    running = block_until.using(backend="processes").enqueue(str(tmp / "never"))
    worker = wait_until_running(backend, running.id).worker_ids[0]
    # They wait in the backend for the only worker.
    waiting = [square.using(backend="processes").enqueue(n) for n in (2, 3)]
    with no_file_descriptors_left():
        # As the OOM killer does: no worker is left, and none can start.
        os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
        for result in (running, *waiting):
            result = backend.wait_for_result(result.id, DEADLINE)
            [error] = result.errors
            print(error.exception_class_path, error.traceback.splitlines()[-1])
    later = square.using(backend="processes").enqueue(4)
    print(backend.wait_for_result(later.id, DEADLINE).return_value)


if __name__ == "__main__":
    django.setup()
    main(Path(sys.argv[1]))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc")
def test_when_no_worker_can_start_the_waiting_tasks_fail_and_later_ones_run(
    tmp_path: Path,
) -> None:
    # The second waiting task is handed to the pool when the first fails,
    # in the pool's own thread: it must not be left READY for ever.
    options = {"MAX_WORKERS": 1, "MP_CONTEXT": "fork"}
    backend = {"BACKEND": "django_tasks_local.ProcessPoolBackend", "OPTIONS": options}
    done = run_script(
        tmp_path, NO_NEW_WORKER_SCRIPT, str(tmp_path), tasks={"processes": backend}
    )
    assert done.returncode == 0, done.stderr
    cannot_start = (
        "django_tasks_local.exceptions.WorkerError django_tasks_local.exceptions."
        "WorkerError: A worker process could not be started: "
        "OSError(24, 'Too many open files')"
    )
    crashed, *refused, later = done.stdout.splitlines()
    assert crashed.startswith("django_tasks_local.exceptions.WorkerCrashed "), crashed
    assert "killed by signal SIGKILL" in crashed
    assert refused == [cannot_start] * 2, done.stderr
    assert later == "16"


# -- workers that do not start ------------------------------------------------


@pytest.fixture
def hanging_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Spawned workers hang importing their settings until ``release`` (the
    path yielded) exists; it is made at the end."""
    release = hang_worker_start(tmp_path, monkeypatch)
    yield release
    release.touch()


def is_alive(pid: int) -> bool:
    """Whether the process exists (a zombie not yet reaped counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_that_does_not_start_in_time_is_killed_and_its_task_fails(
    hanging_settings: Path,
) -> None:
    with temporary_alias("processes", MAX_WORKERS=1, WORKER_START_TIMEOUT=1) as alias:
        backend = task_backends[alias]
        hung = backend.wait_for_result(enqueue(backend, tasks.add, 1, 1), DEADLINE)
        assert hung.status == FAILED
        [error] = hung.errors
        assert error.exception_class_path == "django_tasks_local.exceptions.WorkerError"
        assert "did not start within 1s, and was killed" in error.traceback
        assert not is_alive(int((hanging_settings.parent / "importing").read_text()))
        # Not broken: once the settings import, a new worker runs the next task.
        hanging_settings.touch()
        later = backend.wait_for_result(enqueue(backend, tasks.add, 2, 2), DEADLINE)
        assert (later.status, later.return_value) == (SUCCESSFUL, 4)


def test_close_with_a_worker_hung_starting_drops_its_task_and_the_worker_ends(
    hanging_settings: Path,
) -> None:
    importing = hanging_settings.parent / "importing"
    with temporary_alias("processes", MAX_WORKERS=1, WORKER_START_TIMEOUT=1) as alias:
        backend = task_backends[alias]
        result_id = enqueue(backend, tasks.add, 1, 1)
        wait_until(importing.exists, message="the worker imports its settings")
        closing = threading.Thread(target=backend.close, args=(1,))
        closing.start()
        closing.join(DEADLINE)
        assert not closing.is_alive()
        dropped = backend.wait_for_result(result_id, DEADLINE)
        assert dropped.status == FAILED
        [error] = dropped.errors
        assert error.exception_class_path == "django_tasks_local.exceptions.NotStarted"
        # Not left behind: killed at its start timeout, though its pool is closed.
        worker = int(importing.read_text())
        wait_until(lambda: not is_alive(worker), message="the hung worker ends")


# -- timeouts ---------------------------------------------------------------


def test_a_task_past_its_timeout_is_killed_and_the_other_child_goes_on(
    backends: Callable[..., ProcessPoolBackend], tmp_path: Path
) -> None:
    timeout = 1.5
    backend = backends("timeout", MP_CONTEXT="fork", MAX_WORKERS=2, TIMEOUT=timeout)
    halfway = tmp_path / "halfway"
    late_id = enqueue(backend, tasks.overrun, str(halfway), timeout * 2 / 3)
    late = wait_until_running(backend, late_id)
    wait_until(halfway.exists, message="the task is halfway")
    # Started two thirds of a timeout later, this one runs while the first is
    # killed and ends (well within its own timeout) once that child is gone.
    other_id = enqueue(backend, tasks.wait_until_gone, worker_pid(late))
    late = backend.wait_for_result(late_id, DEADLINE)
    assert late.status == FAILED
    [error] = late.errors
    assert error.exception_class_path == "django_tasks_local.exceptions.TaskTimeout"
    assert f"timeout of {timeout}s" in error.traceback
    other = backend.wait_for_result(other_id, DEADLINE)
    assert (other.status, other.return_value) == (SUCCESSFUL, True)
    assert backend.wait_for_result(
        enqueue(backend, tasks.add, 1, 1), DEADLINE
    ).status == (SUCCESSFUL)


@pytest.mark.parametrize("timeout", [math.inf, 25 * 24 * 3600.0], ids=["inf", "25d"])
def test_a_timeout_too_long_to_wait_in_one_go_still_holds(
    backends: Callable[..., ProcessPoolBackend], timeout: float
) -> None:
    # Beyond the longest wait epoll takes (about 24.8 days): used to break the
    # pool with OverflowError at the first task.
    backend = backends("long", MP_CONTEXT="fork", MAX_WORKERS=1, TIMEOUT=timeout)
    assert backend.check() == []
    for n in range(2):
        done = backend.wait_for_result(enqueue(backend, tasks.add, n, 1), DEADLINE)
        assert (done.status, done.return_value) == (SUCCESSFUL, n + 1)


# -- waiting tasks when a worker ends --------------------------------------


def test_waiting_tasks_run_on_a_new_worker_when_the_worker_dies(
    fork1: ProcessPoolBackend, tmp_path: Path
) -> None:
    victim_id = enqueue(fork1, tasks.block_until, str(tmp_path / "never"))
    victim = wait_until_running(fork1, victim_id)
    ahead_id = enqueue(fork1, tasks.pid)
    waiting_id = enqueue(fork1, tasks.pid)
    assert fork1.get_result(ahead_id).status == READY
    os.kill(worker_pid(victim), signal.SIGKILL)
    assert "SIGKILL" in crash_error(fork1.wait_for_result(victim_id, DEADLINE))
    for result_id in (ahead_id, waiting_id):
        result = fork1.wait_for_result(result_id, DEADLINE)
        assert result.status == SUCCESSFUL
        assert result.return_value == worker_pid(result) != worker_pid(victim)
        assert len(result.worker_ids) == 1


def test_a_waiting_task_runs_on_a_new_worker_after_a_timeout(
    backends: Callable[..., ProcessPoolBackend], tmp_path: Path
) -> None:
    backend = backends("timeout1", MP_CONTEXT="fork", MAX_WORKERS=1, TIMEOUT=0.5)
    halfway = tmp_path / "halfway"
    late_id = enqueue(backend, tasks.overrun, str(halfway), 0.0)
    late = wait_until_running(backend, late_id)
    ahead_id = enqueue(backend, tasks.pid)
    late = backend.wait_for_result(late_id, DEADLINE)
    [error] = late.errors
    assert error.exception_class_path == "django_tasks_local.exceptions.TaskTimeout"
    ahead = backend.wait_for_result(ahead_id, DEADLINE)
    assert ahead.status == SUCCESSFUL
    assert ahead.return_value == worker_pid(ahead) != worker_pid(late)


def test_close_drops_the_waiting_tasks_and_waits_for_the_running_one(
    fresh_fork: ProcessPoolBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = tmp_path / "release"
    running_id = enqueue(fresh_fork, tasks.block_until, str(release))
    wait_until_running(fresh_fork, running_id)
    ahead_id = enqueue(fresh_fork, tasks.add, 1, 1)
    waiting_id = enqueue(fresh_fork, tasks.add, 2, 2)
    closing = threading.Thread(target=fresh_fork.close, args=(DEADLINE,))
    closing.start()
    for result_id in (ahead_id, waiting_id):
        dropped = fresh_fork.wait_for_result(result_id, DEADLINE)
        assert dropped.status == FAILED
        assert dropped.worker_ids == []
        [error] = dropped.errors
        assert error.exception_class_path == "django_tasks_local.exceptions.NotStarted"
    # The running task was not touched: it finishes, and close() waits for it.
    assert fresh_fork.get_result(running_id).status == RUNNING
    release.touch()
    closing.join(DEADLINE)
    assert fresh_fork.get_result(running_id).status == SUCCESSFUL
    assert "closed with 2 tasks that never started" in caplog.text


# -- recycling --------------------------------------------------------------


def test_max_tasks_per_child_replaces_the_child(forkserver: ProcessPoolBackend) -> None:
    ids = [enqueue(forkserver, tasks.pid) for _ in range(4)]
    results = [forkserver.wait_for_result(result_id, DEADLINE) for result_id in ids]
    pids = [worker_pid(result) for result in results]
    assert pids == [result.return_value for result in results]
    # One child at a time, two tasks each at most (an earlier test may have
    # used the first child once already).
    assert len(set(pids)) >= 2
    assert max(Counter(pids).values()) <= 2


def test_max_tasks_per_child_with_fork_is_a_configuration_error() -> None:
    backend = make_backend("fork-recycling", MP_CONTEXT="fork", MAX_TASKS_PER_CHILD=5)
    errors = backend.check()
    assert [error.id for error in errors] == ["django_tasks_local.E003"]
    assert "MAX_TASKS_PER_CHILD" in errors[0].msg
    with pytest.raises(ImproperlyConfigured, match="E003"):
        enqueue(backend, tasks.add, 1, 2)


# -- forks of the web process -----------------------------------------------

FORKED_WEB_PROCESS = textwrap.dedent(
    """
    import os, sys
    import django
    django.setup()
    from django.tasks import task_backends
    from tests.tasks import pid

    def run(alias):
        backend = task_backends[alias]
        result = backend.wait_for_result(pid.using(backend=alias).enqueue().id, 30)
        assert result.status == "SUCCESSFUL", result.errors
        return result.return_value

    # Made and used before the fork, as gunicorn --preload does.
    before = {alias: run(alias) for alias in ("threads", "processes")}
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            after = {alias: run(alias) for alias in ("threads", "processes")}
            assert after["threads"] == os.getpid(), after
            # Its own pool: a new worker process, not the parent's.
            assert after["processes"] not in (before["processes"], os.getpid()), after
            os.write(writer, b"ok")
            code = 0
        except BaseException as exc:
            os.write(writer, repr(exc).encode())
        os._exit(code)
    os.close(writer)
    report = os.read(reader, 4096).decode()
    _, status = os.waitpid(child, 0)
    # The parent's backends still work.
    assert run("processes") == before["processes"]
    print(report, os.waitstatus_to_exitcode(status))
    """
)


def test_a_backend_made_before_a_fork_works_in_the_forked_process() -> None:
    done = run_code(FORKED_WEB_PROCESS, timeout=DEADLINE * 2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "0"], done.stderr


FORKED_COPY_EXITS = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import django
    django.setup()
    from django.tasks import task_backends
    from tests.tasks import block_until

    started, release = Path(sys.argv[1]), Path(sys.argv[2])
    task = block_until.using(backend="processes")
    result = task.enqueue(str(release), started=str(started))
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    child = os.fork()
    if child == 0:
        # An exit with every exit hook, as a gunicorn worker's (--preload)
        # after --max-requests.
        sys.exit(0)
    _, status = os.waitpid(child, 0)
    release.touch()
    result = task_backends["processes"].wait_for_result(result.id, 30)
    print(os.waitstatus_to_exitcode(status), result.status, result.errors)
    """
)


def test_a_forked_copy_that_exits_leaves_the_workers_alone(tmp_path: Path) -> None:
    done = run_code(
        FORKED_COPY_EXITS,
        str(tmp_path / "started"),
        str(tmp_path / "release"),
        timeout=DEADLINE * 2,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "SUCCESSFUL", "[]"], done.stderr
    assert "AssertionError" not in done.stderr, done.stderr


PRELOADED_APP = """
import os
import threading
from pathlib import Path

import django

django.setup()

from django.tasks import task_backends

from tests.tasks import block_until

# Imported once, in the master (--preload): its task runs in the master's pool.
here = Path(os.environ["WORK_DIR"])
task = block_until.using(backend="processes")
result = task.enqueue(str(here / "release"), started=str(here / "started"))


def record_outcome():
    outcome = task_backends["processes"].wait_for_result(result.id, 120)
    (here / "outcome").write_text(outcome.status)


threading.Thread(target=record_outcome, daemon=True).start()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_gunicorn_preload_recycling_its_workers_leaves_the_masters_task_alone(
    tmp_path: Path,
) -> None:
    (tmp_path / "preloaded_app.py").write_text(PRELOADED_APP)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "src")]),
        "WORK_DIR": str(tmp_path),
    }
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "--preload",
                "--workers=1",
                "--max-requests=1",
                f"--bind=127.0.0.1:{port}",
                "preloaded_app:application",
            ],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until((tmp_path / "started").exists, message="the master's task started")
        deadline = time.monotonic() + DEADLINE
        url = f"http://127.0.0.1:{port}/"
        first = http_get(url, deadline)
        # That worker exits after one request (and the master replaces it
        # only once it has reaped it): a fork of the master that ran its exit.
        assert http_get(url, deadline) != first
        (tmp_path / "release").touch()
        outcome = tmp_path / "outcome"
        wait_until(outcome.exists, message="the master's task finished")
        assert outcome.read_text() == "SUCCESSFUL", log_path.read_text()
        assert "AssertionError" not in log_path.read_text()
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=DEADLINE)


# -- enqueue from inside a worker ---------------------------------------------


@pytest.mark.parametrize("alias", ["processes", "threads"])
def test_a_task_enqueued_in_a_worker_runs_in_the_parents_backend(
    spawn: ProcessPoolBackend, alias: str
) -> None:
    outer = spawn.wait_for_result(
        enqueue(spawn, tasks.enqueue_add, alias, 2, 3), DEADLINE
    )
    assert outer.status == SUCCESSFUL, outer.errors
    assert outer.return_value["status"] == READY
    assert outer.return_value["backend"] == alias
    inner = task_backends[alias].wait_for_result(outer.return_value["id"], DEADLINE)
    assert (inner.status, inner.return_value) == (SUCCESSFUL, 5)


def test_threads_of_a_worker_enqueue_at_once_during_calls_and_between_them(
    tmp_path: Path,
) -> None:
    threads, each = 4, 5
    log, go = tmp_path / "log", tmp_path / "go"
    with temporary_alias("processes", MP_CONTEXT="fork", MAX_WORKERS=1) as alias:
        backend = task_backends[alias]
        starter = backend.wait_for_result(
            enqueue(
                backend,
                tasks.enqueue_from_threads,
                alias,
                str(log),
                threads,
                each,
                str(go),
            ),
            DEADLINE,
        )
        assert starter.status == SUCCESSFUL, starter.errors
        # The threads' first enqueues run on the one worker, between calls of
        # the test's own; their second ones come while it waits for a call.
        between = [enqueue(backend, tasks.pid) for _ in range(3)]
        go.touch()
        done = Path(f"{log}.done")
        wait_until(
            lambda: done.exists() and len(done.read_text().split()) == threads,
            message="every thread done",
        )
        after = [enqueue(backend, tasks.pid) for _ in range(3)]
        backend.wait_until_idle(DEADLINE)
        assert not Path(f"{log}.errors").exists(), Path(f"{log}.errors").read_text()
        assert sorted(read_log(log)) == sorted(
            f"{number}-{n}" for number in range(threads) for n in range(2 * each)
        )
        for result_id in between + after:
            result = backend.get_result(result_id)
            assert result.status == SUCCESSFUL, result.errors
            # The same worker all along: nothing broke it.
            assert result.return_value == starter.return_value


@pytest.mark.django_db(transaction=True)
def test_a_task_enqueued_in_a_workers_transaction_waits_for_its_commit(
    spawn: ProcessPoolBackend,
) -> None:
    committed = spawn.wait_for_result(
        enqueue(spawn, tasks.enqueue_in_transaction, "threads", "kept", True),
        DEADLINE,
    )
    assert committed.status == SUCCESSFUL, committed.errors
    inner = task_backends["threads"].wait_for_result(committed.return_value, DEADLINE)
    assert inner.return_value == 1  # it saw the committed row
    rolled_back = spawn.wait_for_result(
        enqueue(spawn, tasks.enqueue_in_transaction, "threads", "gone", False),
        DEADLINE,
    )
    assert rolled_back.status == SUCCESSFUL, rolled_back.errors
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["threads"].get_result(rolled_back.return_value)


@pytest.mark.django_db(transaction=True)
def test_a_bad_enqueue_caught_in_a_workers_transaction_costs_the_task_nothing(
    spawn: ProcessPoolBackend,
) -> None:
    # The bad enqueue raised in the task and registered nothing for the
    # commit: the task, and the good enqueue after it, succeed.
    outer = spawn.wait_for_result(
        enqueue(spawn, tasks.enqueue_a_bad_argument_in_transaction, "threads"),
        DEADLINE,
    )
    assert outer.status == SUCCESSFUL, outer.errors
    assert "args[0] is not JSON" in outer.return_value["refused"]
    inner = task_backends["threads"].wait_for_result(outer.return_value["id"], DEADLINE)
    assert (inner.status, inner.return_value) == (SUCCESSFUL, 49)


def test_in_worker_process_tells_a_worker_from_the_web_process(
    spawn: ProcessPoolBackend,
) -> None:
    # What an AppConfig.ready() can check to start its side effects only once
    # (docs/gotchas.md).
    from django_tasks_local.executors.processes import in_worker_process

    done = spawn.wait_for_result(enqueue(spawn, tasks.runs_in_worker_process), DEADLINE)
    assert (done.status, done.return_value) == (SUCCESSFUL, True)
    assert in_worker_process() is False


READY_ENQUEUER_SETTINGS = """
from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "ready_enqueuer.EnqueuerConfig"]  # noqa: F405
"""

READY_ENQUEUER_APP = """
import os

from django.apps import AppConfig

from django_tasks_local.executors.processes import in_worker_process


class EnqueuerConfig(AppConfig):
    name = "ready_enqueuer"

    def ready(self):
        # As a scheduler started here would: an enqueue while the worker
        # sets Django up.
        if in_worker_process():
            from tests.tasks import append_pid

            append_pid.using(backend="threads").enqueue(os.environ["PID_LOG"])
"""


def test_an_enqueue_in_a_workers_app_ready_runs_in_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ready_enqueuer_settings.py").write_text(READY_ENQUEUER_SETTINGS)
    (tmp_path / "ready_enqueuer.py").write_text(READY_ENQUEUER_APP)
    log = tmp_path / "pids"
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get sys.path
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "ready_enqueuer_settings")
    monkeypatch.setenv("PID_LOG", str(log))
    backend = make_backend("ready", MP_CONTEXT="spawn", MAX_WORKERS=1)
    try:
        done = backend.wait_for_result(enqueue(backend, tasks.add, 1, 2), DEADLINE)
        assert done.status == SUCCESSFUL, done.errors
        wait_until(log.exists, message="the task enqueued in ready() ran")
        # It ran in this process's "threads" backend, not in a pool of the worker's.
        assert log.read_text().split() == [str(os.getpid())]
    finally:
        backend.close()


# -- no shared state ----------------------------------------------------------


def test_a_global_changed_in_a_worker_does_not_change_the_parent(
    spawn: ProcessPoolBackend,
) -> None:
    key = os.urandom(4).hex()
    tasks.STATE[key] = "parent"
    result = spawn.wait_for_result(
        enqueue(spawn, tasks.swap_global, key, "child"), DEADLINE
    )
    assert result.status == SUCCESSFUL, result.errors
    assert result.return_value is None  # the child has its own module
    assert tasks.STATE[key] == "parent"
