"""Benchmarks: our backends against raw executors (the floor) and other backends.

Beside ours run Django's ImmediateBackend and the seed, django-tasks-local 2.0
from PyPI, in a virtualenv of its own (benchmarks/seed_worker.py). A second
section, the database store, compares our thread backend on the database store
(SQLite) with the same backend on the memory store and with django-tasks-db,
whose ``db_worker`` processes it starts.

Run from the repository root: ``python benchmarks/run.py`` (``make bench``), or
``--quick`` for a pass of about two minutes (``make bench-quick``). Every round
runs every scenario once per implementation, in a rotating order, so a burst
of load on the machine hits all of them alike; the table shows medians over
the rounds, and each ratio is the median of the per-round ratios to the raw
executor (in the database store section: to django-tasks-db, and to our memory
store) of the same round. Every scenario checks every result it produced.
See docs/benchmarks.md for what each number means.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import tracemalloc
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Worker processes import the benchmark tasks as ``benchmarks.tasks``: the
# repository root goes on the path here and, through PYTHONPATH, in children.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
)
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"

RESULTS_DIR = ROOT / "bench-results"
# `make bench` installs the seed there (it has our import name).
SEED_PYTHON = ROOT / ".venv-seed" / "bin" / "python"
WAIT = 120.0  # seconds: a deadline, never reached unless something is broken
# django-tasks-db: its db_worker's default --interval, and how often the
# benchmark looks in its table for the end of the tasks it enqueued.
TASKS_DB_INTERVAL = 1.0  # seconds
TASKS_DB_POLL = 0.005  # seconds


@dataclass(frozen=True)
class Sizes:
    rounds: int
    enqueue_tasks: int
    thread_tasks: int
    process_tasks: int
    memory_results: int
    get_result_calls: int
    cpu_tasks: int
    cpu_loop: int
    delay_samples_thread: int
    delay_samples_process: int
    # The database store section.
    store_enqueue_tasks: int
    store_throughput_tasks: int
    store_delay_samples: int
    tasks_db_delay_samples: int
    # A running task's saved metadata, read back (both backends).
    metadata_samples: int


FULL = Sizes(
    rounds=5,
    enqueue_tasks=2_000,
    thread_tasks=20_000,
    process_tasks=3_000,
    memory_results=10_000,
    get_result_calls=20_000,
    cpu_tasks=8,
    cpu_loop=1_500_000,
    delay_samples_thread=300,
    delay_samples_process=200,
    store_enqueue_tasks=500,
    store_throughput_tasks=2_000,
    store_delay_samples=300,
    tasks_db_delay_samples=20,
    metadata_samples=40,
)
# The same scenarios, smaller: for a check of a change, not for the record.
QUICK = Sizes(
    rounds=3,
    enqueue_tasks=1_000,
    thread_tasks=5_000,
    process_tasks=1_000,
    memory_results=2_000,
    get_result_calls=5_000,
    cpu_tasks=8,
    cpu_loop=300_000,
    delay_samples_thread=50,
    delay_samples_process=50,
    store_enqueue_tasks=200,
    store_throughput_tasks=500,
    store_delay_samples=50,
    tasks_db_delay_samples=6,
    metadata_samples=10,
)


@dataclass(frozen=True)
class Target:
    """What a metric must reach: ``ratio`` compares to raw, ``absolute`` to a value."""

    kind: str  # "ratio" or "absolute"
    op: str  # "<=" or ">="
    value: float
    # What a ratio compares to: the scenario's baseline, named as in the table.
    reference: str = "raw"

    def met(self, ratio: float | None, value: float | None) -> bool | None:
        measured = ratio if self.kind == "ratio" else value
        if measured is None:
            return None
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def __str__(self) -> str:
        suffix = f"x {self.reference}" if self.kind == "ratio" else ""
        return f"{self.op} {self.value:g}{suffix}"


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    target: Target | None = None
    # A second target the metric must also reach (the database store section).
    also: Target | None = None

    @property
    def targets(self) -> list[Target]:
        return [t for t in (self.target, self.also) if t is not None]


@dataclass
class Scenario:
    name: str
    title: str
    metrics: list[Metric]
    # implementation name -> one measurement: metric key -> value
    impls: dict[str, Callable[[], dict[str, float]]]
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    ratios: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # The implementation the ratios compare to, and a second one ("memory":
    # what the database store costs against our memory store).
    baseline: str = "raw"
    second_baseline: str | None = None
    ratios2: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    group: str = "executors"


def check(ok: bool, message: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark result check failed: {message}")


def per_task_us(elapsed: float, count: int) -> float:
    return elapsed / count * 1e6


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class SeedWorker:
    """The seed's side of the run: benchmarks/seed_worker.py, in .venv-seed.

    One measurement per request, so that the seed takes its turn in every
    round like the other implementations.
    """

    def __init__(self, sizes: Sizes) -> None:
        self.process = subprocess.Popen(
            [
                SEED_PYTHON,
                ROOT / "benchmarks" / "seed_worker.py",
                json.dumps(sizes.__dict__),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # Sent once its pools are warm.
        self.about: dict[str, str] = self._reply()

    def measure(self, scenario: str) -> dict[str, float]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{scenario}\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(WAIT)

    def _reply(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("the seed worker ended early (its error is above)")
        return json.loads(line)


class Bench:
    """The pools and backends, warmed once, and the scenarios measured on them."""

    def __init__(self, sizes: Sizes) -> None:
        import django

        django.setup()
        from django.tasks import task_backends

        from benchmarks import tasks

        self.sizes = sizes
        self.tasks = tasks
        # The raw process pool first: it forks (Linux, Python < 3.14), and
        # forking before any thread exists keeps its children clean.
        self.raw_process = ProcessPoolExecutor(max_workers=2)
        self.raw_thread = ThreadPoolExecutor(max_workers=4)
        self.raw_thread2 = ThreadPoolExecutor(max_workers=2)
        self.threads = task_backends["threads"]
        self.threads2 = task_backends["threads2"]
        self.processes = task_backends["processes"]
        self.immediate = task_backends["immediate"]
        # State one scenario leaves for the next in the same round.
        self.last_raw_futures: dict[int, Any] = {}
        self.last_ids: list[str] = []
        self._memory_round = 0
        # What every CPU-bound task must return.
        self.burn_result = tasks.burn(sizes.cpu_loop)
        self.warm_up()
        self.seed_worker = SeedWorker(sizes)
        # The database store section, started by start_store_section().
        self.db_workers: list[subprocess.Popen[bytes]] = []
        self.store_backends: list[Any] = []

    def task(self, name: str, alias: str) -> Any:
        return getattr(self.tasks, f"{name}_task").using(backend=alias)

    def warm_up(self) -> None:
        """Start every worker thread and process, so start-up is not measured."""
        for executor in (self.raw_process, self.raw_thread, self.raw_thread2):
            futures = [executor.submit(self.tasks.add, i, 1) for i in range(8)]
            check([f.result() for f in futures] == [i + 1 for i in range(8)], "warm-up")
        self.warm_backends()

    def warm_backends(self) -> None:
        # The process backend first: in seed_worker.py it is the seed's, which
        # forks, and forking before any thread exists keeps its children clean.
        for backend in (self.processes, self.threads, self.threads2):
            results = [self.task("add", backend.alias).enqueue(i, 1) for i in range(8)]
            backend.wait_until_idle(WAIT)
            for i, result in enumerate(results):
                check(backend.get_result(result.id).return_value == i + 1, "warm-up")

    def close(self) -> None:
        for executor in (self.raw_process, self.raw_thread, self.raw_thread2):
            executor.shutdown()
        for backend in (self.threads, self.threads2, self.processes):
            backend.close(WAIT)
        self.seed_worker.close()
        for backend in self.store_backends:
            backend.close(WAIT)
        for worker in self.db_workers:
            worker.terminate()
        for worker in self.db_workers:
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    # -- checks ------------------------------------------------------------

    def check_raw(self, futures: dict[int, Any], what: str) -> None:
        for i, future in futures.items():
            check(future.result() == i + 1, f"{what}: raw task {i}")

    def check_ours(self, backend: Any, ids: list[str], what: str) -> None:
        from django.tasks import TaskResultStatus

        for i, result_id in enumerate(ids):
            result = backend.get_result(result_id)
            check(
                result.status == TaskResultStatus.SUCCESSFUL
                and result.return_value == i + 1,
                f"{what}: task {i} on {backend.alias} is {result.status}",
            )

    # -- enqueue cost ------------------------------------------------------

    def raw_submit(self, executor: Executor, count: int) -> dict[str, float]:
        add = self.tasks.add
        futures = {}
        start, cpu_start = time.perf_counter(), time.thread_time()
        for i in range(count):
            futures[i] = executor.submit(add, i, 1)
        cpu = time.thread_time() - cpu_start
        elapsed = time.perf_counter() - start
        wait_futures(futures.values(), WAIT)
        self.check_raw(futures, "enqueue")
        return _enqueue_costs(elapsed, cpu, count)

    def our_enqueue(self, backend: Any, count: int) -> dict[str, float]:
        task = self.task("add", backend.alias)
        results = []
        start, cpu_start = time.perf_counter(), time.thread_time()
        for i in range(count):
            results.append(task.enqueue(i, 1))
        cpu = time.thread_time() - cpu_start
        elapsed = time.perf_counter() - start
        backend.wait_until_idle(WAIT)
        self.check_ours(backend, [r.id for r in results], "enqueue")
        return _enqueue_costs(elapsed, cpu, count)

    def immediate_enqueue(self, count: int) -> dict[str, float]:
        task = self.task("add", "immediate")
        results = []
        start, cpu_start = time.perf_counter(), time.thread_time()
        for i in range(count):
            results.append(task.enqueue(i, 1))
        cpu = time.thread_time() - cpu_start
        elapsed = time.perf_counter() - start
        for i, result in enumerate(results):
            check(result.return_value == i + 1, f"enqueue: immediate task {i}")
        return _enqueue_costs(elapsed, cpu, count)

    # -- end-to-end throughput ---------------------------------------------

    def raw_throughput(self, executor: Executor, count: int) -> dict[str, float]:
        add = self.tasks.add
        futures = {}
        start = time.perf_counter()
        for i in range(count):
            futures[i] = executor.submit(add, i, 1)
        wait_futures(futures.values(), WAIT)
        elapsed = time.perf_counter() - start
        self.check_raw(futures, "throughput")
        self.last_raw_futures = futures
        return {"per_s": count / elapsed}

    def our_throughput(self, backend: Any, count: int) -> dict[str, float]:
        ids, per_s = burst(self.task("add", backend.alias), backend, count)
        self.check_ours(backend, ids, "throughput")
        self.last_ids = ids
        return {"per_s": per_s}

    def immediate_throughput(self, count: int) -> dict[str, float]:
        measured = self.immediate_enqueue(count)
        return {"per_s": 1e6 / measured["us"]}

    # -- get_result() among 20,000 -------------------------------------------

    def raw_get_result(self) -> dict[str, float]:
        futures = self.last_raw_futures
        keys = _spread(list(futures), self.sizes.get_result_calls)
        values = []
        start = time.perf_counter()
        for key in keys:
            values.append(futures[key].result())
        elapsed = time.perf_counter() - start
        check(values == [key + 1 for key in keys], "get_result: raw")
        return {"us": per_task_us(elapsed, len(keys))}

    def our_get_result(self) -> dict[str, float]:
        backend = self.threads
        ids = self.last_ids
        check(len(ids) == self.sizes.thread_tasks, "get_result: the store is filled")
        expected = {result_id: i + 1 for i, result_id in enumerate(ids)}
        keys = _spread(ids, self.sizes.get_result_calls)
        results = []
        start = time.perf_counter()
        for key in keys:
            results.append(backend.get_result(key))
        elapsed = time.perf_counter() - start
        check(
            [r.return_value for r in results] == [expected[key] for key in keys],
            "get_result: ours",
        )
        return {"us": per_task_us(elapsed, len(keys))}

    # -- bytes per retained finished result ----------------------------------

    def raw_memory(self) -> dict[str, float]:
        count = self.sizes.memory_results
        add = self.tasks.add
        with _traced() as traced:
            futures = {}
            for i in range(count):
                futures[i] = self.raw_thread.submit(add, i, 1)
            wait_futures(futures.values(), WAIT)
        self.check_raw(futures, "memory")
        return {"bytes": traced.bytes / count}

    def our_memory(self) -> dict[str, float]:
        """Fills a fresh backend (an empty store) and counts what it keeps."""
        count = self.sizes.memory_results
        self._memory_round += 1
        params = {"OPTIONS": {"MAX_WORKERS": 4, "MAX_RESULTS": count}}
        backend = self.new_thread_backend(f"memory-{self._memory_round}", params)
        task = self.tasks.add_task
        # Starts the worker threads before counting.
        backend.enqueue(task, (0, 1), {})
        backend.wait_until_idle(WAIT)
        ids: list[str] = []
        with _traced() as traced:
            for i in range(count):
                ids.append(backend.enqueue(task, (i, 1), {}).id)
            backend.wait_until_idle(WAIT)
            # The ids list is ours, not the backend's (the strings are shared).
            traced.exclude(sys.getsizeof(ids))
        self.check_ours(backend, ids, "memory")
        self.discard(backend)
        return {"bytes": traced.bytes / count}

    def new_thread_backend(self, alias: str, params: dict[str, Any]) -> Any:
        from django_tasks_local import ThreadPoolBackend

        return ThreadPoolBackend(alias, params)

    def discard(self, backend: Any) -> None:
        from django_tasks_local import runtime as runtime_module

        backend.close(WAIT)
        # Forget the runtime, so the results do not weigh on later rounds.
        runtime_module._registry.pop(backend._runtime_key)

    def immediate_memory(self) -> dict[str, float]:
        count = self.sizes.memory_results
        task = self.task("add", "immediate")
        with _traced() as traced:
            results = []
            for i in range(count):
                results.append(task.enqueue(i, 1))
        for i, result in enumerate(results):
            check(result.return_value == i + 1, "memory: immediate")
        return {"bytes": traced.bytes / count}

    # -- CPU-bound speed-up ----------------------------------------------------

    def raw_cpu(self) -> dict[str, float]:
        burn, n = self.tasks.burn, self.sizes.cpu_loop
        timings = {}
        for name, executor in (
            ("thread", self.raw_thread2),
            ("process", self.raw_process),
        ):
            start = time.perf_counter()
            futures = [executor.submit(burn, n) for _ in range(self.sizes.cpu_tasks)]
            wait_futures(futures, WAIT)
            timings[name] = time.perf_counter() - start
            check(all(f.result() == self.burn_result for f in futures), "cpu: raw")
        return {"speedup": timings["thread"] / timings["process"], **_seconds(timings)}

    def our_cpu(self) -> dict[str, float]:
        n = self.sizes.cpu_loop
        timings = {}
        for name, backend in (("thread", self.threads2), ("process", self.processes)):
            task = self.task("burn", backend.alias)
            start = time.perf_counter()
            ids = [task.enqueue(n).id for _ in range(self.sizes.cpu_tasks)]
            backend.wait_until_idle(WAIT)
            timings[name] = time.perf_counter() - start
            check(
                all(
                    backend.get_result(i).return_value == self.burn_result for i in ids
                ),
                "cpu: ours",
            )
        return {"speedup": timings["thread"] / timings["process"], **_seconds(timings)}

    # -- start delay, idle pool ------------------------------------------------

    def raw_delay(self, executor: Executor, samples: int) -> dict[str, float]:
        body_started = self.tasks.body_started
        delays = []
        for _ in range(samples):
            future = executor.submit(body_started)
            returned = time.perf_counter()
            delays.append(future.result(WAIT) - returned)
            _settle()
        return _delay_stats(delays)

    def our_delay(self, backend: Any, samples: int) -> dict[str, float]:
        task = self.task("body_started", backend.alias)
        delays = []
        for _ in range(samples):
            result = task.enqueue()
            returned = time.perf_counter()
            delays.append(
                backend.wait_for_result(result.id, WAIT).return_value - returned
            )
            _settle()
        return _delay_stats(delays)

    def metadata_delay(self, backend: Any, samples: int) -> dict[str, float]:
        """From a running task's save_metadata() call to get_result() showing it.

        The task notes perf_counter() in its metadata, saves it, and runs on
        for a while (METADATA_HOLD): what get_result() shows meanwhile came
        from the save, not from the task's end. The reader polls every 0.1 ms:
        a loop that never sleeps would keep the GIL from the thread that
        brings the save in (Python hands it over every 5 ms).
        """
        task = self.task("save_progress", backend.alias)
        delays = []
        for _ in range(samples):
            result = task.enqueue()
            while "saved_at" not in (seen := backend.get_result(result.id)).metadata:
                check(
                    not seen.is_finished,
                    "metadata: the task ended before its save was seen",
                )
                time.sleep(0.0001)
            delays.append(time.perf_counter() - seen.metadata["saved_at"])
            backend.wait_for_result(result.id, WAIT)
        return _delay_stats(delays)

    # -- the database store section ----------------------------------------------
    #
    # Three implementations, each on a SQLite file of its own set as the
    # database store asks (benchmarks/settings.py): "ours", our thread backend
    # (4 workers) on the database store; "memory", the same backend on the
    # memory store; "tasks_db", django-tasks-db, run by its own `db_worker`
    # processes with their default options (one for the enqueue cost and the
    # start delay, four for the throughput). Each uses a Task decorated in
    # place (tasks.add_by_path, tasks.body_started_by_path), which a db_worker
    # imports by its module_path.

    def start_store_section(self) -> None:
        """Migrate the section's databases, start the db_workers, warm everything."""
        from django.conf import settings
        from django.core.management import call_command
        from django.tasks import task_backends

        for database in (settings.STORE_DB, settings.TASKS_DB):
            call_command("migrate", database=database, verbosity=0)
        self.store_database = task_backends["store_database"]
        self.store_memory = task_backends["store_memory"]
        self.store_backends = [self.store_database, self.store_memory]
        for alias, workers in (("tasks_db", 1), ("tasks_db4", 4)):
            for _ in range(workers):
                self.db_workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "django",
                            "db_worker",
                            "--backend",
                            alias,
                        ],
                        stdin=subprocess.DEVNULL,
                        # Its default INFO log lines, two a task, go nowhere.
                        stdout=subprocess.DEVNULL,
                    )
                )
        for backend in self.store_backends:
            ids = [self.add_by_path(backend.alias).enqueue(i, 1).id for i in range(8)]
            backend.wait_until_idle(WAIT)
            self.check_store(backend, ids, "warm-up")
        # Until every db_worker has run a task: all have started (each waits
        # up to a second at start), and each one's Django is warm.
        for alias, workers in (("tasks_db", 1), ("tasks_db4", 4)):
            deadline = time.monotonic() + WAIT
            seen: set[str] = set()
            while len(seen) < workers:
                check(time.monotonic() < deadline, f"warm-up: {alias}'s db_workers")
                ids = [self.add_by_path(alias).enqueue(i, 1).id for i in range(20)]
                self.wait_tasks_db(alias)
                seen.update(self.check_tasks_db(ids, "warm-up"))

    def add_by_path(self, alias: str) -> Any:
        return self.tasks.add_by_path.using(backend=alias)

    def check_store(self, backend: Any, ids: list[str], what: str) -> None:
        """Every result, as the backend returns it, and on the database store as stored."""
        self.check_ours(backend, ids, what)
        if backend is not self.store_database:
            return
        from django.conf import settings

        from django_tasks_local.models import StoredResult

        rows = dict(
            StoredResult.objects.using(settings.STORE_DB)
            .filter(id__in=ids, status="SUCCESSFUL")
            .values_list("id", "return_value")
        )
        check(
            [rows.get(result_id) for result_id in ids]
            == [i + 1 for i in range(len(ids))],
            f"{what}: {len(ids) - len(rows)} of {len(ids)} rows of "
            f"{backend.alias} not stored SUCCESSFUL with their return value",
        )

    def check_tasks_db(self, ids: list[str], what: str) -> set[str]:
        """Every row SUCCESSFUL with its return value; the workers that ran them."""
        from django_tasks_db.models import DBTaskResult

        rows = {
            str(row_id): (status, value, tuple(worker_ids))
            for row_id, status, value, worker_ids in DBTaskResult.objects.filter(
                id__in=ids
            ).values_list("id", "status", "return_value", "worker_ids")
        }
        for i, result_id in enumerate(ids):
            status, value, _ = rows.get(result_id, (None, None, ()))
            check(
                status == "SUCCESSFUL" and value == i + 1,
                f"{what}: django-tasks-db task {i} is {status}, returned {value!r}",
            )
        return {worker for _, _, workers in rows.values() for worker in workers}

    def wait_tasks_db(self, alias: str) -> None:
        """Until no task of ``alias`` is READY or RUNNING (every earlier one has ended)."""
        from django_tasks_db.models import DBTaskResult

        unfinished = DBTaskResult.objects.filter(
            backend_name=alias, status__in=["READY", "RUNNING"]
        )
        deadline = time.monotonic() + WAIT
        while unfinished.exists():
            check(time.monotonic() < deadline, f"{alias}: unfinished after {WAIT}s")
            time.sleep(TASKS_DB_POLL)

    def store_enqueue(self, backend: Any) -> dict[str, float]:
        """Each enqueue() timed alone, while the workers run the tasks before it."""
        count = self.sizes.store_enqueue_tasks
        task = self.add_by_path(backend.alias)
        ids, times = [], []
        for i in range(count):
            start = time.perf_counter()
            result = task.enqueue(i, 1)
            times.append(time.perf_counter() - start)
            ids.append(result.id)
        backend.wait_until_idle(WAIT)
        self.check_store(backend, ids, "enqueue")
        return _delay_stats(times)

    def tasks_db_enqueue(self) -> dict[str, float]:
        count = self.sizes.store_enqueue_tasks
        task = self.add_by_path("tasks_db")
        ids, times = [], []
        for i in range(count):
            start = time.perf_counter()
            result = task.enqueue(i, 1)
            times.append(time.perf_counter() - start)
            ids.append(result.id)
        self.wait_tasks_db("tasks_db")
        self.check_tasks_db(ids, "enqueue")
        return _delay_stats(times)

    def store_throughput(self, backend: Any) -> dict[str, float]:
        count = self.sizes.store_throughput_tasks
        ids, per_s = burst(self.add_by_path(backend.alias), backend, count)
        self.check_store(backend, ids, "throughput")
        return {"per_s": per_s}

    def tasks_db_throughput(self) -> dict[str, float]:
        """Four db_workers: until the poll (every TASKS_DB_POLL) finds all done."""
        count = self.sizes.store_throughput_tasks
        task = self.add_by_path("tasks_db4")
        ids = []
        start = time.perf_counter()
        for i in range(count):
            ids.append(task.enqueue(i, 1).id)
        self.wait_tasks_db("tasks_db4")
        elapsed = time.perf_counter() - start
        self.check_tasks_db(ids, "throughput")
        return {"per_s": count / elapsed}

    def store_delay(self, backend: Any) -> dict[str, float]:
        """From the enqueue() call to the body's start (which the task records)."""
        task = self.tasks.body_started_by_path.using(backend=backend.alias)
        delays = []
        for _ in range(self.sizes.store_delay_samples):
            start = time.perf_counter()
            result = task.enqueue()
            body = backend.wait_for_result(result.id, WAIT).return_value
            check(body > start, "delay: the body started before its enqueue")
            delays.append(body - start)
            _settle()
        return _delay_stats(delays)

    def tasks_db_delay(self) -> dict[str, float]:
        """As store_delay(), on the one default db_worker, which polls every second.

        Each enqueue comes at a chosen point of the worker's polling cycle:
        the worker polls again at once after a task, finds nothing, and
        sleeps TASKS_DB_INTERVAL; the samples wait spread offsets (one in
        each equal slice of the interval, in random order) after the last
        task's end was seen, as arrivals at random times would.
        """
        from django_tasks_db.models import DBTaskResult

        samples = self.sizes.tasks_db_delay_samples
        offsets = [(i + random.random()) / samples for i in range(samples)]
        random.shuffle(offsets)
        task = self.tasks.body_started_by_path.using(backend="tasks_db")
        delays = []
        for offset in offsets:
            time.sleep(offset * TASKS_DB_INTERVAL)
            start = time.perf_counter()
            result = task.enqueue()
            self.wait_tasks_db("tasks_db")
            status, body = DBTaskResult.objects.values_list(
                "status", "return_value"
            ).get(id=result.id)
            check(status == "SUCCESSFUL", f"delay: django-tasks-db task is {status}")
            check(body > start, "delay: the body started before its enqueue")
            delays.append(body - start)
        return _delay_stats(delays)

    # -- the scenarios -----------------------------------------------------------

    def seed(self, scenario: str) -> Callable[[], dict[str, float]]:
        """The seed's measurement of ``scenario``: what "ours" runs, on its backends."""
        return lambda: self.seed_worker.measure(scenario)

    def scenarios(self) -> list[Scenario]:
        s = self.sizes
        return [
            Scenario(
                "enqueue_thread",
                "enqueue cost, thread (no-op task, 2 args)",
                [
                    Metric(
                        "cpu_us", "caller's CPU/task", "µs", Target("ratio", "<=", 1.5)
                    ),
                    Metric("us", "wall/task", "µs"),
                ],
                {
                    "raw": lambda: self.raw_submit(self.raw_thread, s.enqueue_tasks),
                    "ours": lambda: self.our_enqueue(self.threads, s.enqueue_tasks),
                    "seed": self.seed("enqueue_thread"),
                    "immediate": lambda: self.immediate_enqueue(s.enqueue_tasks),
                },
            ),
            Scenario(
                "enqueue_process",
                "enqueue cost, process",
                [
                    Metric("cpu_us", "caller's CPU/task", "µs"),
                    Metric("us", "wall/task", "µs"),
                ],
                {
                    "raw": lambda: self.raw_submit(self.raw_process, s.enqueue_tasks),
                    "ours": lambda: self.our_enqueue(self.processes, s.enqueue_tasks),
                    "seed": self.seed("enqueue_process"),
                },
            ),
            Scenario(
                "throughput_thread",
                f"throughput, {s.thread_tasks:,} no-op tasks, thread (4 workers)",
                [Metric("per_s", "tasks/s", "/s", Target("ratio", ">=", 0.6))],
                {
                    "raw": lambda: self.raw_throughput(self.raw_thread, s.thread_tasks),
                    "ours": lambda: self.our_throughput(self.threads, s.thread_tasks),
                    "seed": self.seed("throughput_thread"),
                    "immediate": lambda: self.immediate_throughput(s.thread_tasks),
                },
            ),
            # Reads what throughput_thread left: 20,000 finished results.
            Scenario(
                "get_result",
                f"get_result() on a finished result among {s.thread_tasks:,}",
                [Metric("us", "per call", "µs")],
                {
                    "raw": self.raw_get_result,
                    "ours": self.our_get_result,
                    "seed": self.seed("get_result"),
                },
            ),
            Scenario(
                "throughput_process",
                f"throughput, {s.process_tasks:,} no-op tasks, process (2 workers)",
                [Metric("per_s", "tasks/s", "/s", Target("ratio", ">=", 1.0))],
                {
                    "raw": lambda: self.raw_throughput(
                        self.raw_process, s.process_tasks
                    ),
                    "ours": lambda: self.our_throughput(
                        self.processes, s.process_tasks
                    ),
                    "seed": self.seed("throughput_process"),
                },
            ),
            Scenario(
                "memory",
                "bytes held per retained finished result",
                [Metric("bytes", "per result", "B", Target("absolute", "<=", 1000))],
                {
                    "raw": self.raw_memory,
                    "ours": self.our_memory,
                    "seed": self.seed("memory"),
                    "immediate": self.immediate_memory,
                },
            ),
            Scenario(
                "cpu_speedup",
                f"CPU-bound speed-up, {s.cpu_tasks} tasks, process over thread, 2 workers",
                [
                    Metric("speedup", "speed-up", "x", Target("absolute", ">=", 1.8)),
                    Metric("thread_s", "thread time", "s"),
                    Metric("process_s", "process time", "s"),
                ],
                {
                    "raw": self.raw_cpu,
                    "ours": self.our_cpu,
                    "seed": self.seed("cpu_speedup"),
                },
            ),
            Scenario(
                "delay_thread",
                "start delay after enqueue() returns, idle pool, thread",
                [
                    Metric("p50", "p50", "µs", Target("ratio", "<=", 1.5)),
                    Metric("p99", "p99", "µs"),
                ],
                {
                    "raw": lambda: self.raw_delay(
                        self.raw_thread, s.delay_samples_thread
                    ),
                    "ours": lambda: self.our_delay(
                        self.threads, s.delay_samples_thread
                    ),
                    "seed": self.seed("delay_thread"),
                },
            ),
            Scenario(
                "delay_process",
                "start delay after enqueue() returns, idle pool, process",
                [
                    Metric("p50", "p50", "µs", Target("ratio", "<=", 1.5)),
                    Metric("p99", "p99", "µs"),
                ],
                {
                    "raw": lambda: self.raw_delay(
                        self.raw_process, s.delay_samples_process
                    ),
                    "ours": lambda: self.our_delay(
                        self.processes, s.delay_samples_process
                    ),
                    "seed": self.seed("delay_process"),
                },
            ),
            *self.store_scenarios(),
            *(
                Scenario(
                    f"metadata_{kind}",
                    f"save_metadata() in a running task to get_result() showing it, {kind}",
                    [
                        Metric("p50", "p50", "µs", Target("absolute", "<=", 100_000)),
                        Metric("p99", "p99", "µs"),
                    ],
                    {"ours": partial(self.metadata_delay, backend, s.metadata_samples)},
                    baseline="ours",
                    group="metadata",
                )
                for kind, backend in (
                    ("thread", self.threads),
                    ("process", self.processes),
                )
            ),
        ]

    def store_scenarios(self) -> list[Scenario]:
        """The database store section: ours on SQLite, our memory store, django-tasks-db."""
        s = self.sizes
        group = "database store"
        section = {
            "baseline": "tasks_db",
            "second_baseline": "memory",
            "group": group,
        }
        return [
            Scenario(
                "store_enqueue",
                "enqueue(), no-op task, 2 args, workers running",
                [
                    Metric(
                        "p50",
                        "p50 per call",
                        "µs",
                        Target("absolute", "<=", 1000),
                        Target("ratio", "<=", 0.5, "django-tasks-db"),
                    ),
                    Metric("p99", "p99 per call", "µs"),
                ],
                {
                    "ours": lambda: self.store_enqueue(self.store_database),
                    "memory": lambda: self.store_enqueue(self.store_memory),
                    "tasks_db": self.tasks_db_enqueue,
                },
                **section,
            ),
            Scenario(
                "store_delay",
                "start delay, enqueue() called to body start, idle",
                [
                    Metric(
                        "p50",
                        "p50",
                        "µs",
                        Target("ratio", "<=", 1 / 50, "django-tasks-db"),
                    ),
                    Metric("p99", "p99", "µs"),
                ],
                {
                    "ours": lambda: self.store_delay(self.store_database),
                    "memory": lambda: self.store_delay(self.store_memory),
                    "tasks_db": self.tasks_db_delay,
                },
                **section,
            ),
            Scenario(
                "store_throughput",
                f"throughput, {s.store_throughput_tasks:,} no-op tasks, 4 workers",
                [Metric("per_s", "tasks/s", "/s", Target("absolute", ">=", 1000))],
                {
                    "ours": lambda: self.store_throughput(self.store_database),
                    "memory": lambda: self.store_throughput(self.store_memory),
                    "tasks_db": self.tasks_db_throughput,
                },
                **section,
            ),
        ]


class _Traced:
    bytes = 0

    def exclude(self, size: int) -> None:
        self._excluded += size

    def __enter__(self) -> _Traced:
        gc.collect()
        tracemalloc.start()
        self._excluded = 0
        self._before = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        gc.collect()
        self.bytes = tracemalloc.get_traced_memory()[0] - self._before - self._excluded
        tracemalloc.stop()


def _traced() -> _Traced:
    """Counts the bytes allocated in the block and still held at its end."""
    return _Traced()


def _spread(keys: list[Any], count: int) -> list[Any]:
    """``count`` keys spread over all of them, in an order that defeats caches."""
    step = 7919  # a prime: visits every key once per pass, far from the last
    return [keys[(i * step) % len(keys)] for i in range(count)]


def _settle() -> None:
    # Lets the worker go back to waiting, so every sample finds the pool idle.
    time.sleep(0.002)


def _enqueue_costs(elapsed: float, cpu: float, count: int) -> dict[str, float]:
    # CPU: what enqueue() itself costs the calling thread. Wall: that, plus
    # the time the workers, running the tasks meanwhile, held the GIL.
    return {"cpu_us": per_task_us(cpu, count), "us": per_task_us(elapsed, count)}


def _seconds(timings: dict[str, float]) -> dict[str, float]:
    return {f"{name}_s": value for name, value in timings.items()}


def burst(task: Any, backend: Any, count: int) -> tuple[list[str], float]:
    """Enqueue ``task(i, 1)`` ``count`` times on our ``backend``, wait until it is
    idle: the result ids, and the tasks per second from first enqueue to idle."""
    ids = []
    start = time.perf_counter()
    for i in range(count):
        ids.append(task.enqueue(i, 1).id)
    backend.wait_until_idle(WAIT)
    return ids, count / (time.perf_counter() - start)


def _delay_stats(delays: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(delays, 0.50) * 1e6,
        "p99": percentile(delays, 0.99) * 1e6,
    }


# -- the run -------------------------------------------------------------------


def run(bench: Bench, scenarios: list[Scenario], rounds: int) -> None:
    for round_index in range(rounds):
        started = time.perf_counter()
        for scenario in scenarios:
            names = list(scenario.impls)
            shift = round_index % len(names)
            measured = {}
            for name in names[shift:] + names[:shift]:
                gc.collect()
                measured[name] = scenario.impls[name]()
            references = [(scenario.baseline, scenario.ratios)]
            if scenario.second_baseline is not None:
                references.append((scenario.second_baseline, scenario.ratios2))
            for name, values in measured.items():
                for key, value in values.items():
                    scenario.values.setdefault(name, {}).setdefault(key, []).append(
                        value
                    )
                    for reference, ratios in references:
                        base = measured[reference].get(key)
                        if base:
                            ratios.setdefault(name, {}).setdefault(key, []).append(
                                value / base
                            )
        print(
            f"round {round_index + 1}/{rounds} done in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )


def summarize(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    rows = []
    for scenario in scenarios:
        for metric in scenario.metrics:
            row: dict[str, Any] = {
                "scenario": scenario.name,
                "title": scenario.title,
                "metric": metric.key,
                "label": metric.label,
                "unit": metric.unit,
                "target": " and ".join(str(t) for t in metric.targets) or None,
                "group": scenario.group,
                "baseline": scenario.baseline,
                "second_baseline": scenario.second_baseline,
            }
            for name in scenario.impls:
                values = scenario.values[name][metric.key]
                ratios = scenario.ratios.get(name, {}).get(metric.key)
                row[name] = statistics.median(values)
                row[f"{name}_ratio"] = statistics.median(ratios) if ratios else None
                ratios2 = scenario.ratios2.get(name, {}).get(metric.key)
                if ratios2:
                    row[f"{name}_ratio2"] = statistics.median(ratios2)
                row[f"{name}_rounds"] = values
            if metric.targets:
                verdicts = [
                    t.met(row["ours_ratio"], row["ours"]) for t in metric.targets
                ]
                row["met"] = (
                    None if None in verdicts else all(v is True for v in verdicts)
                )
            rows.append(row)
    return rows


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s" or unit == "B":
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


# The columns of each group's table: (header, implementation, what of it).
_COLUMNS = {
    "executors": [
        ("raw", "raw", "value"),
        ("ours", "ours", "value"),
        ("ours/raw", "ours", "ratio"),
        ("seed", "seed", "value"),
        ("seed/raw", "seed", "ratio"),
        ("immediate", "immediate", "value"),
    ],
    "metadata": [("ours", "ours", "value")],
    "database store": [
        ("ours, database store (SQLite)", "ours", "value"),
        ("ours, memory store", "memory", "value"),
        ("django-tasks-db", "tasks_db", "value"),
        ("ours/django-tasks-db", "ours", "ratio"),
        ("database/memory store", "ours", "ratio2"),
    ],
}


def _cells(row: dict[str, Any], missed: str) -> list[str]:
    unit = row["unit"]
    cells = [row["title"], f"{row['label']} ({unit})"]
    for _, name, what in _COLUMNS[row.get("group", "executors")]:
        if what == "value":
            cells.append(_fmt(row.get(name), unit))
        else:
            cells.append(_fmt_ratio(row.get(f"{name}_{what}")))
    cells.append(row["target"] or "")
    cells.append({True: "met", False: missed, None: ""}[row.get("met")])
    return cells


def _header(group: str) -> list[str]:
    return ["scenario", "metric", *(c[0] for c in _COLUMNS[group]), "target", ""]


def print_table(rows: list[dict[str, Any]], group: str = "executors") -> str:
    header = _header(group)
    lines = [_cells(row, "MISSED") for row in rows]
    widths = [
        max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)
    ]
    out = []
    for line in [header, *lines]:
        out.append(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
            )
        )
    text = "\n".join(out)
    print(text)
    return text


def markdown_table(rows: list[dict[str, Any]], group: str = "executors") -> str:
    """The result table as Markdown, for docs/benchmarks.md."""
    header = _header(group)
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|---|" + "--:|" * len(_COLUMNS[group]) + "---|---|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cells(row, "**missed**")) + " |")
    return "\n".join(lines)


def anatomy(bench: Bench) -> list[dict[str, Any]]:
    """CPU time of the steps a task's life takes, each alone, in a tight loop.

    It explains the end-to-end numbers: what Django's task framework asks of
    every backend (the signals, with Django's own logging receivers; a
    TaskResult) costs more per task than a raw executor's whole round trip.
    Timed with the thread's CPU clock, so other load on the machine counts less.
    """
    from django.db import close_old_connections, transaction
    from django.tasks import TaskResult
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils import timezone

    from django_tasks_local.result_ids import new_result_id
    from django_tasks_local.results import new_result, snapshot
    from django_tasks_local.states import READY

    backend = bench.threads
    task = bench.task("add", backend.alias)
    sender = type(backend)
    fields = {
        "task": task,
        "id": new_result_id(),
        "status": READY,
        "enqueued_at": timezone.now(),
        "started_at": None,
        "last_attempted_at": None,
        "finished_at": None,
        "args": (1, 2),
        "kwargs": {},
        "backend": backend.alias,
        "errors": [],
        "worker_ids": [],
    }
    result = TaskResult(**fields)
    steps: list[tuple[str, str, Callable[[], object]]] = [
        ("django", "validate_task()", lambda: backend.validate_task(task)),
        (
            "django",
            "TaskResult(...) (Django's constructor)",
            lambda: TaskResult(**fields),
        ),
        (
            "django",
            "task_enqueued.send_robust() (Django's DEBUG log receiver)",
            lambda: task_enqueued.send_robust(sender, task_result=result),
        ),
        (
            "django",
            "task_started.send_robust() (Django's INFO log receiver)",
            lambda: task_started.send_robust(sender, task_result=result),
        ),
        (
            "django",
            "task_finished.send_robust() (Django's INFO log receiver)",
            lambda: task_finished.send_robust(sender, task_result=result),
        ),
        ("django", "close_old_connections() (twice per task)", close_old_connections),
        (
            "django",
            "transaction.get_connection().in_atomic_block",
            lambda: transaction.get_connection().in_atomic_block,
        ),
        ("ours", "new_result(...) (ours, same result)", lambda: new_result(**fields)),
        ("ours", "snapshot() (three per task)", lambda: snapshot(result)),
        ("ours", "new_result_id() (the result id)", new_result_id),
    ]
    logger = logging.getLogger("django.tasks")
    level = logger.level
    try:
        # Django's default logging: django.tasks inherits INFO from "django".
        logger.setLevel(logging.NOTSET)
        rows = [
            {"owner": owner, "step": label, "cpu_us": _cpu_us(step)}
            for owner, label, step in steps
        ]
        # As when a project's LOGGING sets django.tasks to WARNING: Django's
        # receiver then returns before it builds a log record.
        logger.setLevel(logging.WARNING)
        cost = _cpu_us(lambda: task_finished.send_robust(sender, task_result=result))
    finally:
        logger.setLevel(level)
    label = "task_finished.send_robust(), with django.tasks logging at WARNING"
    rows.append({"owner": "django", "step": label, "cpu_us": cost})
    return rows


def _cpu_us(step: Callable[[], object]) -> float:
    number = 5_000
    timer = timeit.Timer(step, timer=time.thread_time)
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def print_anatomy(rows: list[dict[str, Any]]) -> str:
    width = max(len(row["step"]) for row in rows)
    lines = [f"{'step (CPU time, best of 5)':<{width}}  µs"]
    lines += [f"{row['step']:<{width}}  {row['cpu_us']:.2f}" for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def machine(seed: SeedWorker) -> dict[str, Any]:
    import django

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "raw_process_start_method": multiprocessing.get_start_method(),
        "ours_process_start_method": "spawn",
        "seed": f"django-tasks-local {seed.about['version']}",
        "seed_process_start_method": seed.about["process_start_method"],
        "load_average": os.getloadavg(),
    }


def store_machine() -> dict[str, Any]:
    import sqlite3
    from importlib.metadata import version

    return {
        "sqlite": sqlite3.sqlite_version,
        "django_tasks_db": version("django-tasks-db"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short pass (about two minutes)"
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds (default 5, or 3 with --quick)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="SCENARIO", help="run only these scenarios"
    )
    parser.add_argument("--output", type=Path, help="where to write the JSON results")
    parser.add_argument(
        "--task-logs-at-warning",
        action="store_true",
        help=(
            "set the django.tasks logger to WARNING, as a project's LOGGING may: "
            "Django's signal receivers then build no INFO log record per task"
        ),
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or sizes.rounds
    # A raw ProcessPoolExecutor forks; Python warns about forking a process
    # with threads, which is that baseline's own business.
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")

    if not SEED_PYTHON.exists():
        parser.error(
            f"no {SEED_PYTHON.relative_to(ROOT)}: `make bench` (or "
            "`make .venv-seed/.installed`) installs django-tasks-local 2.0 there"
        )

    began = time.perf_counter()
    # The database store section's SQLite files: a fresh directory per run,
    # which benchmarks/settings.py reads (and the db_workers inherit).
    db_dir = tempfile.mkdtemp(prefix="django-tasks-local-bench-")
    os.environ["DTL_BENCH_DB_DIR"] = db_dir
    try:
        return _main(args, sizes, rounds, began, parser)
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)


def _main(
    args: argparse.Namespace,
    sizes: Sizes,
    rounds: int,
    began: float,
    parser: argparse.ArgumentParser,
) -> int:
    bench = Bench(sizes)
    if args.task_logs_at_warning:
        logging.getLogger("django.tasks").setLevel(logging.WARNING)
    scenarios = bench.scenarios()
    if args.only:
        unknown = set(args.only) - {s.name for s in scenarios}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        # get_result reads what throughput_thread leaves behind.
        wanted = set(args.only) | (
            {"throughput_thread"} if "get_result" in args.only else set()
        )
        scenarios = [s for s in scenarios if s.name in wanted]
    info = machine(bench.seed_worker)
    print(
        f"{info['cpu']} x{info['cpu_count']}, Python {info['python']}, Django {info['django']}; "
        f"seed: {info['seed']}; {rounds} rounds{' (quick)' if args.quick else ''}; pools warmed before timing",
        file=sys.stderr,
    )
    try:
        if any(s.group == "database store" for s in scenarios):
            bench.start_store_section()
            info |= store_machine()
        run(bench, scenarios, rounds)
    finally:
        bench.close()
    rows = summarize(scenarios)
    executor_rows = [row for row in rows if row["group"] == "executors"]
    store_rows = [row for row in rows if row["group"] == "database store"]
    metadata_rows = [row for row in rows if row["group"] == "metadata"]
    print()
    table = print_table(executor_rows) if executor_rows else ""
    print()
    store_table = ""
    if store_rows:
        store_table = print_table(store_rows, "database store")
        print()
    metadata_table = ""
    if metadata_rows:
        metadata_table = print_table(metadata_rows, "metadata")
        print()
    steps = anatomy(bench)
    steps_table = print_anatomy(steps)
    info["load_average_after"] = os.getloadavg()
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "task_logs_at_warning": args.task_logs_at_warning,
        "rounds": rounds,
        "sizes": sizes.__dict__,
        "seconds": round(time.perf_counter() - began, 1),
        "machine": info,
        "rows": rows,
        "table": table,
        "table_markdown": markdown_table(executor_rows),
        "store_table": store_table,
        "store_table_markdown": markdown_table(store_rows, "database store")
        if store_rows
        else "",
        "metadata_table": metadata_table,
        "metadata_table_markdown": markdown_table(metadata_rows, "metadata")
        if metadata_rows
        else "",
        "anatomy": steps,
        "anatomy_table": steps_table,
    }
    output = args.output or RESULTS_DIR / (
        f"bench-{datetime.now(UTC):%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nwrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output} "
        f"({report['seconds']}s)"
    )
    # A missed target is a finding, not a failure: the run itself succeeded.
    return 0


if __name__ == "__main__":
    sys.exit(main())
