"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import psycopg
import pytest

from django_tasks_local.runtime import all_runtimes

BACKEND_ALIASES = ["threads", "processes"]


@pytest.fixture(params=BACKEND_ALIASES)
def alias(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per backend: thread pool and process pool."""
    return request.param


def postgres_available() -> bool:
    try:
        psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=2
        ).close()
    except psycopg.OperationalError:
        return False
    return True


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Tests marked postgres skip without a server, but never under CI."""
    if os.environ.get("CI") == "true" or postgres_available():
        return
    skip = pytest.mark.skip(reason="no PostgreSQL server on 127.0.0.1:5432")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _close_runtimes_at_end():
    yield
    for runtime in all_runtimes():
        runtime.close(timeout=5)
