"""Settings for the benchmarks (``benchmarks/run.py`` sets DJANGO_SETTINGS_MODULE to this)."""

import os
import tempfile
from pathlib import Path

SECRET_KEY = "django-tasks-local-benchmarks"
USE_TZ = True

# In memory: no benchmark of the executors touches the database, but a project
# always has one, and enqueue() asks its connection whether a transaction is open.
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}

# Each store keeps exactly the 20,000 results of the last throughput run, so
# every one of them can be checked, and get_result() is measured among 20,000.
MAX_RESULTS = 20_000

TASKS = {
    "default": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 4, "MAX_RESULTS": MAX_RESULTS},
    },
    "threads": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 4, "MAX_RESULTS": MAX_RESULTS},
    },
    # The same size as "processes", for the CPU-bound speed-up.
    "threads2": {
        "BACKEND": "django_tasks_local.ThreadPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2, "MAX_RESULTS": MAX_RESULTS},
    },
    "processes": {
        "BACKEND": "django_tasks_local.ProcessPoolBackend",
        "OPTIONS": {"MAX_WORKERS": 2, "MAX_RESULTS": MAX_RESULTS},
    },
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
}

INSTALLED_APPS: list[str] = []
DATABASE_ROUTERS: list[str] = []

# -- the database store section ------------------------------------------------
#
# Our database store and django-tasks-db, each on a SQLite file of its own,
# set as the database store asks (django_tasks_local.store_checks). run.py
# points DTL_BENCH_DB_DIR at a fresh directory per run and migrates both
# files at start; the db_worker processes it starts inherit the variable.
# The seed (seed_worker.py, django-tasks-local 2.0 without django-tasks-db)
# sets DTL_BENCH_SEED and gets none of this.
STORE_DB = "bench_store"
TASKS_DB = "bench_tasks_db"
# Finished rows kept per alias: enough for the largest burst of the section
# (the full run's throughput scenario, 2,000) to be checked whole, since past
# the bound the database store keeps a tenth less. The default is 1,000.
STORE_MAX_RESULTS = 2_500

if not os.environ.get("DTL_BENCH_SEED"):
    _db_dir = Path(os.environ.get("DTL_BENCH_DB_DIR") or tempfile.gettempdir())
    _sqlite_options = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    INSTALLED_APPS += ["django_tasks_local", "django_tasks_db"]
    DATABASE_ROUTERS += ["benchmarks.settings.TasksDbRouter"]
    for _alias in (STORE_DB, TASKS_DB):
        DATABASES[_alias] = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(_db_dir / f"{_alias}.sqlite3"),
            "OPTIONS": _sqlite_options,
        }
    TASKS |= {
        # Ours, on the database store and on the memory store: the same pool.
        "store_database": {
            "BACKEND": "django_tasks_local.ThreadPoolBackend",
            "OPTIONS": {
                "MAX_WORKERS": 4,
                "MAX_RESULTS": STORE_MAX_RESULTS,
                "STORE": "database",
                "DATABASE": STORE_DB,
            },
        },
        "store_memory": {
            "BACKEND": "django_tasks_local.ThreadPoolBackend",
            "OPTIONS": {"MAX_WORKERS": 4, "MAX_RESULTS": STORE_MAX_RESULTS},
        },
        # django-tasks-db: one default `db_worker` runs "tasks_db" (enqueue
        # cost, start delay), four run "tasks_db4" (throughput).
        "tasks_db": {"BACKEND": "django_tasks_db.DatabaseBackend"},
        "tasks_db4": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    }


class TasksDbRouter:
    """django-tasks-db's table in its file, our store's in the other."""

    apps = {"django_tasks_database": TASKS_DB, "django_tasks_local": STORE_DB}

    def db_for_read(self, model, **hints):
        return self.apps.get(model._meta.app_label)

    db_for_write = db_for_read

    def allow_migrate(self, db, app_label, **hints):
        if app_label in self.apps:
            return db == self.apps[app_label]
        return None
