"""Waiting for results: the backends' wait_for_result and wait_until_idle, and
``wait`` and ``await_result`` of django_tasks_local.waiting."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_finished

from django_tasks_local import await_result, wait
from tests.helpers import DEADLINE, temporary_alias, wait_until
from tests.tasks import block_until, finish_in, square

READY = TaskResultStatus.READY
SUCCESSFUL = TaskResultStatus.SUCCESSFUL


@pytest.fixture
def one_worker(alias, tmp_path):
    """An alias like ``alias`` with one worker, and the gate of the task that holds it.

    The gate opens at the latest after the test, before the alias closes.
    """
    gate = tmp_path / "gate"
    with temporary_alias(alias, MAX_WORKERS=1) as own:
        try:
            yield own, gate
        finally:
            gate.touch()


def test_waiting_times_out_then_returns_when_done(one_worker):
    solo, gate = one_worker
    backend = task_backends[solo]
    blocker = block_until.using(backend=solo).enqueue(str(gate))
    queued = square.using(backend=solo).enqueue(9)
    with pytest.raises(TimeoutError):
        backend.wait_for_result(queued.id, timeout=0.1)
    with pytest.raises(TimeoutError):
        wait(queued, timeout=0.1)
    with pytest.raises(TimeoutError):
        backend.wait_until_idle(timeout=0.1)
    assert backend.get_result(queued.id).status == READY

    gate.touch()
    done = wait(queued, timeout=DEADLINE)
    assert done.status == SUCCESSFUL
    assert done.return_value == 81
    backend.wait_until_idle(timeout=DEADLINE)
    assert backend.get_result(blocker.id).status == SUCCESSFUL


@pytest.mark.parametrize("how", ["wait_for_result", "wait", "await_result", "idle"])
def test_waiting_returns_after_task_finished_receivers_ran(alias, how):
    backend = task_backends[alias]
    receiving = threading.Event()
    received = []

    def slow_receiver(sender, task_result, **kwargs):
        receiving.set()
        # Slow on purpose: a waiter that did not wait for receivers would
        # return before the append.
        threading.Event().wait(0.2)
        received.append(task_result.id)

    task_finished.connect(slow_receiver)
    try:
        result = square.using(backend=alias).enqueue(2)
        # The task has finished; its receivers are running as the wait begins.
        assert receiving.wait(DEADLINE)
        if how == "wait_for_result":
            backend.wait_for_result(result.id, timeout=DEADLINE)
        elif how == "wait":
            wait(result, timeout=DEADLINE)
        elif how == "await_result":
            asyncio.run(await_result(result, timeout=DEADLINE))
        else:
            backend.wait_until_idle(timeout=DEADLINE)
        assert result.id in received
    finally:
        task_finished.disconnect(slow_receiver)


def test_await_result_leaves_the_event_loop_free(one_worker):
    solo, gate = one_worker
    blocker = block_until.using(backend=solo).enqueue(str(gate))

    async def main():
        with pytest.raises(TimeoutError):
            await await_result(blocker, timeout=0.1)
        waiter = asyncio.create_task(await_result(blocker, timeout=DEADLINE))
        await asyncio.sleep(0)  # the waiter is now waiting
        assert not waiter.done()
        # This runs only because the waiter does not block the loop.
        gate.touch()
        return await waiter

    done = asyncio.run(main())
    assert done.status == SUCCESSFUL
    # The blocker's own result: the pid of the worker that ran it.
    assert done.return_value == int(done.worker_ids[0].split(":")[1])


def test_await_result_of_an_unknown_result(alias):
    result = square.using(backend=alias).enqueue(1)
    wait(result, timeout=DEADLINE)
    object.__setattr__(result, "id", "no-such-id")
    with pytest.raises(TaskResultDoesNotExist):
        asyncio.run(await_result(result))
    with pytest.raises(TaskResultDoesNotExist):
        wait(result)


def test_wait_needs_a_result_of_this_package(settings):
    settings.TASKS = {
        **settings.TASKS,
        "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    }
    result = square.using(backend="immediate").enqueue(3)
    with pytest.raises(TypeError, match="'immediate' uses ImmediateBackend"):
        wait(result)
    with pytest.raises(TypeError, match="'immediate' uses ImmediateBackend"):
        asyncio.run(await_result(result))


@pytest.mark.parametrize("how", ["wait", "await_result"])
def test_every_waiter_gets_its_result_though_max_results_evicts_it(
    alias, how, tmp_path
):
    # MAX_RESULTS 1 and many tasks ending at once: each result is evicted
    # almost as soon as it settles, yet every waiter still gets its own.
    count = 40
    gate = tmp_path / "gate"
    with temporary_alias(alias, MAX_RESULTS=1, MAX_WORKERS=count) as own:
        try:
            results = [
                block_until.using(backend=own).enqueue(str(gate)) for _ in range(count)
            ]
            if how == "wait":
                finished = wait_in_threads(own, results, gate)
            else:
                finished = asyncio.run(await_in_tasks(results, gate))
        finally:
            gate.touch()
    assert [result.status for result in finished] == [SUCCESSFUL] * count
    assert all(result.return_value for result in finished)


def wait_in_threads(alias, results, gate):
    finished = [None] * len(results)

    def wait_for(index):
        finished[index] = wait(results[index], timeout=DEADLINE)

    threads = [
        threading.Thread(target=wait_for, args=(n,)) for n in range(len(results))
    ]
    for thread in threads:
        thread.start()
    # Every thread is waiting before the tasks may end (the waiters are not
    # visible through the API: read the runtime's count of them).
    runtime = task_backends[alias].runtime
    wait_until(lambda: sum(map(len, runtime._waiters.values())) == len(results))
    gate.touch()
    for thread in threads:
        thread.join(DEADLINE)
    return finished


async def await_in_tasks(results, gate):
    waiters = [
        asyncio.create_task(await_result(result, timeout=DEADLINE))
        for result in results
    ]
    # Tasks run in the order they were made: every waiter has registered
    # (the first step of await_result) before this opens the gate.
    opener = asyncio.create_task(asyncio.to_thread(gate.touch))
    finished = await asyncio.gather(*waiters)
    await opener
    return finished


def test_an_infinite_timeout_waits_as_long_as_it_takes(alias, tmp_path):
    # The task works half a second once started: each wait below starts while
    # it runs, and used to raise OverflowError at once.
    backend = task_backends[alias]
    for n, wait_for_it in enumerate(
        (
            lambda result: backend.wait_for_result(result.id, timeout=math.inf),
            lambda result: wait(result, timeout=math.inf),
            lambda result: backend.wait_until_idle(timeout=math.inf),
            lambda result: backend.close(timeout=math.inf),
        )
    ):
        marker = tmp_path / f"done-{n}"
        result = finish_in.using(backend=alias).enqueue(0.5, str(marker))
        wait_until(marker.with_suffix(".started").exists)
        wait_for_it(result)
        done = backend.get_result(result.id)
        assert done.status == SUCCESSFUL, done.errors
