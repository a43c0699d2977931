"""The system checks of a database store: each problem by its id, and none for good settings."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.tasks import task_backends
from django.test import override_settings

from tests.helpers import temporary_alias
from tests.tasks import square


def store_errors(database: str = "default", **overrides) -> list[checks.CheckMessage]:
    with (
        temporary_alias("threads", STORE="database", DATABASE=database) as alias,
        override_settings(**overrides),
    ):
        return task_backends[alias].check()


# The checks only read DATABASES: no connection sees the override.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


def sqlite(**options) -> dict:
    return {**settings.DATABASES["store_sqlite"], "OPTIONS": options}


def test_good_sqlite_settings_pass():
    assert store_errors("store_sqlite") == []


@pytest.mark.postgres
def test_postgresql_needs_no_settings():
    assert store_errors("store_postgres") == []


def test_the_app_must_be_installed():
    apps = [app for app in settings.INSTALLED_APPS if app != "django_tasks_local"]
    [error] = store_errors("store_sqlite", INSTALLED_APPS=apps)
    assert error.id == "django_tasks_local.E004"
    assert "'django_tasks_local' is not in INSTALLED_APPS" in error.msg


def test_the_database_alias_must_exist():
    [error] = store_errors("nowhere")
    assert error.id == "django_tasks_local.E005"
    assert "'nowhere', which is not in DATABASES" in error.msg
    assert "'store_sqlite'" in error.hint


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
            ["django_tasks_local.E006"],
        ),
        ({"transaction_mode": "IMMEDIATE", "timeout": 20}, ["django_tasks_local.E007"]),
        (
            {
                "transaction_mode": "IMMEDIATE",
                "init_command": "pragma journal_mode = wal",
            },
            [],
        ),
        (
            {
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
                "timeout": 1,
            },
            ["django_tasks_local.E008"],
        ),
        (
            {},
            [
                "django_tasks_local.E006",
                "django_tasks_local.E007",
            ],
        ),
    ],
)
def test_sqlite_settings_that_cannot_hold_concurrent_writers(options, expected):
    databases = {**settings.DATABASES, "checked": sqlite(**options)}
    errors = store_errors("checked", DATABASES=databases)
    assert [error.id for error in errors] == expected
    for error in errors:
        assert "SQLite database 'checked'" in error.msg
        assert "transaction_mode" in error.hint or "NAME" in error.hint


def test_an_in_memory_sqlite_database_is_refused():
    config = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "OPTIONS": {"transaction_mode": "IMMEDIATE"},
    }
    databases = {**settings.DATABASES, "checked": config}
    [error] = store_errors("checked", DATABASES=databases)
    assert error.id == "django_tasks_local.E007"
    assert "in memory: no other process can see it" in error.msg


def test_the_memory_store_is_not_checked_for_a_database():
    apps = [app for app in settings.INSTALLED_APPS if app != "django_tasks_local"]
    with override_settings(INSTALLED_APPS=apps):
        assert task_backends["threads"].check() == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("STORE", "redis", "must be one of 'memory', 'database', not 'redis'"),
        ("DATABASE", 3, "must be a str, not 3"),
        ("RECOVERY_TIMEOUT", 0, "must be a finite number of seconds above 0, not 0"),
        (
            "RECOVERY_TIMEOUT",
            float("inf"),
            "must be a finite number of seconds above 0, not inf",
        ),
    ],
)
def test_bad_store_options(option, value, message):
    with temporary_alias("threads", **{option: value}) as alias:
        [error] = task_backends[alias].check()
    assert error.id == "django_tasks_local.E002"
    assert message in error.msg


def test_a_store_that_cannot_start_says_why_at_enqueue():
    expected = r"'nowhere', which is not in DATABASES.*\(django_tasks_local.E005\)"
    with (
        temporary_alias("threads", STORE="database", DATABASE="nowhere") as alias,
        pytest.raises(ImproperlyConfigured, match=expected),
    ):
        square.using(backend=alias).enqueue(2)


def test_a_database_other_than_sqlite_or_postgresql_is_refused():
    databases = {
        **settings.DATABASES,
        "checked": {"ENGINE": "django.db.backends.dummy"},
    }
    [error] = store_errors("checked", DATABASES=databases)
    assert error.id == "django_tasks_local.E009"
    assert "'checked', whose ENGINE is 'django.db.backends.dummy'" in error.msg
    assert "runs on SQLite and PostgreSQL" in error.msg
