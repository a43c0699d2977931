"""Where a process backend task's time goes: the diagnostics behind docs/benchmarks.md.

Run from the repository root: ``python benchmarks/process_breakdown.py`` (Linux:
it reads ``/proc``).

* The web process's share of one no-op task, with no worker process at all:
  the runtime's whole life of a task (enqueue with the pickling check, the
  three signals, finish) on an executor that runs it inline, in the calling
  thread. The worker's part (``run_task``) is included, so it is a floor.
* A burst of no-op tasks on 2 workers, the raw ``ProcessPoolExecutor``
  against ours, several times in turn: wall time per task, CPU time per task
  of the web process and of the worker processes, and the context switches
  per task (a thread or process that blocked: a wake-up to pay for).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import run  # sets DJANGO_SETTINGS_MODULE
from benchmarks.inline import cpu_per_task, inline_backend

TICKS = os.sysconf("SC_CLK_TCK")


def inline_floor() -> None:
    import logging

    from django_tasks_local import ProcessPoolBackend

    backend = inline_backend(ProcessPoolBackend, "inline-process")

    logger = logging.getLogger("django.tasks")
    print(f"{'process backend task, inline (CPU, best of 5)':<48}  µs")
    print(f"{'Django default logging':<48}  {cpu_per_task(backend):7.1f}")
    logger.setLevel(logging.WARNING)
    print(f"{'django.tasks logger at WARNING':<48}  {cpu_per_task(backend):7.1f}")
    logger.setLevel(logging.NOTSET)
    backend.close()
    print()


def _stat(path: Path) -> tuple[float, int]:
    """CPU seconds and context switches (both kinds) of a process or thread."""
    fields = path.joinpath("stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    switches = 0
    for line in path.joinpath("status").read_text().splitlines():
        if "ctxt_switches:" in line:  # voluntary and not
            switches += int(line.split()[1])
    return cpu, switches


def _usage(children: list[int]) -> list[float]:
    """CPU seconds of this process and of the children, then their switches."""
    parent = [_stat(thread) for thread in Path("/proc/self/task").iterdir()]
    workers = [_stat(Path(f"/proc/{pid}")) for pid in children]
    return [
        sum(cpu for cpu, _ in parent),
        sum(cpu for cpu, _ in workers),
        sum(switches for _, switches in parent),
        sum(switches for _, switches in workers),
    ]


def bursts(count: int, rounds: int) -> None:
    from django.tasks import task_backends

    from benchmarks import tasks

    raw = ProcessPoolExecutor(2)
    ours = task_backends["processes"]
    task = tasks.add_task.using(backend="processes")
    wait_futures([raw.submit(tasks.add, i, 1) for i in range(8)], run.WAIT)
    for i in range(8):
        task.enqueue(i, 1)
    ours.wait_until_idle(run.WAIT)

    def run_raw() -> None:
        wait_futures([raw.submit(tasks.add, i, 1) for i in range(count)], run.WAIT)

    def run_ours() -> None:
        for i in range(count):
            task.enqueue(i, 1)
        ours.wait_until_idle(run.WAIT)

    header = ("wall", "parent CPU", "workers' CPU", "parent sw", "workers' sw")
    print(f"{count:,} no-op tasks, 2 workers, per task: µs of wall and CPU, switches")
    print(f"{'':<6}" + "".join(f"{name:>14}" for name in header))
    for _ in range(rounds):
        for name, burst in (("raw", run_raw), ("ours", run_ours)):
            if name == "raw":
                pids = [process.pid for process in raw._processes.values()]
            else:
                pids = ours.runtime._executor.worker_pids  # type: ignore[union-attr]
            before, start = _usage(pids), time.perf_counter()
            burst()
            elapsed, after = time.perf_counter() - start, _usage(pids)
            cpu_and_switches = [
                (a - b) * scale
                for a, b, scale in zip(after, before, [1e6, 1e6, 1, 1], strict=True)
            ]
            values = [elapsed * 1e6, *cpu_and_switches]
            print(f"{name:<6}" + "".join(f"{v / count:14.1f}" for v in values))
    raw.shutdown()
    ours.close(run.WAIT)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    inline_floor()
    bursts(args.tasks, args.rounds)


if __name__ == "__main__":
    main()
