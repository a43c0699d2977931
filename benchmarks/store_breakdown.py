"""Where a task's time goes on the database store (SQLite): a diagnostic.

``python benchmarks/store_breakdown.py`` (from the repository root) prints:

1. each write the database store makes in a task's life, timed alone in one
   thread (no worker contending), round after round as the table fills;
2. a cProfile of ``enqueue()`` on the database store, its four workers held
   busy so that the profile (which, from Python 3.12, sees every thread)
   holds the caller's thread alone: the top functions by own time, and the
   share of the ORM, of SQLite and of the rest.

Used for docs/benchmarks.md (the database store); not part of ``make bench``.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"

COUNT = 1_000


def timed(label: str, step: Any, count: int) -> None:
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(count):
        step(i)
    wall = (time.perf_counter() - wall) / count * 1e6
    cpu = (time.thread_time() - cpu) / count * 1e6
    print(f"  {label:<52} {wall:8.1f} µs wall {cpu:8.1f} µs CPU")


def writes(rounds: int) -> None:
    from django.conf import settings

    from django_tasks_local.database_store import DatabaseStore
    from django_tasks_local.models import StoredResult

    database = settings.STORE_DB
    store = DatabaseStore(
        settings.STORE_MAX_RESULTS, alias="x", database=database, recovery_timeout=30
    )
    store._renew()
    for round_index in range(rounds):
        finished = StoredResult.objects.using(database).filter(
            backend="x", finished_at__isnull=False
        )
        print(
            f"round {round_index + 1}: {finished.count():,} finished rows, "
            f"MAX_RESULTS {store.max_results:,}, {COUNT:,} tasks"
        )
        one_round(store)


def one_round(store: Any) -> None:
    from django.utils import timezone

    from benchmarks import tasks
    from django_tasks_local.result_ids import new_result_id
    from django_tasks_local.results import ready_result
    from django_tasks_local.states import SUCCESSFUL

    results = [
        ready_result(
            tasks.add_by_path, new_result_id(), "x", (i, 1), {}, timezone.now()
        )
        for i in range(COUNT)
    ]
    now = timezone.now()
    timed(
        "save_enqueued(): the row's INSERT",
        lambda i: store.save_enqueued(results[i], held=False),
        COUNT,
    )
    timed(
        "save_started(): UPDATE",
        lambda i: store.save_started(results[i].id, ["w"], now),
        COUNT,
    )
    for result in results:
        object.__setattr__(result, "status", SUCCESSFUL)
        object.__setattr__(result, "started_at", now)
        object.__setattr__(result, "last_attempted_at", now)
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "_return_value", 2)
    timed(
        "save_finished(): UPDATE, then the look past MAX_RESULTS",
        lambda i: store.save_finished(results[i]),
        COUNT,
    )
    timed(
        "the look past MAX_RESULTS alone",
        lambda i: store._read("past_bound", [store.alias, store.max_results]),
        COUNT,
    )


def profile_enqueue() -> None:
    from django.tasks import task_backends

    from benchmarks import tasks

    backend = task_backends["store_database"]
    release = threading.Event()
    blocker = tasks.wait_for_event.using(backend=backend.alias)
    tasks.EVENTS["bench"] = release
    held = [blocker.enqueue("bench") for _ in range(4)]
    time.sleep(0.2)
    task = tasks.add_by_path.using(backend=backend.alias)
    profile = cProfile.Profile()
    began = time.perf_counter()
    profile.enable()
    ids = [task.enqueue(i, 1).id for i in range(COUNT)]
    profile.disable()
    elapsed = time.perf_counter() - began
    release.set()
    backend.wait_until_idle(120)
    for i, result_id in enumerate(ids):
        assert backend.get_result(result_id).return_value == i + 1
    assert all(backend.get_result(r.id).status == "SUCCESSFUL" for r in held)
    stats = pstats.Stats(profile)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    shares = {"Django ORM (query building, compiling, model save)": 0.0}
    shares |= {"SQLite (the cursor's execute)": 0.0, "the rest": 0.0}
    for (filename, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]
        if "execute" in name and ("sqlite3" in filename or filename == "~"):
            shares["SQLite (the cursor's execute)"] += own
        elif "django/db/" in filename or "django/utils/tree" in filename:
            shares["Django ORM (query building, compiling, model save)"] += own
        else:
            shares["the rest"] += own
    print(
        f"\ncProfile of {COUNT:,} enqueue() calls on the database store: "
        f"{elapsed / COUNT * 1e6:.0f} µs each under the profiler"
    )
    for label, own in shares.items():
        print(f"  {label:<52} {own / total:6.1%}")
    wanted = {
        ("database_store.py", "save_enqueued"): "the row's INSERT (save_enqueued)",
        ("runtime.py", "_send"): "task_enqueued (Django's DEBUG log receiver)",
        ("results.py", "ready_result"): "the TaskResult (ready_result)",
    }
    for (filename, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        label = wanted.get((Path(filename).name, name))
        if label:
            print(f"  of which {label:<43} {row[3] / total:6.1%} (with what it calls)")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue())
    backend.close(10)


def main() -> None:
    db_dir = tempfile.mkdtemp(prefix="django-tasks-local-breakdown-")
    os.environ["DTL_BENCH_DB_DIR"] = db_dir
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        call_command("migrate", database=settings.STORE_DB, verbosity=0)
        writes(rounds=4)
        profile_enqueue()
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
