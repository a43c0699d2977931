"""The runtime's own guarantees: executor failures, closing, and fresh runtimes."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import pytest
from django.conf import settings
from django.tasks import TaskResultStatus, task_backends
from django.test import override_settings

from django_tasks_local import BackendClosed, ThreadPoolBackend

from . import tasks

DEADLINE = 30


class FlakyFactoryBackend(ThreadPoolBackend):
    """Its first executor cannot be created; the ones after can."""

    attempts = 0

    def create_executor(self) -> Executor:
        type(self).attempts += 1
        if type(self).attempts == 1:
            raise OSError("no more file handles")
        return super().create_executor()


class RecordingExecutor(ThreadPoolExecutor):
    """Notes, at shutdown(), whether the running task had returned by then."""

    task_had_returned_at_shutdown: list[bool] = []

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        returned = tasks.wait_for_event_returned.is_set()
        type(self).task_had_returned_at_shutdown.append(returned)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


class RecordingBackend(ThreadPoolBackend):
    def create_executor(self) -> Executor:
        return RecordingExecutor(max_workers=1)


def with_alias(alias: str, backend: type) -> override_settings:
    path = f"{backend.__module__}.{backend.__qualname__}"
    return override_settings(TASKS={**settings.TASKS, alias: {"BACKEND": path}})


def test_an_executor_that_cannot_be_created_fails_the_task_not_the_backend() -> None:
    with with_alias("flaky", FlakyFactoryBackend):
        backend = task_backends["flaky"]
        first = tasks.add.using(backend="flaky").enqueue(1, 2)
        failed = backend.wait_for_result(first.id, timeout=DEADLINE)
        assert failed.status == TaskResultStatus.FAILED
        assert failed.errors[-1].exception_class_path == "builtins.OSError"
        assert "no more file handles" in failed.errors[-1].traceback

        second = tasks.add.using(backend="flaky").enqueue(2, 3)
        assert backend.wait_for_result(second.id, timeout=DEADLINE).return_value == 5
        # Nothing is left counted as running: the failed hand-off freed its slot.
        backend.wait_until_idle(timeout=DEADLINE)
        assert backend.runtime._in_flight == 0
        backend.close(timeout=DEADLINE)


def test_close_shuts_the_executor_down_only_after_running_tasks_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Dask's executor, for one, cancels what still runs when it shuts down.
    RecordingExecutor.task_had_returned_at_shutdown.clear()
    with with_alias("recording", RecordingBackend):
        backend = task_backends["recording"]
        runtime = backend.runtime
        result = tasks.wait_for_event.using(backend="recording").enqueue()
        assert tasks.wait_for_event_started.wait(DEADLINE)

        waiting = threading.Event()
        wait_until_idle = runtime.wait_until_idle

        def note_waiting(timeout: float | None) -> None:
            waiting.set()
            wait_until_idle(timeout)

        monkeypatch.setattr(runtime, "wait_until_idle", note_waiting)
        closer = threading.Thread(target=backend.close, kwargs={"timeout": DEADLINE})
        closer.start()
        # close() is now waiting for the running task: let the task end.
        assert waiting.wait(DEADLINE)
        tasks.wait_for_event_release.set()
        closer.join(DEADLINE)
        assert not closer.is_alive()

    assert runtime.get_result(result.id).status == TaskResultStatus.SUCCESSFUL
    assert RecordingExecutor.task_had_returned_at_shutdown == [True]


def test_a_closed_backend_refuses_tasks_until_settings_change() -> None:
    with with_alias("closing", ThreadPoolBackend):
        backend = task_backends["closing"]
        done = tasks.add.using(backend="closing").enqueue(1, 1)
        backend.wait_for_result(done.id, timeout=DEADLINE)
        backend.close(timeout=DEADLINE)
        with pytest.raises(BackendClosed, match="'closing' is closed"):
            tasks.add.using(backend="closing").enqueue(1, 1)
        # Another instance of the same alias and settings shares the closed runtime.
        other = ThreadPoolBackend("closing", settings.TASKS["closing"])
        assert other.runtime is backend.runtime

    # New settings (override_settings in a later test) start afresh.
    with with_alias("closing", ThreadPoolBackend):
        fresh = task_backends["closing"]
        assert not fresh.runtime.closed
        again = tasks.add.using(backend="closing").enqueue(2, 2)
        assert fresh.wait_for_result(again.id, timeout=DEADLINE).return_value == 4
        fresh.close(timeout=DEADLINE)
