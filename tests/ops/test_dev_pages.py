"""The development pages and the site icon (issue 11, item 19): an SMS kept in the development mailbox
is headed by its recipient, and /favicon.ico (and the icon the layout links) answers instead of 404."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fastapi.testclient import TestClient

from notifications.models import DevMailboxMessage
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from tests.account_support import log_in, make_account
from tests.conftest import Database


def _keep(db: Database, **fields: object) -> int:
    with transaction(db.factory) as session:
        message = DevMailboxMessage(created_at=utcnow(), html_body=None, outbox_id=None, **fields)
        session.add(message)
        session.flush()
        return message.id


def _h1(page: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", page, re.DOTALL)
    assert found, page
    return found.group(1).strip()


def test_an_sms_in_the_dev_mailbox_is_headed_by_its_recipient(db: Database, client: TestClient) -> None:
    sms = _keep(db, channel="sms", recipient="+46701234567", subject=None, text_body="123456 is your code")
    page = client.get(f"/dev/mailbox/{sms}")
    assert page.status_code == 200
    assert _h1(page.text) == "SMS to +46701234567"
    assert "<title>SMS to +46701234567 · Development SMS outbox</title>" in page.text  # not "None"
    assert '<a href="/dev/sms">' in page.text  # back to where SMS are listed
    email = _keep(db, channel="email", recipient="a@example.com", subject="Hello", text_body="Hi")
    assert _h1(client.get(f"/dev/mailbox/{email}").text) == "Hello"
    untitled = _keep(db, channel="email", recipient="a@example.com", subject=None, text_body="Hi")
    assert _h1(client.get(f"/dev/mailbox/{untitled}").text) == "(no subject)"


class _Icons(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "link" and found.get("rel") == "icon" and found.get("href"):
            self.hrefs.append(str(found["href"]))


def test_the_site_icon_is_served_and_linked_from_every_page(
    db: Database, settings: Settings, client: TestClient
) -> None:
    make_account(db.factory, settings, utcnow())
    for path in ("/favicon.ico", "/favicon.svg"):
        icon = client.get(path)
        assert icon.status_code == 200, path
        assert icon.headers["content-type"].startswith("image/svg+xml")
        assert icon.content.lstrip().startswith(b"<svg") and len(icon.content) < 2048
    log_in(client)
    for path in (
        "/",
        "/login",
        "/register",
        "/password/forgot",
        "/account",
        "/account/security",
        "/dev/mailbox",
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        parser = _Icons()
        parser.feed(page.text)
        assert parser.hrefs, path
        for href in parser.hrefs:
            assert client.get(href).status_code == 200, (path, href)
