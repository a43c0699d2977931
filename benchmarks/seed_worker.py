"""The seed's side of the benchmarks: django-tasks-local 2.0 from PyPI.

The seed has our import name, so ``benchmarks/run.py`` runs this script with
``.venv-seed/bin/python``. It reads a scenario name per line and answers each
with one JSON line: the measurement ``run.py`` makes of ours in that scenario,
made the same way (same code, sizes and settings) on the seed's backends.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# benchmarks/settings.py then leaves out the database store section, which
# needs our database store and django-tasks-db, neither of them here.
os.environ["DTL_BENCH_SEED"] = "1"

from benchmarks.run import WAIT, Bench, Sizes, check

# How long to wait for the seed's done callbacks, which store the results
# once a future is done.
CALLBACK_POLL = 0.0001  # seconds


class SeedBackend:
    """A seed backend, with the waits that ours have and the seed lacks.

    The seed keeps a future per unfinished task in ``_state.futures`` and
    removes it from there once its done callback has stored the result: a
    task has finished, as ``get_result()`` sees it, when its future has left.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.alias = backend.alias

    def enqueue(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.backend.enqueue(task, args, kwargs)

    def get_result(self, result_id: str) -> Any:
        return self.backend.get_result(result_id)

    def wait_until_idle(self, timeout: float) -> None:
        self._wait(None, timeout)

    def wait_for_result(self, result_id: str, timeout: float) -> Any:
        self._wait(result_id, timeout)
        return self.backend.get_result(result_id)

    def close(self, timeout: float) -> None:
        # The seed's close() has no deadline: it waits for its pool.
        self.backend.close()

    def _wait(self, result_id: str | None, timeout: float) -> None:
        """Until every task (or ``result_id``'s) has finished and been stored."""
        deadline = time.monotonic() + timeout
        while pending := self._pending(result_id):
            check(time.monotonic() < deadline, f"seed: unfinished after {timeout}s")
            if all(future.done() for future in pending):
                time.sleep(CALLBACK_POLL)
            else:
                wait_futures(pending, deadline - time.monotonic())

    def _pending(self, result_id: str | None) -> list[Future[Any]]:
        state = self.backend._state
        with state.lock:
            if result_id is None:
                return list(state.futures.values())
            future = state.futures.get(result_id)
            return [] if future is None else [future]


class SeedBench(Bench):
    """Bench's measurements of ours, made on the seed's backends instead."""

    def __init__(self, sizes: Sizes) -> None:
        import django

        django.setup()
        from django.tasks import task_backends

        import django_tasks_local
        from benchmarks import tasks

        # Not ours, which PYTHONPATH could otherwise have put first.
        check(
            Path(django_tasks_local.__file__).is_relative_to(sys.prefix),
            f"seed: django_tasks_local imported from {django_tasks_local.__file__}",
        )
        self.sizes = sizes
        self.tasks = tasks
        # The same aliases and sizes as ours: benchmarks/settings.py names
        # django_tasks_local's backends, which here are the seed's.
        self.threads = SeedBackend(task_backends["threads"])
        self.threads2 = SeedBackend(task_backends["threads2"])
        self.processes = SeedBackend(task_backends["processes"])
        self.last_ids: list[str] = []
        self._memory_round = 0
        self.burn_result = tasks.burn(sizes.cpu_loop)
        self.warm_backends()

    def close(self) -> None:
        for backend in (self.threads, self.threads2, self.processes):
            backend.close(WAIT)

    def new_thread_backend(self, alias: str, params: dict[str, Any]) -> Any:
        from django_tasks_local import ThreadPoolBackend

        return SeedBackend(ThreadPoolBackend(alias, params))

    def discard(self, backend: Any) -> None:
        # The seed's close() also drops its state, results included.
        backend.close(WAIT)


def reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main() -> None:
    bench = SeedBench(Sizes(**json.loads(sys.argv[1])))
    measurements = {s.name: s.impls["ours"] for s in bench.scenarios()}
    reply(
        {
            "version": version("django-tasks-local"),
            "process_start_method": multiprocessing.get_start_method(),
        }
    )
    try:
        for line in sys.stdin:
            reply(measurements[line.strip()]())
    finally:
        bench.close()


if __name__ == "__main__":
    main()
