"""OPTIONS: what each backend accepts, and the system check errors for the rest."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.tasks import task_backends
from django.test import override_settings

from tests import tasks

THREADS = "django_tasks_local.ThreadPoolBackend"
PROCESSES = "django_tasks_local.ProcessPoolBackend"


def backend_with(options, backend=THREADS):
    """The backend of a new alias "configured" with these OPTIONS."""
    params = {"BACKEND": backend, "OPTIONS": options}
    with override_settings(TASKS={**settings.TASKS, "configured": params}):
        return task_backends["configured"]


def error_ids(backend):
    return [message.id for message in backend.check()]


def test_valid_options_are_used():
    backend = backend_with({"MAX_WORKERS": 3, "MAX_RESULTS": 7})

    assert backend.check() == []
    assert (backend.settings["MAX_WORKERS"], backend.settings["MAX_RESULTS"]) == (3, 7)


def test_defaults():
    threads = backend_with({})
    processes = backend_with({}, PROCESSES)

    assert threads.check() == [] and processes.check() == []
    assert threads.settings["MAX_WORKERS"] == min(32, (os.cpu_count() or 1) + 4)
    assert processes.settings["MAX_WORKERS"] == os.cpu_count()
    assert threads.settings["MAX_RESULTS"] == processes.settings["MAX_RESULTS"] == 1000
    assert processes.settings["MP_CONTEXT"] == "spawn"
    assert threads.settings["MAX_WAITING"] is processes.settings["MAX_WAITING"] is None
    assert processes.settings["WORKER_START_TIMEOUT"] == 60.0


@pytest.mark.parametrize("backend_path", [THREADS, PROCESSES])
def test_an_unknown_option_is_e001_naming_it_and_the_valid_ones(backend_path):
    backend = backend_with({"MAX_WORKER": 4}, backend_path)

    [error] = backend.check()
    assert error.id == "django_tasks_local.E001"
    assert "'MAX_WORKER'" in error.msg
    assert "MAX_WORKERS" in error.hint and "MAX_RESULTS" in error.hint
    if backend_path == PROCESSES:
        assert "MP_CONTEXT" in error.hint and "TIMEOUT" in error.hint


@pytest.mark.parametrize("option", ["MAX_WORKERS", "MAX_RESULTS"])
@pytest.mark.parametrize("value", [0, -1, 2.5, "4", True, None])
def test_an_invalid_count_is_e002_naming_the_option(option, value):
    backend = backend_with({option: value})

    [error] = backend.check()
    assert error.id == "django_tasks_local.E002"
    assert f"['{option}']" in error.msg
    assert "whole number of at least 1" in error.msg
    assert repr(value) in error.msg


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("ENQUEUE_ON_COMMIT", "yes"),
        ("MP_CONTEXT", "threads"),
        ("TIMEOUT", 0),
        ("TIMEOUT", -5),
        ("TIMEOUT", True),
        ("TIMEOUT", "10"),
        ("MAX_TASKS_PER_CHILD", 0),
        ("MAX_WAITING", 0),
        ("MAX_WAITING", -1),
        ("MAX_WAITING", 2.5),
        ("MAX_WAITING", "10"),
        ("MAX_WAITING", True),
        ("WORKER_START_TIMEOUT", 0),
        ("WORKER_START_TIMEOUT", -1.5),
        ("WORKER_START_TIMEOUT", "60"),
        ("WORKER_START_TIMEOUT", False),
        ("WORKER_START_TIMEOUT", float("nan")),
    ],
)
def test_other_invalid_values_are_e002(option, value):
    backend = backend_with({option: value}, PROCESSES)

    [error] = backend.check()
    assert error.id == "django_tasks_local.E002"
    assert f"['{option}']" in error.msg and repr(value) in error.msg


@pytest.mark.parametrize("value", [None, 0.5, 300, float("inf")])
def test_worker_start_timeout_takes_seconds_or_none(value):
    backend = backend_with({"WORKER_START_TIMEOUT": value}, PROCESSES)

    assert backend.check() == []
    assert backend.settings["WORKER_START_TIMEOUT"] == value


def test_options_that_are_not_a_dict_are_e002():
    backend = backend_with(["MAX_WORKERS", 4])

    assert error_ids(backend) == ["django_tasks_local.E002"]


def test_max_tasks_per_child_with_fork_is_e003():
    backend = backend_with({"MP_CONTEXT": "fork", "MAX_TASKS_PER_CHILD": 10}, PROCESSES)

    [error] = backend.check()
    assert error.id == "django_tasks_local.E003"
    assert "MAX_TASKS_PER_CHILD" in error.msg and "'fork'" in error.msg
    assert (
        error_ids(
            backend_with({"MP_CONTEXT": "spawn", "MAX_TASKS_PER_CHILD": 10}, PROCESSES)
        )
        == []
    )


@pytest.mark.parametrize("options", [{"MAX_WORKER": 4}, {"MAX_WORKERS": 0}])
def test_a_misconfigured_backend_refuses_to_enqueue_with_the_same_message(options):
    params = {"BACKEND": THREADS, "OPTIONS": options}
    with override_settings(TASKS={**settings.TASKS, "configured": params}):
        [error] = task_backends["configured"].check()

        with pytest.raises(ImproperlyConfigured) as raised:
            tasks.noop.using(backend="configured").enqueue()

    assert error.msg in str(raised.value)
    assert error.id in str(raised.value)


def test_the_checks_run_at_start_up():
    broken = {
        "typo": {"BACKEND": THREADS, "OPTIONS": {"MAX_WORKER": 4}},
        "zero": {"BACKEND": THREADS, "OPTIONS": {"MAX_RESULTS": 0}},
        "fork": {
            "BACKEND": PROCESSES,
            "OPTIONS": {"MP_CONTEXT": "fork", "MAX_TASKS_PER_CHILD": 1},
        },
    }
    with override_settings(TASKS={**settings.TASKS, **broken}):
        found = sorted(message.id for message in checks.run_checks())
        with pytest.raises(SystemCheckError) as raised:
            call_command("check")

    assert found == [
        "django_tasks_local.E001",
        "django_tasks_local.E002",
        "django_tasks_local.E003",
    ]
    assert "'MAX_WORKER'" in str(raised.value)


def test_the_test_settings_pass_the_checks():
    assert checks.run_checks() == []


def backend_with_params(params):
    with override_settings(TASKS={**settings.TASKS, "configured": params}):
        return task_backends["configured"]


def test_the_attempt_options_and_their_defaults():
    from django_tasks_local import default_backoff

    backend = backend_with({})
    policy = backend._runtime_config().attempts
    assert (policy.max_attempts, policy.retry_on, policy.retry_crashed) == (
        1,
        (Exception,),
        False,
    )
    assert policy.backoff is default_backoff and policy.timeout is None

    backend = backend_with(
        {
            "MAX_ATTEMPTS": 4,
            "BACKOFF": "tests.tasks.no_wait",
            "RETRY_ON": ["builtins.KeyError", OSError],
            "RETRY_CRASHED": True,
            "TIMEOUT": 2.5,
        },
        PROCESSES,
    )
    assert backend.check() == []
    policy = backend._runtime_config().attempts
    assert policy.backoff is tasks.no_wait  # the dotted path, imported
    assert policy.retry_on == (KeyError, OSError)
    assert (policy.max_attempts, policy.retry_crashed, policy.timeout) == (4, True, 2.5)


def test_max_attempts_and_backoff_beside_backend_as_django_proposes():
    backend = backend_with_params(
        {"BACKEND": THREADS, "MAX_ATTEMPTS": 3, "BACKOFF": tasks.no_wait}
    )
    assert backend.check() == []
    policy = backend._runtime_config().attempts
    assert (policy.max_attempts, policy.backoff) == (3, tasks.no_wait)


def test_max_attempts_in_both_places_is_e003():
    backend = backend_with_params(
        {"BACKEND": THREADS, "MAX_ATTEMPTS": 3, "OPTIONS": {"MAX_ATTEMPTS": 2}}
    )
    [error] = backend.check()
    assert error.id == "django_tasks_local.E003"
    assert "MAX_ATTEMPTS is set both in OPTIONS and beside BACKEND" in error.msg


def test_a_bad_value_beside_backend_is_named_there():
    backend = backend_with_params({"BACKEND": THREADS, "MAX_ATTEMPTS": 0})
    [error] = backend.check()
    assert "TASKS['configured']['MAX_ATTEMPTS'] (beside BACKEND) must be" in error.msg


def test_backoff_none_is_refused():
    [error] = backend_with({"BACKOFF": None}).check()
    assert error.id == "django_tasks_local.E002"
    assert "['BACKOFF'] must be a callable or its dotted path, not None" in error.msg
