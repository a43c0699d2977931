"""Fixtures: the example project under each backend setting, and headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_project import DemoServer
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
]


def serve(backend: str, data_dir: Path) -> Iterator[DemoServer]:
    server = DemoServer(backend=backend, data_dir=data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "immediate", "db", "durable"])
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DemoServer]:
    """The project served under each DEMO_TASKS_BACKEND in turn."""
    yield from serve(request.param, tmp_path)


@pytest.fixture
def durable_demo(tmp_path: Path) -> Iterator[DemoServer]:
    """The project on the database store, served by gunicorn's worker processes."""
    yield from serve("durable", tmp_path)


@pytest.fixture
def local_demo(tmp_path: Path) -> Iterator[DemoServer]:
    """The project served with its default backends, the thread and process pools."""
    yield from serve("local", tmp_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A failed test's report shows the logs of the project it ran."""
    report = yield
    for server in getattr(item, "funcargs", {}).values():
        if report.failed and isinstance(server, DemoServer):
            report.sections.append(("example project logs", server.logs()))
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium (as root).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()
