"""The SMTP sender: each message is the mail transaction aiosmtplib's ``sendmail`` would make; a
refused message fails alone, a server that closes or stops answering costs the connection only.
Internationalised addresses: the domain goes out in IDNA, a non-ASCII local part with SMTPUTF8 when
the server offers it, else the message is undeliverable at once (its reason stated)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from notifications.email import NO_SMTPUTF8, RenderedEmail, SmtpSender, build_email, parse_email
from notifications.outbox import ClaimedMessage, Outcomes, Undeliverable
from onboarding.core.settings import Settings
from tests.conftest import free_port

SENDER = "no-reply@brand.example"


@dataclass
class Recorder:
    """Keeps what the server received; refuses, closes or stalls on chosen recipients."""

    received: list[tuple[str, list[str], list[str], bytes]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    closing: set[str] = field(default_factory=set)
    stall: set[str] = field(default_factory=set)
    connections: int = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        if address in self.closing:
            return "421 4.3.2 shutting down"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if set(envelope.rcpt_tos) & self.stall:
            await asyncio.sleep(2)
        self.received.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                envelope.original_content,
            )
        )
        return "250 accepted"


def _serve(smtputf8: bool) -> Iterator[tuple[Recorder, int]]:
    recorder, port = Recorder(), free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    yield recorder, port
    controller.stop()


@pytest.fixture
def server() -> Iterator[tuple[Recorder, int]]:
    """A server offering SMTPUTF8 (RFC 6531)."""
    yield from _serve(smtputf8=True)


@pytest.fixture
def ascii_server() -> Iterator[tuple[Recorder, int]]:
    """A server without SMTPUTF8: it takes only ASCII addresses."""
    yield from _serve(smtputf8=False)


def sender_settings(port: int, **extra: Any) -> Settings:
    return Settings(
        secret_key="x" * 50,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_concurrency=1,
        mail_from=f"Brand <{SENDER}>",
        _env_file=None,
        **extra,
    )


def payload(settings: Settings, to: str) -> bytes:
    rendered = RenderedEmail("Hej Åsa", "Hej Åsa,\n.a line that starts with a dot\n", "<p>Hej Åsa</p>\n")
    return build_email(settings, to=to, rendered=rendered, language="sv")


def deliver(settings: Settings, messages: list[tuple[str, bytes]]) -> dict[str, str | None]:
    claimed = [
        ClaimedMessage(
            id=n, channel="email", purpose="test", reference_id=n, recipient=to, payload=data, attempts=1
        )
        for n, (to, data) in enumerate(messages)
    ]

    async def run() -> dict[int, str | None]:
        sender, outcomes = SmtpSender(settings), Outcomes()
        try:
            await sender.deliver(claimed, outcomes)
        finally:
            await sender.close()
        return outcomes.results

    results = asyncio.run(run())
    return {m.recipient: results[m.id] for m in claimed}


def test_each_message_is_the_transaction_sendmail_makes(
    server: tuple[Recorder, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, port = server
    settings = sender_settings(port)
    messages = [(f"buyer{n}@example.com", payload(settings, f"buyer{n}@example.com")) for n in range(3)]
    messages.append(("lf@example.com", b"Subject: bare line feeds\n\n.dot\nend"))

    async def by_sendmail() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        async with client:
            for to, data in messages:
                await client.sendmail(SENDER, [to], data)

    asyncio.run(by_sendmail())
    expected, recorder.received = recorder.received, []

    calls = []
    sendmail = aiosmtplib.SMTP.sendmail

    async def counted(self: aiosmtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return await sendmail(self, *args, **kwargs)

    monkeypatch.setattr(aiosmtplib.SMTP, "sendmail", counted)
    assert deliver(settings, messages) == dict.fromkeys((to for to, _ in messages), None)
    assert recorder.received == expected
    # sendmail itself only for the connection's first message (EHLO) and the one with bare line feeds.
    assert calls == [["buyer0@example.com"], ["lf@example.com"]]


def test_a_refused_recipient_fails_its_message_only(server: tuple[Recorder, int]) -> None:
    recorder, port = server
    recorder.refuse.add("gone@example.com")
    settings = sender_settings(port)
    addresses = ["a@example.com", "b@example.com", "gone@example.com", "c@example.com"]
    results = deliver(settings, [(to, payload(settings, to)) for to in addresses])
    assert results["gone@example.com"] is not None and "550" in results["gone@example.com"]
    assert [r[1] for r in recorder.received] == [["a@example.com"], ["b@example.com"], ["c@example.com"]]
    assert recorder.connections == 1


def test_a_closing_server_costs_the_connection(server: tuple[Recorder, int]) -> None:
    recorder, port = server
    recorder.closing.add("late@example.com")
    settings = sender_settings(port)
    addresses = ["a@example.com", "b@example.com", "late@example.com", "c@example.com"]
    results = deliver(settings, [(to, payload(settings, to)) for to in addresses])
    assert results["late@example.com"] is not None and "421" in results["late@example.com"]
    assert [r[1] for r in recorder.received] == [["a@example.com"], ["b@example.com"], ["c@example.com"]]
    assert recorder.connections == 2


def test_a_silent_server_times_out_and_the_next_message_gets_a_new_connection(
    server: tuple[Recorder, int],
) -> None:
    recorder, port = server
    recorder.stall.add("slow@example.com")
    settings = sender_settings(port, smtp_timeout_seconds=0.5)
    addresses = ["a@example.com", "b@example.com", "slow@example.com", "c@example.com"]
    results = deliver(settings, [(to, payload(settings, to)) for to in addresses])
    assert results["slow@example.com"] is not None and "Timeout" in results["slow@example.com"]
    assert {to for to, error in results.items() if error is None} == {
        "a@example.com",
        "b@example.com",
        "c@example.com",
    }
    assert recorder.connections == 2


def test_something_that_is_not_an_address_is_undeliverable_alone(server: tuple[Recorder, int]) -> None:
    recorder, port = server
    settings = sender_settings(port)
    addresses = ["a@example.com", "åsa@-exämple-.com", "c@example.com"]
    results = deliver(settings, [(to, payload(settings, "a@example.com")) for to in addresses])
    assert results["a@example.com"] is None and results["c@example.com"] is None
    error = results["åsa@-exämple-.com"]
    assert isinstance(error, Undeliverable) and "not an address" in error
    assert [r[1] for r in recorder.received] == [["a@example.com"], ["c@example.com"]]


def test_an_internationalised_domain_goes_out_in_idna_and_arrives(
    ascii_server: tuple[Recorder, int],
) -> None:
    """No SMTPUTF8 needed: the domain is punycode in the envelope and in the To header."""
    recorder, port = ascii_server
    settings = sender_settings(port)
    to = "anna@bücher.example"  # as the order API stores anna@xn--bcher-kva.example
    assert deliver(settings, [(to, payload(settings, to))]) == {to: None}
    [(mail_from, rcpt_tos, mail_options, raw)] = recorder.received
    assert (mail_from, rcpt_tos) == (SENDER, ["anna@xn--bcher-kva.example"])
    assert not any(o.upper() == "SMTPUTF8" for o in mail_options)
    assert raw.isascii()
    assert parse_email(raw)["To"] == "anna@xn--bcher-kva.example"


def test_a_non_ascii_local_part_goes_out_with_smtputf8_when_the_server_offers_it(
    server: tuple[Recorder, int],
) -> None:
    recorder, port = server
    settings = sender_settings(port)
    to = "jörg@bücher.example"
    assert deliver(settings, [(to, payload(settings, to))]) == {to: None}
    [(mail_from, rcpt_tos, mail_options, raw)] = recorder.received
    assert (mail_from, rcpt_tos) == (SENDER, ["jörg@xn--bcher-kva.example"])
    assert "SMTPUTF8" in [o.upper() for o in mail_options]
    # RFC 6532: the header carries the UTF-8 local part, the domain in IDNA.
    assert "To: jörg@xn--bcher-kva.example\r\n".encode() in raw
    assert parse_email(raw)["To"] == "jörg@xn--bcher-kva.example"


def test_without_smtputf8_a_non_ascii_local_part_is_undeliverable_at_once_and_the_rest_go(
    ascii_server: tuple[Recorder, int],
) -> None:
    recorder, port = ascii_server
    settings = sender_settings(port)
    addresses = ["a@example.com", "jörg@bücher.example", "c@example.com"]
    results = deliver(settings, [(to, payload(settings, to)) for to in addresses])
    assert results["a@example.com"] is None and results["c@example.com"] is None
    assert results["jörg@bücher.example"] == NO_SMTPUTF8
    assert isinstance(results["jörg@bücher.example"], Undeliverable)  # dead at once, not retried
    assert [r[1] for r in recorder.received] == [["a@example.com"], ["c@example.com"]]
    assert recorder.connections == 1  # nothing was sent for it: the connection stays in use
