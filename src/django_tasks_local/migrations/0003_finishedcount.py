# The count of finished rows per backend alias, and the triggers that keep it.
#
# A migration that remakes the storedresult table on SQLite (as the schema
# editor does to alter most columns there) drops its triggers with it: such a
# migration must create them again (create_triggers below).

from typing import Any

from django.db import migrations, models

RESULTS = '"django_tasks_local_storedresult"'
COUNTS = '"django_tasks_local_finishedcount"'

# One more finished row of an alias (its count row made at its first).
SQLITE_ADD = f"""
    INSERT INTO {COUNTS} (backend, finished) SELECT NEW.backend, 1
        WHERE NEW.finished_at IS NOT NULL
        ON CONFLICT (backend) DO UPDATE SET finished = finished + 1;
"""
SQLITE_REMOVE = f"""
    UPDATE {COUNTS} SET finished = finished - 1
        WHERE backend = OLD.backend AND OLD.finished_at IS NOT NULL;
"""
SQLITE = [
    f"""CREATE TRIGGER dtl_count_insert AFTER INSERT ON {RESULTS}
        WHEN NEW.finished_at IS NOT NULL
        BEGIN {SQLITE_ADD} END""",
    f"""CREATE TRIGGER dtl_count_delete AFTER DELETE ON {RESULTS}
        WHEN OLD.finished_at IS NOT NULL
        BEGIN {SQLITE_REMOVE} END""",
    f"""CREATE TRIGGER dtl_count_update AFTER UPDATE OF finished_at, backend
        ON {RESULTS}
        WHEN (OLD.finished_at IS NULL) <> (NEW.finished_at IS NULL)
            OR OLD.backend <> NEW.backend
        BEGIN {SQLITE_REMOVE} {SQLITE_ADD} END""",
]
POSTGRESQL = [
    f"""CREATE FUNCTION dtl_count_finished() RETURNS trigger AS $$
    BEGIN
        IF TG_OP <> 'INSERT' AND OLD.finished_at IS NOT NULL THEN
            UPDATE {COUNTS} SET finished = finished - 1 WHERE backend = OLD.backend;
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.finished_at IS NOT NULL THEN
            INSERT INTO {COUNTS} (backend, finished) VALUES (NEW.backend, 1)
                ON CONFLICT (backend)
                DO UPDATE SET finished = {COUNTS}.finished + 1;
        END IF;
        RETURN NULL;
    END
    $$ LANGUAGE plpgsql""",
    f"""CREATE TRIGGER dtl_count_insert AFTER INSERT ON {RESULTS} FOR EACH ROW
        WHEN (NEW.finished_at IS NOT NULL) EXECUTE FUNCTION dtl_count_finished()""",
    f"""CREATE TRIGGER dtl_count_delete AFTER DELETE ON {RESULTS} FOR EACH ROW
        WHEN (OLD.finished_at IS NOT NULL) EXECUTE FUNCTION dtl_count_finished()""",
    f"""CREATE TRIGGER dtl_count_update AFTER UPDATE OF finished_at, backend
        ON {RESULTS} FOR EACH ROW
        WHEN ((OLD.finished_at IS NULL) <> (NEW.finished_at IS NULL)
            OR OLD.backend <> NEW.backend)
        EXECUTE FUNCTION dtl_count_finished()""",
]
# The rows finished before this migration.
COUNT_EXISTING = f"""
    INSERT INTO {COUNTS} (backend, finished)
    SELECT backend, COUNT(*) FROM {RESULTS} WHERE finished_at IS NOT NULL
    GROUP BY backend
"""


def create_triggers(apps: Any, schema_editor: Any) -> None:
    # Another database has none: the database store's check (E009) refuses it.
    statements = {"sqlite": SQLITE, "postgresql": POSTGRESQL}.get(
        schema_editor.connection.vendor, []
    )
    for statement in statements:
        schema_editor.execute(statement, params=None)
    if statements:
        schema_editor.execute(COUNT_EXISTING, params=None)


def drop_triggers(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in ("sqlite", "postgresql"):
        return
    on = "" if vendor == "sqlite" else f" ON {RESULTS}"
    for name in ("dtl_count_insert", "dtl_count_delete", "dtl_count_update"):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}{on}", params=None)
    if vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS dtl_count_finished()", params=None
        )


class Migration(migrations.Migration):
    dependencies = [
        ("django_tasks_local", "0002_storedresult_metadata"),
    ]

    operations = [
        migrations.CreateModel(
            name="FinishedCount",
            fields=[
                (
                    "backend",
                    models.CharField(max_length=100, primary_key=True, serialize=False),
                ),
                ("finished", models.IntegerField(default=0)),
            ],
            options={
                "verbose_name": "finished result count",
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
