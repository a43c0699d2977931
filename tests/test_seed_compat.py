"""Drop-in for code written against django-tasks-local 2.0's documented API.

django-tasks-local 2.0, on PyPI, is another package with this import name.
What docs/coming-from-2.0.md says works unchanged is pinned here, on both
backends: the backend paths and the two options, ``backend.enqueue(task,
args=None, kwargs=None)``, the error for an argument that cannot reach a
worker process (a ValueError, as 2.0 documents, and a TypeError, as Django's
JSON check raises), eviction, ``current_result_id``, and ``close()``: after it
the alias starts a fresh pool when it is used again, from any instance, until
the interpreter exits.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

import pytest
from django.conf import settings
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils.module_loading import import_string

from django_tasks_local import ProcessPoolBackend, ThreadPoolBackend, current_result_id
from tests.helpers import (
    DEADLINE,
    run_code,
    temporary_alias,
    wait_until,
    wait_until_running,
)
from tests.tasks import add, answer, block_until, echo, own_result_id, pid

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL


# -- settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "backend_class"),
    [
        ("django_tasks_local.ThreadPoolBackend", ThreadPoolBackend),
        ("django_tasks_local.ProcessPoolBackend", ProcessPoolBackend),
    ],
)
def test_the_backend_paths_and_options_of_2_0_are_valid(path, backend_class):
    assert import_string(path) is backend_class
    # Built by keyword, as 2.0's own tests build one, with its two options.
    backend = backend_class(
        alias="seed-settings",
        params={"BACKEND": path, "OPTIONS": {"MAX_WORKERS": 2, "MAX_RESULTS": 5}},
    )
    assert backend.check() == []


# -- enqueue(task, args=None, kwargs=None) ------------------------------------


def test_enqueue_takes_the_task_alone(alias):
    backend = task_backends[alias]

    result = backend.enqueue(answer)

    assert result.status == READY
    assert result.backend == alias
    assert (result.args, result.kwargs) == ([], {})
    done = backend.wait_for_result(result.id, timeout=DEADLINE)
    assert done.status == SUCCESSFUL
    assert done.return_value == 42


def test_enqueue_takes_args_and_kwargs_as_none_or_either_alone(alias):
    backend = task_backends[alias]

    expected = {
        backend.enqueue(answer, args=None, kwargs=None).id: 42,
        backend.enqueue(add, args=(2, 3)).id: 5,
        backend.enqueue(add, (2, 3)).id: 5,
        backend.enqueue(echo, kwargs={"key": "value"}).id: {
            "args": [],
            "kwargs": {"key": "value"},
        },
    }

    returned = {
        result_id: backend.wait_for_result(result_id, timeout=DEADLINE).return_value
        for result_id in expected
    }
    assert returned == expected


# -- an argument that cannot reach a worker process ---------------------------


class RefusesPickling(str):
    """JSON takes it for the str it is; pickle refuses it, as it would a lock."""

    def __reduce_ex__(self, protocol):
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")


@pytest.mark.parametrize("as_keyword", [False, True], ids=["args", "kwargs"])
def test_an_argument_that_cannot_reach_a_worker_is_a_value_and_a_type_error(
    as_keyword,
):
    argument = lambda x: x  # noqa: E731 (not JSON, and pickle refuses it)
    enqueue = echo.using(backend="processes").enqueue

    with pytest.raises((ValueError, TypeError)) as caught:
        if as_keyword:
            enqueue(key=argument)
        else:
            enqueue(argument)

    # 2.0 documents ValueError; Django's JSON check raises TypeError: code
    # written for either catches it.
    assert isinstance(caught.value, ValueError), type(caught.value).__mro__
    assert isinstance(caught.value, TypeError), type(caught.value).__mro__
    # The backend goes on working.
    result = echo.using(backend="processes").enqueue("after")
    done = task_backends["processes"].wait_for_result(result.id, timeout=DEADLINE)
    assert done.return_value == {"args": ["after"], "kwargs": {}}


def test_a_json_argument_that_pickle_refuses_reaches_the_worker_as_plain_json():
    # 2.0 refuses it (pickle does); ours passes its JSON value, as a
    # persistent backend would: the task gets a plain str.
    result = echo.using(backend="processes").enqueue(RefusesPickling("text"))
    done = task_backends["processes"].wait_for_result(result.id, timeout=DEADLINE)
    assert done.return_value == {"args": ["text"], "kwargs": {}}


# -- close() -------------------------------------------------------------------


def test_after_close_the_same_instance_enqueues_on_a_fresh_pool(alias):
    with temporary_alias(alias) as own:
        backend = task_backends[own]
        before = pid.using(backend=own).enqueue()
        before = backend.wait_for_result(before.id, timeout=DEADLINE)

        backend.close()
        after = backend.enqueue(pid, args=[], kwargs={})

        after = backend.wait_for_result(after.id, timeout=DEADLINE)
        assert after.status == SUCCESSFUL
        if alias == "processes":
            # close() stopped the worker processes: a new one ran this task.
            assert after.return_value != before.return_value


def test_after_close_any_instance_of_the_alias_enqueues(alias):
    with temporary_alias(alias) as own:
        closer = task_backends[own]
        first = answer.using(backend=own).enqueue()
        assert closer.wait_for_result(first.id, timeout=DEADLINE).return_value == 42

        closer.close()
        # Another instance, as Django makes one per thread, or as 2.0's tests
        # make them by hand.
        other = type(closer)(alias=own, params=settings.TASKS[own])
        result = other.enqueue(answer, args=[], kwargs={})

        assert other.wait_for_result(result.id, timeout=DEADLINE).return_value == 42
        # One alias, one state: the instance that closed it sees that task too.
        assert closer.wait_for_result(result.id, timeout=DEADLINE).return_value == 42
        # And Django's own way to enqueue reaches the fresh pool as well.
        again = answer.using(backend=own).enqueue()
        assert other.wait_for_result(again.id, timeout=DEADLINE).status == SUCCESSFUL


class Closing:
    """``backend.close()``, with no timeout, in a thread of its own."""

    def __init__(self, backend):
        self.seconds: float | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._close, args=(backend,))
        self._thread.daemon = True
        self._thread.start()

    def _close(self, backend):
        start = time.monotonic()
        try:
            backend.close()
        except BaseException as exc:
            self.error = exc
        self.seconds = time.monotonic() - start

    def returned_within(self, timeout: float) -> bool:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return not self._thread.is_alive()


def test_close_without_a_timeout_waits_at_most_shutdown_timeout(alias, tmp_path):
    release = tmp_path / "release"
    with temporary_alias(alias, MAX_WORKERS=1, SHUTDOWN_TIMEOUT=0.5) as own:
        backend = task_backends[own]
        try:
            held = block_until.using(backend=own).enqueue(str(release))
            wait_until_running(own, held.id)

            closing = Closing(backend)

            assert closing.returned_within(15), (
                "close() was still waiting for a hung task 15s after it was "
                "called, with SHUTDOWN_TIMEOUT 0.5"
            )
            # It did wait for the running task, up to SHUTDOWN_TIMEOUT.
            assert closing.seconds >= 0.45
        finally:
            release.touch()


def test_close_without_a_timeout_lets_a_running_task_finish(alias, tmp_path):
    release = tmp_path / "release"
    with temporary_alias(alias, MAX_WORKERS=1, SHUTDOWN_TIMEOUT=DEADLINE) as own:
        backend = task_backends[own]
        try:
            held = block_until.using(backend=own).enqueue(str(release))
            wait_until_running(own, held.id)

            closing = Closing(backend)
            release.touch()

            assert closing.returned_within(DEADLINE)
        finally:
            release.touch()
        assert backend.get_result(held.id).status == SUCCESSFUL


EXIT_SCRIPT = """
import atexit
import sys

import django

django.setup()

from django.conf import settings
from django.tasks import task_backends

from django_tasks_local import BackendClosed
from tests.tasks import answer

alias = sys.argv[1]
backend = task_backends[alias]
result = answer.using(backend=alias).enqueue()
assert backend.wait_for_result(result.id, timeout=60).return_value == 42


def enqueue_after_the_backends_closed():
    # atexit hooks run after the backends' own exit hook.
    other = type(backend)(alias, settings.TASKS[alias])
    for name, instance in [("same", backend), ("other", other)]:
        try:
            instance.enqueue(answer, [], {})
        except BackendClosed:
            print(name, "BackendClosed", flush=True)
        except Exception as exc:
            print(name, type(exc).__name__, exc, flush=True)
        else:
            print(name, "accepted", flush=True)


atexit.register(enqueue_after_the_backends_closed)
"""


def test_once_the_interpreter_exits_closing_is_final(alias):
    done = run_code(EXIT_SCRIPT, alias)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["same BackendClosed", "other BackendClosed"]


# -- MAX_WORKERS and MAX_RESULTS -------------------------------------------------


def test_max_workers_is_how_many_tasks_run_at_once(alias, tmp_path):
    releases = [tmp_path / f"release-{n}" for n in range(3)]
    with temporary_alias(alias, MAX_WORKERS=2) as own:
        backend = task_backends[own]
        try:
            held = [
                block_until.using(backend=own).enqueue(str(path)) for path in releases
            ]

            def statuses():
                return [backend.get_result(result.id).status for result in held]

            wait_until(lambda: statuses().count(RUNNING) == 2, message="two running")
            now = statuses()
            assert sorted(now) == [READY, RUNNING, RUNNING]

            # A worker set free takes the waiting task.
            waiting = held[now.index(READY)]
            releases[now.index(RUNNING)].touch()
            wait_until_running(own, waiting.id)
        finally:
            for path in releases:
                path.touch()


def test_max_results_evicts_the_oldest_finished_results(alias):
    with temporary_alias(alias, MAX_RESULTS=2) as own:
        backend = task_backends[own]
        ids = []
        for n in range(3):
            result = add.using(backend=own).enqueue(n, n)
            backend.wait_for_result(result.id, timeout=DEADLINE)
            ids.append(result.id)

        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(ids[0])
        assert [backend.get_result(id_).return_value for id_ in ids[1:]] == [2, 4]


def test_unfinished_results_are_never_evicted(alias, tmp_path):
    release = tmp_path / "release"
    with temporary_alias(alias, MAX_WORKERS=2, MAX_RESULTS=1) as own:
        backend = task_backends[own]
        try:
            held = block_until.using(backend=own).enqueue(str(release))
            wait_until_running(own, held.id)
            for n in range(3):
                result = add.using(backend=own).enqueue(n, n)
                backend.wait_for_result(result.id, timeout=DEADLINE)

            assert backend.get_result(held.id).status == RUNNING
        finally:
            release.touch()
        assert backend.wait_for_result(held.id, timeout=DEADLINE).status == SUCCESSFUL


# -- current_result_id -----------------------------------------------------------


def test_a_task_reads_its_own_result_id_from_current_result_id(alias):
    assert isinstance(current_result_id, ContextVar)

    result = own_result_id.using(backend=alias).enqueue()

    done = task_backends[alias].wait_for_result(result.id, timeout=DEADLINE)
    assert done.return_value == result.id
    with pytest.raises(LookupError):
        current_result_id.get()
