"""The example project in headless Chromium, under each DEMO_TASKS_BACKEND.

The same page and the same tasks pass with every backend: swapping backends
takes the one setting and nothing else.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

from demo_project import DemoServer
from playwright.sync_api import Locator, Page, expect

IMMEDIATE = "django.tasks.backends.immediate.ImmediateBackend"
DATABASE = "django_tasks_db.DatabaseBackend"
BACKENDS = {
    "local": {
        "io": "django_tasks_local.ThreadPoolBackend",
        "cpu": "django_tasks_local.ProcessPoolBackend",
    },
    "immediate": {"io": IMMEDIATE, "cpu": IMMEDIATE},
    "db": {"io": DATABASE, "cpu": DATABASE},
}
# Milliseconds for a job to run to its end: generous, the machine is shared.
FINISH_TIMEOUT = 60_000


def start_job(page: Page, kind: str, **fields: str) -> None:
    form = page.locator(f"#start-{kind}")
    for name, value in fields.items():
        form.locator(f'[name="{name}"]').fill(value)
    with page.expect_navigation():
        form.get_by_role("button", name="Start").click()


def wait_for_end(row: Locator, status: str) -> None:
    expect(row.locator(".status")).to_have_text(status, timeout=FINISH_TIMEOUT)


def test_jobs_run_in_the_background_and_show_their_outcome(
    demo: DemoServer, page: Page, tmp_path: Path
) -> None:
    page.goto(demo.url)
    for alias, backend in BACKENDS[demo.backend].items():
        expect(page.locator(f'.backend[data-alias="{alias}"]')).to_have_text(
            f"{alias} → {backend}"
        )

    # Jobs get ids 1, 2, 3 in the order they start (each test has its own database).
    start_job(page, "records", records="3 1 4 1 5 n/a 9")
    start_job(page, "primes", limit="200000")
    start_job(page, "fetch", pages="15")
    failing, primes, fetch = (page.locator(f"#job-{pk}") for pk in (1, 2, 3))

    if demo.backend != "immediate":
        # Seen live, part way: ImmediateBackend has finished before the page shows.
        expect(fetch.locator(".status")).to_have_text("RUNNING", timeout=FINISH_TIMEOUT)
        expect(fetch.locator(".count")).to_have_text(
            re.compile(r"^([1-9]|1[0-4]) / 15$"), timeout=FINISH_TIMEOUT
        )
        page.screenshot(path=tmp_path / f"{demo.backend}-running.png", full_page=True)

    wait_for_end(fetch, "SUCCESSFUL")
    expect(fetch.locator(".count")).to_have_text("15 / 15")
    fetched = json.loads(fetch.locator(".return-value").inner_text())
    assert fetched["pages"] == 15
    expected_trail = (
        "SUCCESSFUL" if demo.backend == "immediate" else "RUNNING → SUCCESSFUL"
    )
    assert fetch.locator(".trail").inner_text().endswith(expected_trail)

    wait_for_end(primes, "SUCCESSFUL")
    expect(primes.locator(".count")).to_have_text("200000 / 200000")
    expect(primes.locator(".return-value")).to_have_text(
        '{"limit":200000,"primes":17984}'
    )

    wait_for_end(failing, "FAILED")
    expect(failing.locator(".count")).to_have_text("5 / 7")
    expect(failing.locator("summary")).to_have_text(
        "ValueError: invalid literal for int() with base 10: 'n/a'"
    )
    traceback = failing.locator(".traceback")
    expect(traceback).to_be_hidden()
    failing.locator("summary").click()
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("total += int(record)")

    if demo.backend == "local":
        # I/O jobs run in a thread of the server, CPU jobs in another process.
        expect(fetch.locator(".worker")).to_have_text(
            re.compile(rf"^worker \S+:{demo.server_pid}:django-tasks-local-io")
        )
        worker = primes.locator(".worker").inner_text()
        worker_pid = int(re.fullmatch(r"worker \S+:(\d+)", worker)[1])  # type: ignore[index]
        assert worker_pid != demo.server_pid
    else:
        for row in (fetch, primes, failing):
            expect(row.locator(".worker")).to_have_text(re.compile(r"^worker \S+$"))
    page.screenshot(path=tmp_path / f"{demo.backend}-finished.png", full_page=True)

    # The Job rows keep the outcome (for ImmediateBackend they are all there
    # is; a pool forgets its results on restart), and the page shows it again.
    assert wait_for_stored_statuses(
        demo, {1: "FAILED", 2: "SUCCESSFUL", 3: "SUCCESSFUL"}
    )
    page.reload()
    wait_for_end(failing, "FAILED")
    wait_for_end(primes, "SUCCESSFUL")
    wait_for_end(fetch, "SUCCESSFUL")
    expect(primes.locator(".return-value")).to_have_text(
        '{"limit":200000,"primes":17984}'
    )


def wait_for_stored_statuses(demo: DemoServer, expected: dict[int, str]) -> bool:
    """Whether the Job rows reach the expected statuses within the deadline."""
    # The task_finished receivers may write a moment after the page saw the end.
    deadline = time.monotonic() + FINISH_TIMEOUT / 1000
    while True:
        with sqlite3.connect(demo.data_dir / "db.sqlite3") as db:
            stored = dict(db.execute("SELECT id, status FROM jobs_job").fetchall())
        if stored == expected or time.monotonic() > deadline:
            return stored == expected
        time.sleep(0.1)


def test_a_bad_parameter_is_reported_and_starts_nothing(
    local_demo: DemoServer, page: Page
) -> None:
    page.goto(local_demo.url)
    form = page.locator("#start-fetch")
    form.locator('[name="pages"]').fill("0")
    # The browser would refuse this itself (the input has min="1"); the
    # server must too, for clients that do not check.
    form.evaluate("form => { form.noValidate = true; }")
    with page.expect_navigation() as navigation:
        form.get_by_role("button", name="Start").click()
    assert navigation.value is not None and navigation.value.status == 400
    expect(page.locator("#start-fetch")).to_contain_text(
        "Ensure this value is greater than or equal to 1."
    )
    expect(page.locator("#jobs tbody")).to_have_text("No jobs yet: start one above.")


def test_an_unknown_backend_setting_is_named(tmp_path: Path) -> None:
    project = DemoServer(backend="nonsense", data_dir=tmp_path)
    result = subprocess.run(
        project.manage("check"),
        env=project.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "DEMO_TASKS_BACKEND must be one of local, immediate, db, not 'nonsense'."
        in result.stderr
    )
