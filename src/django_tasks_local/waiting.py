"""Waiting for a task result to finish, from sync code or from async code."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.tasks import TaskResult, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist

from .backends.base import ExecutorBackend
from .runtime import PollBackoff, Runtime


def wait(
    result: TaskResult[..., Any], timeout: float | None = None
) -> TaskResult[..., Any]:
    """Block until ``result`` has finished, and return it as it is then.

    It returns once the ``task_finished`` receivers have run. Raises
    TimeoutError after ``timeout`` seconds, TaskResultDoesNotExist if the result
    is unknown (evicted, or its enqueue was rolled back).
    """
    return _backend_of(result).wait_for_result(result.id, timeout)


async def await_result(
    result: TaskResult[..., Any], timeout: float | None = None
) -> TaskResult[..., Any]:
    """``wait`` for async code: the event loop runs on meanwhile, no thread is held."""
    runtime = _backend_of(result).runtime
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[TaskResult[..., Any] | None] = loop.create_future()

    def wake(copy: TaskResult[..., Any] | None) -> None:
        # Called in whichever thread settles the result, with this waiter's
        # own copy. A RuntimeError means the loop has closed: nobody is
        # waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, settled, copy)

    start = time.monotonic()
    try:
        watching = runtime.watch(result.id, wake)
    except TaskResultDoesNotExist:
        if not runtime.shared:
            raise
        return await _poll(runtime, result.id, timeout, start)
    if not watching:
        return runtime.get_result(result.id)  # settled already
    try:
        async with asyncio.timeout(timeout):
            copy = await settled
    except TimeoutError:
        raise TimeoutError(
            f"Task result {result.id} did not finish within {timeout}s."
        ) from None
    finally:
        runtime.unwatch(result.id, wake)
    if copy is None:
        if runtime.shared:
            # Given up or taken over: another process records its end.
            return await _poll(runtime, result.id, timeout, start)
        raise TaskResultDoesNotExist(
            f"{result.id}: its enqueue was rolled back while it was awaited."
        )
    return copy


async def _poll(
    runtime: Runtime, result_id: str, timeout: float | None, start: float
) -> TaskResult[..., Any]:
    """Wait for a result that another process runs, reading the store in a thread."""
    backoff = PollBackoff(result_id, timeout, start)
    load = sync_to_async(runtime.load)
    while not (result := await load(result_id)).is_finished:
        await asyncio.sleep(backoff.next_wait(result))
    return result


def _resolve(
    future: asyncio.Future[TaskResult[..., Any] | None],
    copy: TaskResult[..., Any] | None,
) -> None:
    if not future.done():  # not given up (cancelled) meanwhile
        future.set_result(copy)


def _backend_of(result: TaskResult[..., Any]) -> ExecutorBackend:
    backend = task_backends[result.backend]
    if not isinstance(backend, ExecutorBackend):
        raise TypeError(
            f"Only results of django_tasks_local backends can be waited for; "
            f"{result.backend!r} uses {type(backend).__qualname__}."
        )
    return backend
