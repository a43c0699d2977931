"""System checks of a backend's database store, by stable id.

* ``django_tasks_local.E004``: the ``django_tasks_local`` app is not installed.
* ``django_tasks_local.E005``: ``OPTIONS["DATABASE"]`` names no database.
* ``django_tasks_local.E006``: a SQLite database without IMMEDIATE transactions.
* ``django_tasks_local.E007``: a SQLite database not in WAL mode, or in memory.
* ``django_tasks_local.E008``: a SQLite busy timeout under 5 seconds.
* ``django_tasks_local.E009``: a database other than SQLite or PostgreSQL.

Each SQLite one is a setting that lets concurrent writers (the web
processes, and their worker threads) fail with "database is locked".
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db.utils import load_backend

#: A SQLite database that several processes write to at once, as it should be set.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
MIN_SQLITE_TIMEOUT = 5


def check_database_store(alias: str, database: str) -> list[checks.CheckMessage]:
    where = f"TASKS[{alias!r}] has OPTIONS['STORE'] 'database'"
    if not apps.is_installed("django_tasks_local"):
        return [
            checks.Error(
                f"{where}, but 'django_tasks_local' is not in INSTALLED_APPS.",
                hint="Add 'django_tasks_local' to INSTALLED_APPS, then run migrate.",
                id="django_tasks_local.E004",
            )
        ]
    if database not in settings.DATABASES:
        aliases = ", ".join(repr(name) for name in settings.DATABASES)
        return [
            checks.Error(
                f"{where} on database {database!r}, which is not in DATABASES.",
                hint=f"Set OPTIONS['DATABASE'] to one of: {aliases}.",
                id="django_tasks_local.E005",
            )
        ]
    config = settings.DATABASES[database]
    # The vendor of its ENGINE (read from the settings: no connection made).
    engine = str(config.get("ENGINE") or "django.db.backends.dummy")
    vendor = load_backend(engine).DatabaseWrapper.vendor
    if vendor not in ("sqlite", "postgresql"):
        return [
            checks.Error(
                f"{where} on database {database!r}, whose ENGINE is {engine!r}: the "
                "database store runs on SQLite and PostgreSQL (its migrations "
                "make the triggers that count each alias's finished rows there).",
                hint="Set OPTIONS['DATABASE'] to a SQLite or PostgreSQL database, "
                "or move to a persistent backend made for this database.",
                id="django_tasks_local.E009",
            )
        ]
    if vendor != "sqlite":
        return []
    return _check_sqlite(f"{where} on SQLite database {database!r}", config)


def _check_sqlite(where: str, config: dict[str, Any]) -> list[checks.CheckMessage]:
    options = config.get("OPTIONS", {})
    recommended = f"DATABASES OPTIONS such as {SQLITE_OPTIONS!r}"
    errors: list[checks.CheckMessage] = []
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        errors.append(
            checks.Error(
                f"{where}, whose transactions are not IMMEDIATE: two processes "
                "writing at once fail with 'database is locked'.",
                hint=f'Add "transaction_mode": "IMMEDIATE"; in all: {recommended}.',
                id="django_tasks_local.E006",
            )
        )
    name = str(config.get("NAME", ""))
    init_command = str(options.get("init_command", "")).lower().replace(" ", "")
    if name == ":memory:" or "mode=memory" in name:
        errors.append(
            checks.Error(
                f"{where}, which is in memory: no other process can see it.",
                hint="Give the database a file NAME.",
                id="django_tasks_local.E007",
            )
        )
    elif "journal_mode=wal" not in init_command:
        errors.append(
            checks.Error(
                f"{where}, which is not set to WAL mode: a reader then blocks "
                "the writers.",
                hint=f'Add "init_command": "PRAGMA journal_mode=WAL;"; in all: {recommended}.',
                id="django_tasks_local.E007",
            )
        )
    timeout = options.get("timeout", 5)
    if isinstance(timeout, int | float) and timeout < MIN_SQLITE_TIMEOUT:
        errors.append(
            checks.Error(
                f"{where}, whose busy timeout is {timeout!r}s: a writer gives up "
                "with 'database is locked' while another commits.",
                hint=f'Set "timeout" to {MIN_SQLITE_TIMEOUT} seconds or more; in all: {recommended}.',
                id="django_tasks_local.E008",
            )
        )
    return errors
