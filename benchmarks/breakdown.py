"""Where a thread backend task's time goes: the diagnostics behind docs/benchmarks.md.

Run from the repository root: ``python benchmarks/breakdown.py``.

* The whole life of a no-op task (enqueue, run, finish, three signals) on an
  executor that runs it inline, in the calling thread: the CPU time per task
  with Django's default logging, with the ``django.tasks`` logger at WARNING,
  and with no receiver on the task signals at all.
* Wall time and context switches per task in bursts of no-op tasks, a raw
  ``ThreadPoolExecutor`` against ours, with 1 worker and with 4 (Linux: it
  reads ``/proc/self/task/*/status``), burst by burst; for ours, how many
  acquisitions of the runtime's lock had to wait (its lock is swapped for a
  counting one, which costs a little time).
* The start delay, stage by stage: one no-op task at a time on an idle pool,
  as the start-delay scenario of ``run.py`` does, with the stages between
  ``enqueue()`` returning and the body starting timestamped by wrapping the
  runtime's own methods (it reaches into private methods, which may change).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import run  # sets DJANGO_SETTINGS_MODULE
from benchmarks.inline import cpu_per_task, inline_backend


def whole_task() -> None:
    import logging

    from django.tasks import signals

    from django_tasks_local import ThreadPoolBackend

    backend = inline_backend(ThreadPoolBackend, "inline")

    logger = logging.getLogger("django.tasks")
    receivers = [
        (signals.task_enqueued, signals.log_task_enqueued),
        (signals.task_started, signals.log_task_started),
        (signals.task_finished, signals.log_task_finished),
    ]
    print(f"{'whole task life, inline (CPU, best of 5)':<48}  µs")
    print(f"{'Django default logging':<48}  {cpu_per_task(backend):7.1f}")
    logger.setLevel(logging.WARNING)
    print(f"{'django.tasks logger at WARNING':<48}  {cpu_per_task(backend):7.1f}")
    for signal, receiver in receivers:
        signal.disconnect(receiver)
    print(f"{'no receivers on the task signals':<48}  {cpu_per_task(backend):7.1f}")
    for signal, receiver in receivers:
        signal.connect(receiver)
    logger.setLevel(logging.NOTSET)
    backend.close()
    print()


def handoffs(bursts: int) -> None:
    """Wall time, context switches and waits for the runtime's lock, burst by burst."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import wait as wait_futures

    from benchmarks import tasks
    from django_tasks_local import ThreadPoolBackend

    def switches() -> int:
        # Linux: every thread's voluntary context switches (it blocked).
        total = 0
        for status in Path("/proc/self/task").glob("*/status"):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        return total

    class CountingLock:
        """The runtime's lock, counting the acquisitions that had to wait."""

        def __init__(self) -> None:
            self._lock = threading.RLock()
            self.waits = 0
            self.release = self._lock.release
            self._is_owned = self._lock._is_owned  # type: ignore[attr-defined]
            self._release_save = self._lock._release_save  # type: ignore[attr-defined]
            self._acquire_restore = self._lock._acquire_restore  # type: ignore[attr-defined]

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if self._lock.acquire(False):
                return True
            self.waits += 1
            return self._lock.acquire(blocking, timeout)

        __enter__ = acquire

        def __exit__(self, *exc: object) -> None:
            self._lock.release()

    count = 5000
    print(
        f"{'no-op tasks, 5,000 in a burst':<36}  {'µs/task':>8}  {'switches/task':>13}"
        f"  {'lock waits/task':>15}"
    )
    for workers in (1, 4):
        raw = ThreadPoolExecutor(workers)
        ours = ThreadPoolBackend(
            f"handoffs-{workers}",
            {"OPTIONS": {"MAX_WORKERS": workers, "MAX_RESULTS": count}},
        )
        runtime = ours.runtime
        lock = CountingLock()
        runtime._lock = lock  # type: ignore[assignment]
        runtime._timer_wakeup = threading.Condition(lock)  # type: ignore[arg-type]
        for i in range(20):  # start the threads
            raw.submit(tasks.add, i, 1)
            ours.enqueue(tasks.add_task, (i, 1), {})
        ours.wait_until_idle(run.WAIT)

        for _ in range(bursts):
            for name in ("raw ThreadPoolExecutor", "ours"):
                before, waits = switches(), lock.waits
                start = time.perf_counter()
                if name == "ours":
                    for i in range(count):
                        ours.enqueue(tasks.add_task, (i, 1), {})
                    ours.wait_until_idle(run.WAIT)
                else:
                    futures = [raw.submit(tasks.add, i, 1) for i in range(count)]
                    wait_futures(futures, run.WAIT)
                elapsed, switched = time.perf_counter() - start, switches() - before
                label = f"{name}, {workers} worker{'s' if workers > 1 else ''}"
                lock_waits = (
                    f"{(lock.waits - waits) / count:15.2f}" if name == "ours" else ""
                )
                print(
                    f"{label:<36}  {elapsed / count * 1e6:8.1f}  {switched / count:13.2f}"
                    f"  {lock_waits}"
                )
        raw.shutdown()
        ours.close(run.WAIT)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--bursts", type=int, default=4)
    args = parser.parse_args()

    import django

    django.setup()
    whole_task()
    handoffs(args.bursts)
    start_delay_stages(args.samples)


def start_delay_stages(samples: int) -> None:
    import logging

    from django.tasks import task_backends

    from benchmarks import tasks
    from django_tasks_local import runtime

    stamps: dict[str, dict[str, float]] = {}

    def stamp(result_id: str, stage: str) -> None:
        stamps.setdefault(result_id, {}).setdefault(stage, time.perf_counter())

    def around(name: str, id_of: Any, before: str, after: str | None = None) -> None:
        method = getattr(runtime.Runtime, name)

        def wrapper(self: Any, *a: Any) -> Any:
            stamp(id_of(*a), before)
            value = method(self, *a)
            if after:
                stamp(id_of(*a), after)
            return value

        setattr(runtime.Runtime, name, wrapper)

    around(
        "mark_started",
        lambda result_id, *_: result_id,
        "run_task has begun",
        "mark_started() done",
    )
    around("_start_locked", lambda result, *_: result.id, "runtime lock taken")
    around(
        "_send",
        lambda signal, result: result.id + str(signal is runtime.task_started),
        "",
    )

    backend = task_backends["threads"]
    task = tasks.body_started_task.using(backend="threads")
    for _ in range(20):  # warm the pool
        backend.wait_for_result(task.enqueue().id, run.WAIT)
    # Django's default logging and django.tasks at WARNING, sample by sample
    # in turn, so that both see the same load on the machine.
    logger = logging.getLogger("django.tasks")
    levels = {"default logging": logging.NOTSET, "logs at WARNING": logging.WARNING}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in levels}
    for i in range(2 * samples):
        name = list(levels)[i % 2]
        logger.setLevel(levels[name])
        result = task.enqueue()
        returned = time.perf_counter()
        body = backend.wait_for_result(result.id, run.WAIT).return_value
        row = stamps.pop(result.id)
        row["task_started being sent"] = stamps.pop(result.id + "True")[""]
        row["task body starts"] = body
        rows[name].append({stage: (at - returned) * 1e6 for stage, at in row.items()})
        stamps.clear()
        time.sleep(0.002)
    logger.setLevel(logging.NOTSET)
    order = [
        "run_task has begun",
        "runtime lock taken",
        "task_started being sent",
        "mark_started() done",
        "task body starts",
    ]
    print(f"{'stage (p50 µs after enqueue() returned)':<40}  " + "  ".join(levels))
    for stage in order:
        medians = [statistics.median(r[stage] for r in rows[name]) for name in levels]
        print(f"{stage:<40}  " + "  ".join(f"{m:15.1f}" for m in medians))
    backend.close(run.WAIT)


if __name__ == "__main__":
    main()
