"""The ``OPTIONS`` a backend accepts, their defaults, and the system checks on them.

Each backend class declares its options; ``parse_options`` returns the values
to use and the problems found, as Django system check messages with stable ids:

* ``django_tasks_local.E001``: an option the backend does not know.
* ``django_tasks_local.E002``: an option with an invalid value.
* ``django_tasks_local.E003``: options that cannot be combined.

The database store's own checks (E004 to E008) are in ``store_checks``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string


@dataclass(frozen=True, slots=True)
class Option:
    """One entry of a backend's ``declared_options``; ``help`` is a check error's hint."""

    default: Any
    # Returns an error message for a bad value, or None.
    validate: Callable[[Any], str | None]
    help: str


def positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"must be a whole number of at least 1, not {value!r}"
    return None


def optional_positive_int(value: Any) -> str | None:
    return None if value is None else positive_int(value)


def optional_positive_number(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return f"must be a number of seconds above 0, or None, not {value!r}"
    return None


def finite_positive_number(value: Any) -> str | None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < math.inf
    ):
        return f"must be a finite number of seconds above 0, not {value!r}"
    return None


def optional_finite_positive_number(value: Any) -> str | None:
    return None if value is None else finite_positive_number(value)


def boolean(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return f"must be True or False, not {value!r}"


def optional_boolean(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return f"must be True, False or None, not {value!r}"


def optional_callable(value: Any) -> str | None:
    if value is None or callable(value):
        return None
    return f"must be a callable (or None), not {value!r}"


def callable_or_path(value: Any) -> str | None:
    """A callable, or the dotted path of one (as settings name them)."""
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            return f"must be a callable or its dotted path; {exc}"
    if not callable(value):
        return f"must be a callable or its dotted path, not {value!r}"
    return None


def exception_classes(value: Any, *, imports: bool = True) -> str | None:
    """A list or tuple of exception classes (or, with ``imports``, their dotted paths)."""
    if not isinstance(value, list | tuple) or not value:
        return f"must be a non-empty list of exception classes, not {value!r}"
    for item in value:
        if imports and isinstance(item, str):
            try:
                item = import_string(item)
            except ImportError as exc:
                return f"has {item!r}, which cannot be imported; {exc}"
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            return f"must list exception classes, and {item!r} is not one"
    return None


def resolve(value: Any) -> Any:
    """An option's value with dotted paths imported (BACKOFF, RETRY_ON)."""
    if isinstance(value, str):
        return import_string(value)
    if isinstance(value, list | tuple):
        return tuple(resolve(item) for item in value)
    return value


def string(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a str, not {value!r}"
    return None


def non_negative_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return f"must be a number of seconds, 0 or more, not {value!r}"
    return None


def boolean_or_database(value: Any) -> str | None:
    if isinstance(value, bool) or (
        isinstance(value, str) and value in settings.DATABASES
    ):
        return None
    aliases = ", ".join(repr(alias) for alias in settings.DATABASES)
    return f"must be True, False or a database alias ({aliases}), not {value!r}"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def validate(value: Any) -> str | None:
        if value not in choices:
            listed = ", ".join(repr(choice) for choice in choices)
            return f"must be one of {listed}, not {value!r}"
        return None

    return validate


def parse_options(
    alias: str, declared: Mapping[str, Option], given: Any
) -> tuple[dict[str, Any], list[checks.CheckMessage]]:
    """The values to use (defaults for what is missing or bad) and the errors."""
    values = {name: option.default for name, option in declared.items()}
    errors: list[checks.CheckMessage] = []
    valid_names = ", ".join(sorted(declared))
    if not isinstance(given, Mapping):
        errors.append(
            checks.Error(
                f"TASKS[{alias!r}]['OPTIONS'] must be a dict, not {type(given).__name__}.",
                hint=f"Valid options: {valid_names}.",
                id="django_tasks_local.E002",
            )
        )
        return values, errors
    for name, value in given.items():
        option = declared.get(name)
        if option is None:
            errors.append(
                checks.Error(
                    f"TASKS[{alias!r}]['OPTIONS'] has an unknown option {name!r}.",
                    hint=f"Valid options: {valid_names}.",
                    id="django_tasks_local.E001",
                )
            )
            continue
        problem = option.validate(value)
        if problem is not None:
            errors.append(
                checks.Error(
                    f"TASKS[{alias!r}]['OPTIONS'][{name!r}] {problem}.",
                    hint=option.help,
                    id="django_tasks_local.E002",
                )
            )
            continue
        values[name] = value
    return values, errors


def combination_error(alias: str, message: str, hint: str) -> checks.CheckMessage:
    return checks.Error(
        f"TASKS[{alias!r}]['OPTIONS']: {message}",
        hint=hint,
        id="django_tasks_local.E003",
    )
