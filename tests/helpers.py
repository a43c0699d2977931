"""Helpers shared by the test modules: waiting with a deadline, temporary
aliases, the signal log, and the backends a user might write."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.db import connections
from django.tasks import Task, TaskResult, task_backends
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.test import override_settings

from django_tasks_local import (
    ExecutorBackend,
    PickleSerializer,
    ThreadPool,
    ThreadPoolBackend,
    task_retrying,
)

#: Seconds a test waits for what should happen at once: a deadline, never
#: reached unless something is broken. Generous: the machine is small and shared.
DEADLINE = 60.0

REPO = Path(__file__).resolve().parent.parent

_numbers = itertools.count()


# -- waiting with a deadline -------------------------------------------------


def wait_until(
    condition: Callable[[], object],
    timeout: float = DEADLINE,
    message: str = "condition",
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{message} did not hold within {timeout}s")
        time.sleep(0.01)


def _backend(backend: Any) -> Any:
    return task_backends[backend] if isinstance(backend, str) else backend


def wait_until_running(backend: Any, result_id: str) -> TaskResult:
    """Wait until the task has started (``backend``: an alias or a backend).

    Fails at once if the task finishes instead.
    """
    backend = _backend(backend)

    def running() -> bool:
        result = backend.get_result(result_id)
        assert not result.is_finished, (
            f"task {result_id} finished as {result.status}: {result.errors}"
        )
        return result.status == "RUNNING"

    wait_until(running, message=f"task {result_id} running")
    return backend.get_result(result_id)


def wait_until_finished(backend: Any, result_id: str) -> TaskResult:
    """Wait until the task has finished, by polling (not by the backend's own wait)."""
    backend = _backend(backend)
    wait_until(
        lambda: backend.get_result(result_id).is_finished,
        message=f"task {result_id} finished",
    )
    return backend.get_result(result_id)


def run_and_wait(backend: Any, task: Task, *args: Any, **kwargs: Any) -> TaskResult:
    """Enqueue ``task`` on ``backend`` (an alias or a backend); its finished result."""
    backend = _backend(backend)
    result = task.using(backend=backend.alias).enqueue(*args, **kwargs)
    return backend.wait_for_result(result.id, timeout=DEADLINE)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, deadline: float) -> str:
    """GET ``url``, retrying while the server is not up yet (until ``deadline``)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_log(path: Path) -> list[str]:
    """The labels that ``tasks.log_label`` wrote to ``path``, in order."""
    return path.read_text().split() if path.exists() else []


# -- scripts in a subprocess ----------------------------------------------------

#: The settings module of a script: the app of the model that tests/tasks.py
#: imports (no database is used), and the TASKS aliases the test gives.
SCRIPT_SETTINGS = """
import json
import os

SECRET_KEY = "script"
USE_TZ = True
INSTALLED_APPS = ["tests"]
DATABASES = {}
TASKS = {
    "default": {"BACKEND": "django_tasks_local.ThreadPoolBackend"},
    **json.loads(os.environ["SCRIPT_TASKS"]),
}
"""


def write_script(
    tmp_path: Path, source: str, tasks: dict[str, Any] | None = None
) -> tuple[Path, dict[str, str]]:
    """``source`` as a script in ``tmp_path``, and the environment to run it in:
    Django on a tiny settings module with these TASKS aliases added."""
    (tmp_path / "script_settings.py").write_text(SCRIPT_SETTINGS)
    script = tmp_path / "script.py"
    script.write_text(source)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "script_settings",
        "SCRIPT_TASKS": json.dumps(tasks or {}),
        # src too: the subprocess runs the code of this tree, installed or not.
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), str(REPO / "src")]),
    }
    return script, env


def run_script(
    tmp_path: Path, source: str, *args: str, tasks: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` (see ``write_script``) with ``args``.

    Within two DEADLINEs: a script that waits one out fails with its own message.
    """
    script, env = write_script(tmp_path, source, tasks)
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=2 * DEADLINE,
    )


HANGING_SETTINGS = """
import os
import time
from pathlib import Path

from tests.settings import *  # noqa: F403

# A worker's django.setup() imports this module: it says so, with its pid,
# then hangs until the test lets it go.
_here = Path(__file__).parent
(_here / "importing").write_text(str(os.getpid()))
_deadline = time.monotonic() + 60
while not (_here / "release").exists() and time.monotonic() < _deadline:
    time.sleep(0.01)
"""


def hang_worker_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Worker processes started afresh from now on hang importing their
    settings until the returned path exists; each first writes its pid to
    ``tmp_path / "importing"``."""
    (tmp_path / "hanging_settings.py").write_text(HANGING_SETTINGS)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get sys.path
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "hanging_settings")
    return tmp_path / "release"


def run_code(
    source: str,
    *args: str,
    settings_module: str | None = "tests.settings",
    timeout: float = DEADLINE,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c source args`` in the repository, on ``settings_module``
    (None: no settings module at all)."""
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        cwd=REPO,
        env=_code_env(settings_module),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_code(
    source: str,
    *args: str,
    output: Path,
    settings_module: str | None = "tests.settings",
) -> subprocess.Popen[bytes]:
    """``run_code``, started and not waited for (a process to kill, say); its
    stdout and stderr go to ``output``."""
    with output.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", source, *args],
            cwd=REPO,
            env=_code_env(settings_module),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _code_env(settings_module: str | None) -> dict[str, str]:
    env = {**os.environ}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if settings_module is not None:
        env["DJANGO_SETTINGS_MODULE"] = settings_module
    return env


@contextmanager
def no_file_descriptors_left() -> Iterator[None]:
    """In the block, this process can open no file, pipe or socket (EMFILE).

    The soft limit comes down to the highest descriptor open, and the free
    numbers below it are taken; the files already open stay usable.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    fillers = []
    try:
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- aliases -------------------------------------------------------------------


@contextmanager
def temporary_alias(like: str, **options: Any) -> Iterator[str]:
    """A new alias with the backend of ``like`` and these OPTIONS added: a
    runtime of its own (which the test may fill or close), closed after.

    ``like``: an alias of TASKS (its OPTIONS are kept, these added), or a
    backend's dotted path.
    """
    base = settings.TASKS.get(like, {"BACKEND": like})
    alias = f"temporary-{like.rpartition('.')[2]}-{next(_numbers)}"
    params = {
        "BACKEND": base["BACKEND"],
        "OPTIONS": {**base.get("OPTIONS", {}), **options},
    }
    with override_settings(TASKS={**settings.TASKS, alias: params}):
        try:
            yield alias
        finally:
            backend = task_backends[alias]
            # A backend configured wrongly (a test of that) has nothing to close.
            if not backend.check():
                backend.close(timeout=DEADLINE)


# -- signals -------------------------------------------------------------------


class SignalLog:
    """Records the task signals (Django's three, and task_retrying), by
    result id, as the receivers saw them."""

    signals = {
        "enqueued": task_enqueued,
        "started": task_started,
        "retrying": task_retrying,
        "finished": task_finished,
    }

    def __init__(self) -> None:
        # result id -> [(signal name, status, the result sent, sender)], in order sent
        self.by_id: dict[str, list[tuple[str, str, TaskResult, type]]] = defaultdict(
            list
        )
        self._lock = threading.Lock()
        self._receivers = {name: self._receiver(name) for name in self.signals}

    def _receiver(self, name: str) -> Callable[..., None]:
        def receive(sender: type, task_result: TaskResult, **kwargs: Any) -> None:
            with self._lock:
                entry = (name, task_result.status, task_result, sender)
                self.by_id[task_result.id].append(entry)

        return receive

    def sent(self, result_id: str) -> list[tuple[str, str]]:
        """(signal name, status of the result sent) in the order they were sent."""
        with self._lock:
            return [(name, status) for name, status, _, _ in self.by_id[result_id]]

    def results(self, result_id: str, name: str) -> list[TaskResult]:
        with self._lock:
            return [
                result for sent, _, result, _ in self.by_id[result_id] if sent == name
            ]

    def senders(self, result_id: str) -> set[type]:
        with self._lock:
            return {sender for *_, sender in self.by_id[result_id]}

    def __enter__(self) -> SignalLog:
        for name, signal in self.signals.items():
            signal.connect(self._receivers[name], weak=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name, signal in self.signals.items():
            signal.disconnect(self._receivers[name])


# -- workers -------------------------------------------------------------------


def worker_is_alive(worker_id: str) -> bool:
    """Whether the thread or process named by a worker id still runs."""
    _host, pid, *thread = worker_id.split(":", 2)
    if thread:
        return int(pid) == os.getpid() and thread[0] in {
            t.name for t in threading.enumerate()
        }
    return int(pid) in {child.pid for child in multiprocessing.active_children()}


def process_exists(pid: int) -> bool:
    """Whether the process ``pid`` runs (Linux: a zombie, dead but not reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # pid (comm) state ...: comm may hold spaces, so split after ")".
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def postgres_pid() -> int:
    """The server pid of this thread's connection to the ``postgres`` alias."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


# -- backends a user might write -------------------------------------------------


class PrefixedThreadPoolBackend(ExecutorBackend):
    """Tasks on a stdlib thread pool whose threads carry the project's own name.

    One executor call per task: the core hands it a task only when a worker
    is free.
    """

    def create_executor(self) -> Executor:
        return ThreadPoolExecutor(
            self.settings["MAX_WORKERS"], thread_name_prefix="project-pool"
        )


class StdlibProcessPoolBackend(ExecutorBackend):
    """Tasks on the stdlib process pool, which cannot report a start as it happens.

    The core then applies the start (with the worker's own time) when the
    outcome arrives, just before the end.
    """

    serializer = PickleSerializer()

    def create_executor(self) -> Executor:
        return ProcessPoolExecutor(
            self.settings["MAX_WORKERS"],
            mp_context=multiprocessing.get_context("spawn"),
            initializer=django.setup,
        )


#: Aliases of the two backends above, for override_settings.
CUSTOM_ALIASES = {
    "custom_threads": {
        "BACKEND": f"{__name__}.PrefixedThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2},
    },
    "custom_processes": {
        "BACKEND": f"{__name__}.StdlibProcessPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2},
    },
    # A user's executor (one call per task, in other processes) on the
    # database store.
    "custom_processes-sqlite": {
        "BACKEND": f"{__name__}.StdlibProcessPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2, "STORE": "database", "DATABASE": "store_sqlite"},
    },
}

#: The backend aliases of tests/settings.py on the database store, by the
#: alias of the same backend on the memory store.
DATABASE_STORE_ALIASES = {
    "threads-sqlite": "threads",
    "processes-sqlite": "processes",
    "threads-postgres": "threads",
    "processes-postgres": "processes",
    "custom_processes-sqlite": "custom_processes",
}


def backend_kind(alias: str) -> str:
    """The alias of the same backend on the memory store."""
    return DATABASE_STORE_ALIASES.get(alias, alias)


class _UnstoppablePool(ThreadPool):
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        raise RuntimeError("this executor cannot shut down")


class BrokenShutdownBackend(ThreadPoolBackend):
    """A backend whose executor raises on shutdown (for the exit tests)."""

    def create_executor(self) -> ThreadPool:
        return _UnstoppablePool(1)
