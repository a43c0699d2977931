"""The Django app that holds the durable store's tables and admin.

Only the database store (``OPTIONS["STORE"] = "database"``) needs it in
``INSTALLED_APPS``; the memory store needs nothing installed.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import request_started


class DjangoTasksLocalConfig(AppConfig):
    name = "django_tasks_local"
    verbose_name = "Django tasks (local)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The first request a web process serves starts its database-store
        # backends, so that the tasks a stopped or lost process left behind
        # run again with nothing else to start. Management commands serve no
        # request, and so never take tasks over.
        request_started.connect(_start_durable_backends, dispatch_uid=__name__)


def _start_durable_backends(**kwargs: Any) -> None:
    request_started.disconnect(dispatch_uid=__name__)
    from .backends.base import start_durable_backends

    start_durable_backends()
