"""The migrations of the database store's tables, run on a database of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.helpers import DEADLINE, REPO

SETTINGS = """
import json
import os

SECRET_KEY = "migrations"
USE_TZ = True
INSTALLED_APPS = ["django_tasks_local"]
DATABASES = {"default": json.loads(os.environ["MIGRATED_DATABASE"])}
"""

SCRIPT = """
import json

import django

django.setup()
from django.core.management import call_command
from django.utils import timezone

from django_tasks_local.models import FinishedCount, StoredResult

def add(backend, finished):
    StoredResult.objects.create(
        id=f"{StoredResult.objects.count():032x}", backend=backend, task_path="a.b",
        queue_name="default", status="SUCCESSFUL" if finished else "READY",
        finished_at=timezone.now() if finished else None,
    )

call_command("migrate", "django_tasks_local", "0002", verbosity=0)
for backend, finished in [("a", True), ("a", True), ("a", False), ("b", True)]:
    add(backend, finished)
call_command("migrate", "django_tasks_local", verbosity=0)
counted = {c.backend: c.finished for c in FinishedCount.objects.all()}
add("a", True)
after_one_more = FinishedCount.objects.get(backend="a").finished
call_command("migrate", "django_tasks_local", "0002", verbosity=0)
# No trigger is left to write to the dropped table.
deleted, _ = StoredResult.objects.filter(finished_at__isnull=False).delete()
print(json.dumps([counted, after_one_more, deleted]))
"""


@contextmanager
def fresh_database(vendor: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The settings of an empty database, dropped after (PostgreSQL)."""
    if vendor == "sqlite":
        yield {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db")}
        return
    import psycopg

    config = {**settings.DATABASES["postgres"], "NAME": f"dtl_migrations_{os.getpid()}"}
    server = f"host={config['HOST']} port={config['PORT']} user={config['USER']}"
    with psycopg.connect(f"{server} dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {config['NAME']}")
        admin.execute(f"CREATE DATABASE {config['NAME']}")
        try:
            yield {
                key: config[key] for key in ("ENGINE", "HOST", "PORT", "USER", "NAME")
            }
        finally:
            admin.execute(f"DROP DATABASE {config['NAME']} WITH (FORCE)")


@pytest.mark.parametrize(
    "vendor", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_count_migration_counts_the_rows_already_there_and_reverses(
    vendor: str, tmp_path: Path
) -> None:
    (tmp_path / "migration_settings.py").write_text(SETTINGS)
    with fresh_database(vendor, tmp_path) as database:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "migration_settings",
            "MIGRATED_DATABASE": json.dumps(database),
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "src")]),
        }
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"a": 2, "b": 1}, 3, 4]
