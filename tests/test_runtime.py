"""The runtime's own guarantees: executor failures, closing, and fresh runtimes."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.tasks import TaskResultStatus, task_backends
from django.tasks.signals import task_finished

from django_tasks_local import ThreadPoolBackend, WaitingLineFull
from tests import tasks
from tests.helpers import (
    DEADLINE,
    SignalLog,
    read_log,
    temporary_alias,
    wait_until,
    wait_until_finished,
    wait_until_running,
)


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


class CountingExecutor(ThreadPoolExecutor):
    """Counts the calls handed to it."""

    submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        type(self).submitted += 1
        return super().submit(fn, *args, **kwargs)


class CountingBackend(ThreadPoolBackend):
    def create_executor(self) -> Executor:
        return CountingExecutor(max_workers=self.settings["MAX_WORKERS"])


class FactoryCountingBackend(ThreadPoolBackend):
    """Counts the executors it creates."""

    created = 0

    def create_executor(self) -> Executor:
        type(self).created += 1
        return super().create_executor()


class SlowFactoryBackend(ThreadPoolBackend):
    """Its executor factory takes as long as the test holds ``release``."""

    entered = threading.Event()
    release = threading.Event()

    def create_executor(self) -> Executor:
        type(self).entered.set()
        if not type(self).release.wait(DEADLINE):
            raise TimeoutError("the test never released the factory")
        return super().create_executor()


class DroppingExecutor(ThreadPoolExecutor):
    """Fails its first call without running it, as a lost remote worker would."""

    dropped = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        if type(self).dropped == 0:
            type(self).dropped += 1
            future: Future[Any] = Future()
            future.set_exception(ConnectionError("worker lost"))
            return future
        return super().submit(fn, *args, **kwargs)


class DroppingBackend(ThreadPoolBackend):
    def create_executor(self) -> Executor:
        return DroppingExecutor(max_workers=1)


def path_of(backend: type) -> str:
    return f"{backend.__module__}.{backend.__qualname__}"


@pytest.mark.parametrize(
    ("backend", "exception_class_path", "message"),
    [
        # The first executor cannot be created.
        (FlakyFactoryBackend, "builtins.OSError", "no more file handles"),
        # The executor fails its first call without running it.
        (DroppingBackend, "builtins.ConnectionError", "worker lost"),
    ],
)
def test_an_executor_failure_fails_that_task_not_the_backend(
    backend: type, exception_class_path: str, message: str
) -> None:
    FlakyFactoryBackend.attempts = 0
    DroppingExecutor.dropped = 0
    # One worker: had the failed hand-off kept its place, the second task
    # would never start.
    with temporary_alias(path_of(backend), MAX_WORKERS=1) as alias:
        instance = task_backends[alias]
        first = tasks.add.using(backend=alias).enqueue(1, 2)
        failed = instance.wait_for_result(first.id, timeout=DEADLINE)
        assert failed.status == TaskResultStatus.FAILED
        assert failed.started_at is None
        assert failed.errors[-1].exception_class_path == exception_class_path
        assert message in failed.errors[-1].traceback

        second = tasks.add.using(backend=alias).enqueue(2, 3)
        assert instance.wait_for_result(second.id, timeout=DEADLINE).return_value == 5


def test_close_shuts_the_executor_down_only_after_running_tasks_end() -> None:
    # Dask's executor, for one, cancels what still runs when it shuts down.
    RecordingExecutor.task_had_returned_at_shutdown.clear()
    tasks.reset_wait_for_event()
    with temporary_alias(path_of(RecordingBackend), MAX_WORKERS=1) as alias:
        backend = task_backends[alias]
        result = tasks.wait_for_event.using(backend=alias).enqueue()
        assert tasks.wait_for_event_started.wait(DEADLINE)
        waiting = tasks.add.using(backend=alias).enqueue(1, 1)

        closer = threading.Thread(target=backend.close, kwargs={"timeout": DEADLINE})
        closer.start()
        # close() drops the waiting task before it waits for the running one.
        wait_until_finished(backend, waiting.id)
        tasks.wait_for_event_release.set()
        closer.join(DEADLINE)
        assert not closer.is_alive()

        assert backend.get_result(result.id).status == TaskResultStatus.SUCCESSFUL
    assert RecordingExecutor.task_had_returned_at_shutdown == [True]


def test_close_without_a_timeout_waits_shutdown_timeout_at_most() -> None:
    tasks.reset_wait_for_event()
    with temporary_alias(path_of(ThreadPoolBackend), SHUTDOWN_TIMEOUT=0.1) as alias:
        backend = task_backends[alias]
        hung = tasks.wait_for_event.using(backend=alias).enqueue()
        assert tasks.wait_for_event_started.wait(DEADLINE)
        closer = threading.Thread(target=backend.close)
        closer.start()
        closer.join(DEADLINE)
        try:
            # close() returned while the task still runs: it was abandoned.
            assert not closer.is_alive()
            assert backend.get_result(hung.id).status == TaskResultStatus.RUNNING
        finally:
            tasks.wait_for_event_release.set()
        # An abandoned task still finishes, and its result with it.
        finished = backend.wait_for_result(hung.id, timeout=DEADLINE)
        assert finished.status == TaskResultStatus.SUCCESSFUL


def test_use_after_close_starts_a_fresh_executor() -> None:
    FactoryCountingBackend.created = 0
    with temporary_alias(path_of(FactoryCountingBackend)) as alias:
        backend = task_backends[alias]
        done = tasks.add.using(backend=alias).enqueue(1, 1)
        backend.wait_for_result(done.id, timeout=DEADLINE)
        backend.close(timeout=DEADLINE)
        backend.close(timeout=DEADLINE)  # closing twice does no more
        # Results stay readable after close.
        assert backend.get_result(done.id).return_value == 2

        # Another instance of the alias (another thread's) uses it again.
        other = FactoryCountingBackend(alias, settings.TASKS[alias])
        again = other.enqueue(tasks.add, [2, 2], {})
        assert backend.wait_for_result(again.id, timeout=DEADLINE).return_value == 4
        assert FactoryCountingBackend.created == 2


def test_a_slow_executor_factory_does_not_block_reading_results() -> None:
    SlowFactoryBackend.release.clear()
    SlowFactoryBackend.entered.clear()
    with temporary_alias(path_of(SlowFactoryBackend)) as alias:
        backend = task_backends[alias]
        SlowFactoryBackend.release.set()  # the first executor comes at once
        done = tasks.add.using(backend=alias).enqueue(1, 2)
        backend.wait_for_result(done.id, timeout=DEADLINE)
        backend.close(timeout=DEADLINE)

        # The next enqueue creates an executor that takes its time.
        SlowFactoryBackend.release.clear()
        enqueuer = threading.Thread(
            target=tasks.add.using(backend=alias).enqueue, args=(3, 4)
        )
        enqueuer.start()
        assert SlowFactoryBackend.entered.wait(DEADLINE)
        try:
            reader = threading.Thread(target=backend.get_result, args=(done.id,))
            reader.start()
            reader.join(DEADLINE)
            # Read while the factory is still at work: it holds no lock of ours.
            assert not reader.is_alive()
            assert not SlowFactoryBackend.release.is_set()
        finally:
            SlowFactoryBackend.release.set()
            enqueuer.join(DEADLINE)
        backend.wait_until_idle(timeout=DEADLINE)


def test_a_freed_worker_takes_the_next_waiting_task_itself(tmp_path: Path) -> None:
    # Under a backlog a worker goes from task to task by priority, without a
    # trip through the executor's queue (one call, for the first task).
    CountingExecutor.submitted = 0
    gate, log = tmp_path / "gate", tmp_path / "order"
    with temporary_alias(path_of(CountingBackend), MAX_WORKERS=1) as alias:
        backend = task_backends[alias]
        first = tasks.block_until.using(backend=alias).enqueue(str(gate))
        wait_until_running(backend, first.id)
        low, high = (
            tasks.log_label.using(backend=alias, priority=priority).enqueue(
                str(log), label
            )
            for label, priority in [("low", -5), ("high", 5)]
        )
        gate.touch()
        backend.wait_until_idle(timeout=DEADLINE)
        first, low, high = (backend.get_result(r.id) for r in (first, low, high))

    assert read_log(log) == ["high", "low"]
    assert CountingExecutor.submitted == 1
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in (first, low, high))
    # All on the one worker, each task's own start, in the order they ran.
    assert first.worker_ids == high.worker_ids == low.worker_ids
    assert len(first.worker_ids) == 1
    assert first.finished_at <= high.started_at <= high.finished_at <= low.started_at


def test_a_freed_worker_process_starts_its_next_task_before_the_signals_end(
    tmp_path: Path,
) -> None:
    # One worker: the second task can only start once the first has ended.
    # It starts while the first's task_finished receivers still run.
    receiving, release = threading.Event(), threading.Event()
    log = tmp_path / "order"

    def slow_receiver(sender: type, task_result: Any, **kwargs: Any) -> None:
        if task_result.args == [str(log), "first"]:
            receiving.set()
            # Longer than the test waits for the second task: without the
            # early hand-out, the test fails before this wait ends.
            release.wait(2 * DEADLINE)

    task_finished.connect(slow_receiver, dispatch_uid="slow-receiver")
    try:
        with temporary_alias("processes", MAX_WORKERS=1) as alias:
            backend = task_backends[alias]
            first = tasks.log_label.using(backend=alias).enqueue(str(log), "first")
            second = tasks.log_label.using(backend=alias).enqueue(str(log), "second")
            try:
                assert receiving.wait(DEADLINE)
                wait_until(
                    lambda: log.read_text().split() == ["first", "second"],
                    message="the second task ran while the first's receiver ran",
                )
            finally:
                release.set()
            assert backend.wait_for_result(first.id, DEADLINE).status == "SUCCESSFUL"
            assert backend.wait_for_result(second.id, DEADLINE).status == "SUCCESSFUL"
    finally:
        task_finished.disconnect(dispatch_uid="slow-receiver")


def test_max_waiting_refuses_a_task_past_the_bound_and_loses_nothing(
    alias: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with (
        temporary_alias(alias, MAX_WORKERS=1, MAX_WAITING=2) as own,
        SignalLog() as log,
    ):
        try:
            blocker = tasks.block_until.using(backend=own).enqueue(str(gate))
            wait_until_running(own, blocker.id)
            waiting = [tasks.square.using(backend=own).enqueue(n) for n in (2, 3)]
            with pytest.raises(WaitingLineFull) as refused:
                tasks.square.using(backend=own).enqueue(4)
            assert str(refused.value) == (
                f"Task backend {own!r} has 2 tasks waiting for a worker "
                "(MAX_WAITING): 'tests.tasks.square' was not enqueued. Try again "
                "once some have started."
            )
            # Nothing of the refused task was stored or sent.
            assert len(log.by_id) == 3
        finally:
            gate.touch()
        backend = task_backends[own]
        finished = [backend.wait_for_result(r.id, DEADLINE) for r in waiting]
        assert [r.return_value for r in finished] == [4, 9]
        # The line has room again.
        again = tasks.square.using(backend=own).enqueue(5)
        assert backend.wait_for_result(again.id, DEADLINE).return_value == 25
