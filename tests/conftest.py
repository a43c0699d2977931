"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from django_tasks_local.runtime import all_runtimes

BACKEND_ALIASES = [
    "threads",
    "processes",
    # The database store, on SQLite and on PostgreSQL.
    "threads-sqlite",
    "processes-sqlite",
    pytest.param("threads-postgres", marks=pytest.mark.postgres),
    pytest.param("processes-postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKEND_ALIASES)
def alias(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per backend (thread pool, process pool) and
    per store (memory; database on SQLite; database on PostgreSQL)."""
    return request.param


@pytest.fixture(scope="session")
def django_db_setup(
    django_test_environment: None, django_db_blocker: Any
) -> Iterator[None]:
    """Every test database, migrated, and open to every test and thread.

    The database stores write from their own threads (and worker processes),
    which no test's django_db mark could reach; their databases are their
    own, so that the tests that empty "default" or "postgres" leave them be.
    """
    from django.conf import settings
    from django.test.utils import setup_databases, teardown_databases

    aliases = set(settings.DATABASES)
    if os.environ.get("CI") != "true" and not postgres_available():
        aliases = {
            alias
            for alias in aliases
            if "postgresql" not in settings.DATABASES[alias]["ENGINE"]
        }
    django_db_blocker.unblock()
    config = setup_databases(verbosity=0, interactive=False, aliases=aliases)
    yield
    for runtime in all_runtimes():
        runtime.close(timeout=5)
    # Threads that ran tasks keep their connections; a database with
    # connections cannot be dropped.
    for alias in aliases:
        if "postgresql" in settings.DATABASES[alias]["ENGINE"]:
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as server:
                server.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [settings.DATABASES[alias]["NAME"]],
                )
    teardown_databases(config, verbosity=0)


@pytest.fixture(autouse=True)
def _databases(django_db_setup: None) -> None:
    """Every test may reach the test databases (see django_db_setup)."""


POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def postgres_available() -> bool:
    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Tests marked postgres skip without a server, but never under CI.

    A django_db test on a database store reaches the store's database too.
    """
    from django.conf import settings

    for item in items:
        marker = item.get_closest_marker("django_db")
        callspec = getattr(item, "callspec", None)
        alias = callspec.params.get("alias") if callspec else None
        if marker is None or alias not in settings.TASKS:
            continue
        options = settings.TASKS[alias].get("OPTIONS", {})
        if options.get("STORE") == "database":
            databases = marker.kwargs.get("databases") or ["default"]
            kwargs = {**marker.kwargs, "databases": [*databases, options["DATABASE"]]}
            item.add_marker(pytest.mark.django_db(*marker.args, **kwargs), append=False)
    if os.environ.get("CI") == "true" or postgres_available():
        return
    skip = pytest.mark.skip(reason="no PostgreSQL server on 127.0.0.1:5432")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)
