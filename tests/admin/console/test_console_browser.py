"""The console driven like a streamer would: a real headless Chromium against the real app, real Redis,
real signed Twitch webhooks.

The tests of this module share one browser and one server, in file order (a login made early
stands for the later tests, as it would for a person); each still checks its own effects.
"""

from __future__ import annotations

import time
from pathlib import Path

import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from admin.console.context import COOKIE
from admin.console.sessions import fingerprint
from producers.inbox import event_id
from producers.twitch.samples import sample_event, sample_payload
from tests.admin.console.conftest import ADMIN_TOKEN, STATIC_TWITCH, ConsoleServer
from tests.conftest import USER
from worker.grant import GrantState

PARKED_TWITCH = "5150"
XSS_BODY = b"<script>alert(1)</script> not json"


def shot(browser: webdriver.Chrome, directory: Path, name: str) -> None:
    browser.set_window_size(1280, max(900, int(browser.execute_script("return document.body.scrollHeight")) + 40))
    assert browser.save_screenshot(str(directory / f"{name}.png"))


def one(browser: webdriver.Chrome, css: str) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, css)


def gone(element: WebElement) -> bool:
    """The element's page was replaced (Chromium says so in one of two ways)."""
    try:
        element.is_enabled()
    except (StaleElementReferenceException, WebDriverException):
        return True
    return False


def click(browser: webdriver.Chrome, css: str) -> None:
    """Click what ``css`` finds and wait for the next page to have replaced this one."""
    page = one(browser, "html")
    one(browser, css).click()
    WebDriverWait(browser, 10).until(lambda _: gone(page))
    WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.readyState") == "complete")


def flash(browser: webdriver.Chrome) -> str:
    return one(browser, "[data-flash]").text


def log_in(browser: webdriver.Chrome, server: ConsoleServer, token: str = ADMIN_TOKEN) -> None:
    browser.get(f"{server.url}/console/login")
    if "/console/login" not in browser.current_url:
        return  # already logged in
    one(browser, "#token").send_keys(token)
    click(browser, "[data-action=login]")


def session_cookie(browser: webdriver.Chrome) -> str:
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None
    return str(cookie["value"])


def test_without_a_session_the_console_sends_to_login_and_a_wrong_token_is_slowed_and_refused(
    browser: webdriver.Chrome, console_server: ConsoleServer, screenshot_dir: Path
) -> None:
    browser.get(f"{console_server.url}/console/events")
    assert browser.current_url == f"{console_server.url}/console/login"
    shot(browser, screenshot_dir, "login")

    one(browser, "#token").send_keys("not-the-admin-token-at-all")
    started = time.monotonic()
    click(browser, "[data-action=login]")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "[data-flash=error]"))
    assert time.monotonic() - started >= 0.8
    assert "not the admin token" in flash(browser)
    assert browser.get_cookie(COOKIE) is None

    log_in(browser, console_server)
    assert browser.current_url == f"{console_server.url}/console"
    assert one(browser, "[data-nav=overview]").get_attribute("aria-current") == "page"
    actions = [(e.action, e.outcome) for e in console_server.audit.recent()]
    assert actions[:2] == [("login", "ok"), ("login", "refused")]


def test_events_show_signed_webhooks_and_an_ignored_one_is_reprocessed(
    browser: webdriver.Chrome, console_server: ConsoleServer, screenshot_dir: Path
) -> None:
    log_in(browser, console_server)
    ignored = console_server.deliver_twitch(sample_payload("channel.cheer"))  # no cheer rule: ignored
    unusable = console_server.deliver_twitch(XSS_BODY)
    granted = console_server.deliver_twitch(
        sample_payload("channel.subscribe", sample_event("channel.subscribe", user_id=STATIC_TWITCH))
    )
    browser.get(f"{console_server.url}/console/events")
    rows = {
        row.get_attribute("data-event-id"): row.get_attribute("data-outcome")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-event-id]")
    }
    assert {event_id("twitch", m): o for m, o in [(ignored, "ignored"), (unusable, "unusable"), (granted, "granted")]}
    assert rows[event_id("twitch", ignored)] == "ignored"
    assert rows[event_id("twitch", unusable)] == "unusable"
    assert rows[event_id("twitch", granted)] == "granted"
    shot(browser, screenshot_dir, "events")

    Select(one(browser, "select[name=outcome]")).select_by_value("unusable")
    click(browser, "[data-action=filter]")
    shown = [row.get_attribute("data-event-id") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-event-id]")]
    assert shown == [event_id("twitch", unusable)]
    click(browser, f"tr[data-event-id='{shown[0]}'] [data-action=open-event]")
    assert one(browser, "[data-field=body]").text == XSS_BODY.decode()  # shown as text, never run

    ident = event_id("twitch", ignored)
    browser.get(f"{console_server.url}/console/events/{ident}")
    assert '"bits": 1000' in one(browser, "[data-field=body]").text  # pretty-printed JSON
    shot(browser, screenshot_dir, "event")
    click(browser, "[data-action=reprocess]")
    assert browser.current_url == f"{console_server.url}/console/events/{ident}"
    assert flash(browser).startswith("Re-processed: ignored")
    assert one(browser, "[data-field=reprocessed]").text == "1"
    browser.refresh()  # post/redirect/get: a reload re-posts nothing
    assert one(browser, "[data-field=reprocessed]").text == "1" and not browser.find_elements(
        By.CSS_SELECTOR, "[data-flash]"
    )
    entry = console_server.audit.recent(limit=1)[0]
    assert (entry.action, entry.target, entry.outcome) == ("reprocess", ident, "ignored")

    browser.get(f"{console_server.url}/console/events/{event_id('twitch', granted)}")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-action=reprocess]")  # granted: nothing to re-process


def add_link(browser: webdriver.Chrome, external_id: str, discord_id: str) -> None:
    Select(one(browser, "[data-form=link-add] select[name=platform]")).select_by_value("twitch")
    for name, value in (("external_id", external_id), ("discord_user_id", discord_id)):
        field = one(browser, f"[data-form=link-add] input[name={name}]")
        field.clear()  # a page the browser went back to may keep what was typed
        field.send_keys(value)
    click(browser, "[data-action=link-add]")


def test_linking_a_parked_viewer_queues_their_grant_once_and_the_link_can_be_removed(
    browser: webdriver.Chrome, console_server: ConsoleServer, screenshot_dir: Path
) -> None:
    log_in(browser, console_server)
    message = console_server.deliver_twitch(
        sample_payload("channel.subscribe", sample_event("channel.subscribe", user_id=PARKED_TWITCH))
    )
    kept = console_server.redis.hget(console_server.keys.event(event_id("twitch", message)), "outcome")
    assert kept == b"parked"  # type: ignore[comparison-overlap]
    (grant,) = [g for g in console_server.ledger.list_grants(limit=100) if g.external_id == PARKED_TWITCH]
    assert grant.state == GrantState.PARKED

    browser.get(f"{console_server.url}/console/links")
    static_row = one(browser, f"tr[data-link='twitch:{STATIC_TWITCH}']")
    assert static_row.get_attribute("data-origin") == "static"
    assert static_row.find_elements(By.CSS_SELECTOR, "[data-readonly]")
    assert not static_row.find_elements(By.CSS_SELECTOR, "[data-action=link-remove]")

    add_link(browser, PARKED_TWITCH, USER)
    assert "1 parked grant(s) queued" in flash(browser)
    assert console_server.ledger.get(grant.id).state == GrantState.QUEUED  # type: ignore[union-attr]
    shot(browser, screenshot_dir, "links")

    browser.back()  # the form again, sent again with the same data
    add_link(browser, PARKED_TWITCH, USER)
    assert "already linked; 0 parked grant(s) queued" in flash(browser)
    queued = [t for t in console_server.ledger.history(grant.id) if t.to_state == GrantState.QUEUED]
    assert len(queued) == 1

    one(browser, "input[name=q]").send_keys(PARKED_TWITCH)
    click(browser, "[data-action=search]")
    found = [row.get_attribute("data-link") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-link]")]
    assert found == [f"twitch:{PARKED_TWITCH}"]
    click(browser, f"tr[data-link='twitch:{PARKED_TWITCH}'] [data-action=link-remove]")
    assert flash(browser) == f"Removed the link of twitch user {PARKED_TWITCH}."
    assert not browser.find_elements(By.CSS_SELECTOR, f"tr[data-link='twitch:{PARKED_TWITCH}']")
    assert console_server.links.resolve("twitch", PARKED_TWITCH) is None
    actions = [(e.action, e.target, e.outcome) for e in console_server.audit.recent(limit=3)]
    target = f"twitch:{PARKED_TWITCH}"
    assert actions == [("link-remove", target, "ok"), ("link-add", target, "ok"), ("link-add", target, "ok")]


def test_a_form_without_the_sessions_csrf_token_is_refused_and_does_nothing(
    browser: webdriver.Chrome, console_server: ConsoleServer
) -> None:
    log_in(browser, console_server)
    cookies = {COOKIE: session_cookie(browser)}
    form = {"platform": "twitch", "external_id": "777", "discord_user_id": USER}
    before = len(console_server.audit.recent(limit=1000))
    for csrf in ({"csrf": "forged-token"}, {}):
        answer = requests.post(
            f"{console_server.url}/console/links",
            data={**form, **csrf},
            cookies=cookies,
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 403 and "Nothing was done" in answer.text
    assert console_server.links.resolve("twitch", "777") is None
    assert len(console_server.audit.recent(limit=1000)) == before


def test_the_audit_log_shows_every_action_by_session_and_logout_ends_the_session(
    browser: webdriver.Chrome, console_server: ConsoleServer, screenshot_dir: Path
) -> None:
    log_in(browser, console_server)
    cookie_value = session_cookie(browser)
    browser.get(f"{console_server.url}/console/audit")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-audit-action]")
    mine = {
        row.get_attribute("data-audit-action")
        for row in rows
        if row.get_attribute("data-actor") == f"console:{fingerprint(cookie_value)}"
    }
    assert {"login", "reprocess", "link-add", "link-remove"} <= mine
    assert any(row.get_attribute("data-actor") == "console:-" for row in rows)  # the wrong token's try
    shot(browser, screenshot_dir, "audit")

    click(browser, "[data-action=logout]")
    assert browser.current_url.startswith(f"{console_server.url}/console/login")
    assert flash(browser) == "You are logged out."
    old = requests.get(
        f"{console_server.url}/console/events", cookies={COOKIE: cookie_value}, allow_redirects=False, timeout=10
    )
    assert old.status_code == 303 and old.headers["location"] == "/console/login"
    assert console_server.audit.recent(limit=1)[0].action == "logout"
