"""Helpers for the browser tests: the app served by a real uvicorn server on loopback, the scheduler
run off the Playwright thread, and the Chromium executable check."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from onboarding.activation.jobs import JobReport, run_due_jobs
from onboarding.core.settings import Settings
from onboarding.ops.app import create_app
from tests.conftest import free_port

CHROMIUM = Path(os.environ.get("ONBOARDING_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHONE = {"width": 390, "height": 844}


def require_chromium() -> str:
    """The Chromium executable; skip (or fail when ONBOARDING_REQUIRE_BROWSER=1) if it is absent."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return str(CHROMIUM)
    missing_for_browser_tests(
        f"Chromium not found at {CHROMIUM}: install Debian's 'chromium' package to run the browser tests"
    )


def missing_for_browser_tests(reason: str) -> NoReturn:
    """Skip a browser test for want of a tool, or fail when ONBOARDING_REQUIRE_BROWSER=1 (CI)."""
    if os.environ.get("ONBOARDING_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (ONBOARDING_REQUIRE_BROWSER=1 makes this an error)", pytrace=False)
    pytest.skip(reason)


@dataclass
class LiveServer:
    url: str
    settings: Settings


@contextmanager
def live_server(settings: Settings, factory: sessionmaker[Session]) -> Iterator[LiveServer]:
    """Serve the app with uvicorn in a background thread; its public_base_url is its own address."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    live_settings = settings.model_copy(update={"public_base_url": url})
    app = create_app(live_settings, session_factory=factory, run_scheduler=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn stopped before it started")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start within 15 s")
        time.sleep(0.02)
    try:
        yield LiveServer(url, live_settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_jobs_in_thread(factory: sessionmaker[Session], settings: Settings, now: datetime) -> JobReport:
    """``tests.helpers.run_jobs`` in a thread of its own: Playwright's sync API keeps an event loop
    on the test's thread, where ``asyncio.run`` would refuse to start."""
    result: list[JobReport] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(run_due_jobs(factory, settings, now=lambda: now)))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, name="scheduler-pass")
    thread.start()
    thread.join(timeout=60)
    if failure:
        raise failure[0]
    assert result, "the scheduler pass did not finish within 60 s"
    return result[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=PHONE, locale="en-GB", device_scale_factor=2, is_mobile=True)
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()
