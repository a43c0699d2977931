"""A read-only admin for the database store's results."""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.contrib import admin
from django.db import DEFAULT_DB_ALIAS
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from .models import StoredResult


def store_database() -> str:
    """The database of the first backend on the database store (``default`` if none)."""
    tasks = cast(dict[str, dict[str, Any]], settings.TASKS)
    for config in tasks.values():
        options = config.get("OPTIONS", {})
        if options.get("STORE") == "database":
            return str(options.get("DATABASE", DEFAULT_DB_ALIAS))
    return DEFAULT_DB_ALIAS


@admin.register(StoredResult)
class StoredResultAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "id",
        "task_path",
        "status",
        "backend",
        "enqueued_at",
        "finished_at",
    ]
    list_filter = ["status", "task_path", "backend"]
    search_fields = ["id", "task_path"]
    ordering = ["-enqueued_at"]
    date_hierarchy = "enqueued_at"
    fields = readonly_fields = (
        "id",
        "backend",
        "task_path",
        "status",
        "priority",
        "queue_name",
        "run_after",
        "args",
        "kwargs",
        "enqueued_at",
        "started_at",
        "finished_at",
        "worker_ids",
        "return_value",
        "metadata",
        "error_tracebacks",
        "owner",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[StoredResult]:
        return super().get_queryset(request).using(store_database())

    @admin.display(description="errors")
    def error_tracebacks(self, result: StoredResult) -> str:
        return format_html_join(
            "",
            "<p>{}</p><pre>{}</pre>",
            (
                (error["exception_class_path"], error["traceback"])
                for error in result.errors
            ),
        ) or format_html("{}", "-")

    # The runtime writes these rows; the admin only reads them.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
