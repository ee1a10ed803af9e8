"""Logic the identity pages share: one "This link no longer works" page for every emailed link
(``pages.link_problem``), and one status for a form refused by its rate limit or its fields
(``ratelimit.refusal_status``)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from onboarding.core.errors import FieldError, ValidationFailed
from onboarding.core.settings import Settings
from onboarding.identity.ratelimit import TooManyAttempts, refusal_status
from onboarding.ops.app import create_app
from tests.conftest import Database
from tests.helpers import id_form

HEADINGS = {
    "en": "This link no longer works",
    "de": "Dieser Link funktioniert nicht mehr",
    "sv": "Den här länken fungerar inte längre",
}


def _heading(html: str) -> str:
    found = re.findall(r"<h1>(.*?)</h1>", html)
    assert len(found) == 1, found
    return str(found[0])


def _actions(html: str) -> list[tuple[str, str]]:
    links = re.search(r'<p class="links">(.*?)</p>', html)
    assert links is not None
    return re.findall(r'<a href="([^"]+)">([^<]+)</a>', links.group(1))


def test_every_dead_emailed_link_gets_the_same_410_page(settings: Settings, client: TestClient) -> None:
    """Registration, password reset and email change: status 410, the same heading in the reader's
    language, the link's own explanation and one way on; only the reset page clears its cookie."""
    # Each emailed link that no longer works: its path, what the page says, and its one way on.
    dead_links = {
        "/register/verify/not-a-token": (
            f"Activation links work once and for {settings.email_verification_valid_hours} hours.</p>"
            "<p>Log in with your email and password to get a new link.",
            "/login",
            "Log in",
        ),
        "/password/reset/not-a-token": (
            f"Password reset links work once and for {settings.password_reset_valid_minutes} minutes. "
            "Ask for a new one.",
            "/password/forgot",
            "Reset your password",
        ),
        "/account/email/confirm/not-a-token": (
            f"Confirmation links work once and for {settings.email_change_valid_hours} hours, "
            "and not if the address has an ID meanwhile.",
            "/account/email",
            "Change your login email",
        ),
    }
    for path, (explanation, href, label) in dead_links.items():
        page = client.get(path, headers={"Accept-Language": "en"}, follow_redirects=False)
        assert page.status_code == 410, path
        assert _heading(page.text) == HEADINGS["en"], path
        assert f"<p>{explanation}</p>" in page.text, path
        assert _actions(page.text) == [(href, label)], path
        clears_reset_cookie = any(
            value.startswith('onb_reset=""') and "Max-Age=0" in value and "Path=/password" in value
            for value in page.headers.get_list("set-cookie")
        )
        assert clears_reset_cookie == path.startswith("/password/"), path
    for language, heading in HEADINGS.items():
        for path in dead_links:
            page = client.get(path, headers={"Accept-Language": language})
            assert (page.status_code, _heading(page.text)) == (410, heading), (language, path)
            assert f'lang="{language}"' in page.text, (language, path)


def test_refusal_status_tells_a_rate_limit_from_bad_fields() -> None:
    assert refusal_status(TooManyAttempts("email")) == 429
    assert refusal_status(ValidationFailed([FieldError("email", "Enter an email address.")])) == 422


@pytest.mark.parametrize("path", ["/password/forgot", "/register"])
def test_email_forms_answer_422_for_bad_fields_and_429_beyond_their_limit(
    db: Database, settings: Settings, path: str
) -> None:
    """Rate limits are counted before the fields are checked: the third try is refused whatever it holds."""
    limited = settings.model_copy(update={"rate_limit_email_per_address": "2/minute"})
    with TestClient(create_app(limited, session_factory=db.factory)) as client:
        # The reset request reads only the email; registration the whole ID form (``id_form``).
        answers = [client.post(path, data=id_form(client, email="not-an-address")) for _ in range(3)]
    assert [a.status_code for a in answers] == [422, 422, 429]
    assert all('id="email-error"' in a.text for a in answers)
    assert "Too many attempts" not in answers[0].text and "Too many attempts" in answers[2].text
    assert 'value="not-an-address"' in answers[2].text  # the form is shown again, filled in
