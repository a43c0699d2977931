"""The example project in headless Chromium, under each DEMO_TASKS_BACKEND.

The same page and the same tasks pass with every backend: swapping backends
takes the one setting and nothing else. The durable setting is served by
gunicorn's worker processes, any of which answers each poll, and survives a
restart of the server. Progress bars show what the tasks save in their
results' metadata, which only django-tasks-local's backends keep.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

from demo_project import GUNICORN_WORKERS, DemoServer, parent_pid
from playwright.sync_api import Locator, Page, Response, expect

IMMEDIATE = "django.tasks.backends.immediate.ImmediateBackend"
DATABASE = "django_tasks_db.DatabaseBackend"
BACKENDS = {
    "local": {
        "io": "django_tasks_local.ThreadPoolBackend",
        "cpu": "django_tasks_local.ProcessPoolBackend",
    },
    "immediate": {"io": IMMEDIATE, "cpu": IMMEDIATE},
    "db": {"io": DATABASE, "cpu": DATABASE},
    "durable": {
        "io": "django_tasks_local.ThreadPoolBackend (STORE: database)",
        "cpu": "django_tasks_local.ProcessPoolBackend (STORE: database)",
    },
}
# Milliseconds for a job to run to its end: generous, the machine is shared.
FINISH_TIMEOUT = 60_000
# Seconds a job waits (run_after) in the restart test: the server must stop
# before then, which it does in a few seconds.
DELAY = 12


def start_job(page: Page, kind: str, **fields: str) -> None:
    form = page.locator(f"#start-{kind}")
    for name, value in fields.items():
        form.locator(f'[name="{name}"]').fill(value)
    with page.expect_navigation():
        form.get_by_role("button", name="Start").click()


def wait_for_end(row: Locator, status: str) -> None:
    expect(row.locator(".status")).to_have_text(status, timeout=FINISH_TIMEOUT)


def answering_processes(page: Page) -> set[int]:
    """The pids of the server processes that answer the page's status polls,
    added to the set as the answers come."""
    pids: set[int] = set()

    def record(response: Response) -> None:
        served_by = response.headers.get("x-served-by")
        if response.url.endswith("/status") and served_by:
            pids.add(int(served_by))

    page.on("response", record)
    return pids


def progress_sources(page: Page) -> set[int]:
    """The pids of the server processes whose answers gave a running job's
    progress, added to the set as the answers come."""
    pids: set[int] = set()

    def record(response: Response) -> None:
        if response.url.endswith("/status") and response.ok:
            job = response.json()
            if job["status"] == "RUNNING" and job.get("progress"):
                pids.add(int(response.headers["x-served-by"]))

    page.on("response", record)
    return pids


def shows_progress(demo: DemoServer) -> bool:
    """Whether the page shows the jobs' progress under this setting: where
    results have metadata (django-tasks-local's backends; with several
    processes, the database store keeps it for every one)."""
    return demo.backend in {"local", "durable"}


def expect_progress_moves(row: Locator, total: int) -> None:
    """The row's bar shows its running job part way, then further on."""
    page, handle = row.page, row.element_handle()
    part_way = page.wait_for_function(
        """([row, total]) => {
            const bar = row.querySelector("progress");
            const running = row.querySelector(".status").textContent === "RUNNING";
            return running && bar.value > 0 && bar.value < total && bar.value;
        }""",
        arg=[handle, total],
        polling=50,
        timeout=FINISH_TIMEOUT,
    ).json_value()
    expect(row.locator(".count")).to_have_text(re.compile(rf"^\d+ / {total}$"))
    page.wait_for_function(
        "([row, before]) => row.querySelector('progress').value > before",
        arg=[handle, part_way],
        polling=50,
        timeout=FINISH_TIMEOUT,
    )


def expect_final_progress(demo: DemoServer, counts: list[tuple[Locator, str]]) -> None:
    """Each finished row shows its job's last progress, where results have
    metadata; elsewhere no numbers, and no bar."""
    for row, count in counts:
        if shows_progress(demo):
            expect(row.locator(".count")).to_have_text(count)
            expect(row.locator("progress")).to_be_visible()
        else:
            expect(row.locator("progress")).to_be_hidden()
            expect(row.locator(".count")).to_be_empty()


def worker_pid(row: Locator) -> int:
    """The pid in the worker id a row shows: "worker host:pid[:thread]"."""
    worker = row.locator(".worker").inner_text()
    match = re.match(r"worker [^:\s]+:(\d+)", worker)
    assert match, worker
    return int(match[1])


def test_jobs_run_in_the_background_and_show_their_outcome(
    demo: DemoServer, page: Page, tmp_path: Path
) -> None:
    answering = answering_processes(page)
    with_progress = progress_sources(page)
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
        if shows_progress(demo):
            expect_progress_moves(fetch, total=15)
        elif demo.backend == "db":
            # django-tasks-db's results have no metadata: the bar only says
            # that the job runs.
            expect(fetch.locator("progress")).to_have_js_property("position", -1)
            expect(fetch.locator(".count")).to_be_empty()
        page.screenshot(path=tmp_path / f"{demo.backend}-running.png", full_page=True)

    wait_for_end(fetch, "SUCCESSFUL")
    fetched = json.loads(fetch.locator(".return-value").inner_text())
    assert fetched["pages"] == 15
    expected_trail = (
        "SUCCESSFUL" if demo.backend == "immediate" else "RUNNING → SUCCESSFUL"
    )
    assert fetch.locator(".trail").inner_text().endswith(expected_trail)

    wait_for_end(primes, "SUCCESSFUL")
    expect(primes.locator(".return-value")).to_have_text(
        '{"limit":200000,"primes":17984}'
    )

    wait_for_end(failing, "FAILED")
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
        assert worker_pid(primes) != demo.server_pid
    elif demo.backend == "durable":
        # I/O jobs run in a thread of one of gunicorn's workers, CPU jobs in
        # a process of a worker's pool.
        assert parent_pid(worker_pid(fetch)) == demo.server_pid
        assert worker_pid(primes) not in {demo.server_pid, *answering}
    else:
        for row in (fetch, primes, failing):
            expect(row.locator(".worker")).to_have_text(re.compile(r"^worker \S+$"))
    page.screenshot(path=tmp_path / f"{demo.backend}-finished.png", full_page=True)

    if demo.multiprocess:
        # Whichever worker answered a poll had the job's state: the database
        # store shares it. (Concurrent polls go to different workers.)
        assert len(answering) > 1, answering
        assert all(parent_pid(pid) == demo.server_pid for pid in answering)
        assert len(answering) <= GUNICORN_WORKERS
        assert wait_for_stored_statuses(
            demo, {1: "FAILED", 2: "SUCCESSFUL", 3: "SUCCESSFUL"}
        )
        if shows_progress(demo):
            # Not only the worker that ran a job gave its progress.
            assert len(with_progress) > 1, with_progress
    else:
        assert answering == {demo.server_pid}

    # The page shows the outcome again, from the backend (from the Job row
    # for ImmediateBackend, which cannot give a result back later).
    page.reload()
    wait_for_end(failing, "FAILED")
    wait_for_end(primes, "SUCCESSFUL")
    wait_for_end(fetch, "SUCCESSFUL")
    expect(primes.locator(".return-value")).to_have_text(
        '{"limit":200000,"primes":17984}'
    )
    # The failed job keeps what it saved before its bad record.
    expect_final_progress(
        demo, [(fetch, "15 / 15"), (primes, "200000 / 200000"), (failing, "5 / 7")]
    )


def stored_results(demo: DemoServer) -> dict[int, tuple[str, str]]:
    """The database store's status and owner of each Job's result, by Job id."""
    with closing(sqlite3.connect(demo.data_dir / "db.sqlite3")) as db:
        rows = db.execute(
            "SELECT job.id, result.status, result.owner FROM jobs_job job"
            " JOIN django_tasks_local_storedresult result"
            " ON result.id = job.result_id"
        )
        return {pk: (status, owner) for pk, status, owner in rows}


def stored_leases(demo: DemoServer) -> int:
    with closing(sqlite3.connect(demo.data_dir / "db.sqlite3")) as db:
        return db.execute("SELECT count(*) FROM django_tasks_local_lease").fetchone()[0]


def wait_for_stored_statuses(demo: DemoServer, expected: dict[int, str]) -> bool:
    """Whether the database store's rows reach the expected statuses in time."""
    # The owner writes a task's end a moment after it shows the end itself.
    deadline = time.monotonic() + FINISH_TIMEOUT / 1000
    while True:
        stored = {pk: status for pk, (status, _) in stored_results(demo).items()}
        if stored == expected or time.monotonic() > deadline:
            return stored == expected
        time.sleep(0.1)


def test_a_waiting_job_runs_after_the_server_restarts(
    durable_demo: DemoServer, page: Page
) -> None:
    answering = answering_processes(page)
    page.goto(durable_demo.url)
    started = time.monotonic()
    start_job(page, "fetch", pages="5", delay=str(DELAY))
    waiting = page.locator("#job-1")
    expect(waiting.locator(".status")).to_have_text("READY")
    expect(waiting.locator(".count")).to_have_text(re.compile(r"^starts at "))
    first_master = durable_demo.server_pid

    durable_demo.stop_server()
    stopped_after = time.monotonic() - started
    # A clean shutdown: the job, never started, is left READY for any
    # process to take (owner ""), and no process holds a lease any more.
    assert stored_results(durable_demo) == {1: ("READY", "")}, (
        f"the server took {stopped_after:.1f}s to stop; the job was due after {DELAY}s"
    )
    assert stored_leases(durable_demo) == 0
    old_workers = set(answering)

    # The page goes on polling through the restart; the new server's first
    # request starts its store, which takes the job over.
    durable_demo.start_server()
    durable_demo.wait_until_serving()
    wait_for_end(waiting, "SUCCESSFUL")
    assert json.loads(waiting.locator(".return-value").inner_text())["pages"] == 5
    trail = waiting.locator(".trail").inner_text()
    assert trail.startswith("READY") and trail.endswith("SUCCESSFUL"), trail
    # It ran in a worker of the new server.
    assert durable_demo.server_pid != first_master
    assert parent_pid(worker_pid(waiting)) == durable_demo.server_pid
    assert answering - old_workers, "no worker of the new server answered"
    expect_final_progress(durable_demo, [(waiting, "5 / 5")])


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
        "DEMO_TASKS_BACKEND must be one of local, immediate, db, durable, "
        "not 'nonsense'." in result.stderr
    )


def test_a_memory_store_forgets_its_results_when_the_server_restarts(
    local_demo: DemoServer, page: Page
) -> None:
    page.goto(local_demo.url)
    start_job(page, "fetch", pages="1")
    job = page.locator("#job-1")
    wait_for_end(job, "SUCCESSFUL")

    local_demo.stop_server()
    local_demo.start_server()
    local_demo.wait_until_serving()
    page.reload()
    # What DEMO_TASKS_BACKEND=durable is for: the page can only say so.
    wait_for_end(job, "FORGOTTEN")
    expect(job.locator(".outcome")).to_contain_text("no longer has this result")
    # Its progress, kept in its metadata, went with it.
    expect(job.locator("progress")).to_be_hidden()
