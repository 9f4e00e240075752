"""The dashboard in a real headless browser (Debian's chromium through chromedriver, driven by Selenium):
log in with the token, the instance list, an instance's page and timeline, terminating with the confirmation.

``make browser`` installs chromium and chromedriver; without them these tests skip, or fail when
``DURABLETASK_REQUIRE_BROWSER=1`` (CI sets it, so a missing browser cannot pass silently). With
``DURABLETASK_DASHBOARD_SCREENSHOT=<file.png>`` the instance page is saved there (docs/dashboard.png).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from durabletask.client import OrchestrationStatus
from tests.e2e.conftest import official_backend_mode
from tests.e2e.dashboard_support import TIMEOUT, TOKEN, DashboardEnv, dashboard_env, greeting, waiter

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver")
BROWSER_MISSING = not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK))
if BROWSER_MISSING and os.environ.get("DURABLETASK_REQUIRE_BROWSER") == "1" and not official_backend_mode():
    pytest.fail("chromium and chromedriver are not installed (make browser), and DURABLETASK_REQUIRE_BROWSER=1",
                pytrace=False)
pytestmark = [
    pytest.mark.skipif(official_backend_mode(), reason="the dashboard is this repository's sidecar's"),
    pytest.mark.skipif(BROWSER_MISSING, reason="chromium and chromedriver are not installed (make browser)"),
]

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as seen  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT = 15.0


@pytest.fixture(scope="module")
def env() -> Iterator[DashboardEnv]:
    with dashboard_env() as built:
        yield built


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: Any, condition: Any) -> Any:
    return WebDriverWait(driver, WAIT).until(condition)


def click(driver: Any, css: str) -> None:
    """Click the element, again if the page's live refresh replaced it meanwhile."""

    def clicked(d: Any) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
        except StaleElementReferenceException:
            return False
        return True

    until(driver, clicked)


def visible_text(driver: Any, css: str) -> str | None:
    """The element's text if it is there and visible, else None."""
    try:
        found = driver.find_element(By.CSS_SELECTOR, css)
        return str(found.text) if found.is_displayed() else None
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def text_of(driver: Any, css: str) -> str:
    """The text of the visible element (read again if a live refresh replaced it)."""
    return str(until(driver, lambda d: visible_text(d, css)))


def test_login_list_instance_timeline_and_terminate(env: DashboardEnv, browser: Any) -> None:
    done = env.client.schedule_new_orchestration(greeting, input="browser", instance_id="browser-done")
    running = env.client.schedule_new_orchestration(waiter, instance_id="browser-waiting")
    env.client.wait_for_orchestration_completion(done, timeout=TIMEOUT)
    env.client.wait_for_orchestration_start(running, timeout=TIMEOUT)

    # Without the token: the login form; a wrong token is refused, the right one lets us in.
    browser.get(env.url + "/")
    until(browser, seen.visibility_of_element_located((By.ID, "login-token"))).send_keys("wrong-token")
    browser.find_element(By.ID, "login-submit").click()
    assert "Wrong token" in text_of(browser, "#login-error")
    until(browser, seen.visibility_of_element_located((By.ID, "login-token"))).send_keys(TOKEN)
    browser.find_element(By.ID, "login-submit").click()

    # The list shows both instances, with their status; the backlog bar is filled in.
    row = f'tr[data-instance-id="{done}"]'
    assert "COMPLETED" in text_of(browser, row)
    assert "RUNNING" in text_of(browser, f'tr[data-instance-id="{running}"]')
    assert "streams 1" in text_of(browser, "#open-streams")

    # The instance page: output, custom status and the timeline with each kind of span.
    click(browser, f"{row} a.instance-link")
    assert text_of(browser, "#instance-id") == done
    assert "hello browser" in text_of(browser, "#instance-output")
    assert "done" in text_of(browser, "#instance-custom-status")
    timeline = text_of(browser, "#timeline")
    for expected in ("orchestration", "greeting", "activity", "greet", "timer", "sub-orchestration", "child"):
        assert expected in timeline
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline .timeline-row .bar")) >= 4
    screenshot = os.environ.get("DURABLETASK_DASHBOARD_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(screenshot)

    # Terminate the waiting instance: cancelling the confirmation changes nothing; confirming terminates it.
    browser.get(f"{env.url}/#/instance/{running}")
    # The hash changed on the page already open: the other instance's page shows until this one's replaces it.
    until(browser, lambda d: visible_text(d, "#instance-id") == running)
    assert "RUNNING" in text_of(browser, "#instance-status")
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="terminate"]').click()
    until(browser, seen.visibility_of_element_located((By.ID, "confirm-dialog")))
    browser.find_element(By.ID, "confirm-cancel").click()
    until(browser, seen.invisibility_of_element_located((By.ID, "confirm-dialog")))
    state = env.client.get_orchestration_state(running)
    assert state is not None and state.runtime_status == OrchestrationStatus.RUNNING

    browser.find_element(By.CSS_SELECTOR, 'button[data-action="terminate"]').click()
    until(browser, seen.visibility_of_element_located((By.ID, "confirm-reason"))).send_keys("from the browser")
    browser.find_element(By.ID, "confirm-ok").click()
    until(browser, seen.text_to_be_present_in_element((By.CSS_SELECTOR, "#instance-status"), "TERMINATED"))
    state = env.client.wait_for_orchestration_completion(running, timeout=TIMEOUT)
    assert state is not None and state.runtime_status == OrchestrationStatus.TERMINATED
    assert state.serialized_output == '"from the browser"'

    # The other pages render: the connected worker with its filters, entities, schedules.
    browser.get(f"{env.url}/#/workers")
    assert "greeting" in text_of(browser, "#workers-table tbody tr")
    browser.get(f"{env.url}/#/entities")
    text_of(browser, "#entities-table")
    browser.get(f"{env.url}/#/schedules")
    text_of(browser, "#schedules-table")
    assert not browser.find_elements(By.ID, "page-error")
