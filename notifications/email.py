"""Email: rendering (Jinja2, text + HTML, localised), building the MIME message, and the senders.

``SmtpSender`` keeps ``concurrency`` SMTP connections open for one drain and feeds them from a queue;
``DevMailboxSender`` stores the message in the development mailbox instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.policy
import email.utils
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from functools import lru_cache, partial
from typing import Any, cast

import aiosmtplib
from aiosmtplib import SMTPStatus
from email_validator import EmailNotValidError, validate_email
from jinja2 import PackageLoader
from markupsafe import escape
from sqlalchemy.orm import Session, sessionmaker

from notifications.models import DevMailboxMessage
from notifications.outbox import ClaimedMessage, LeaseLost, NewMessage, Outcomes, Undeliverable
from onboarding.core.clock import utcnow
from onboarding.core.db import transaction
from onboarding.core.i18n import DEFAULT_LANGUAGE, make_environment, normalise_language, use_language
from onboarding.core.settings import Settings

# Email templates change only with a deployment: no per-render check of the files on disk.
_templates = make_environment(PackageLoader("notifications", "templates/email"), auto_reload=False)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def render_email(
    template: str, language: str, context: dict[str, Any], *, printed: Mapping[str, str] | None = None
) -> RenderedEmail:
    """Render ``{template}.txt`` (the text part, whose ``subject()`` macro is the subject) and
    ``{template}.html`` in ``language``, with ``context`` and ``printed`` as variables.

    ``printed`` holds per-recipient strings (a name, a link) that the templates only print, directly
    or inside a translated sentence, and never test, compare or filter. The templates then run once
    per language and rest of the context (hashable values, or dicts of them), with a marker in place
    of each such value; each email is that result with the markers replaced by its values (escaped in
    the HTML part, as autoescaping would): the same text as a full render, without running the
    templates again (two template runs with about twenty translated strings were most of the time it
    took to render an invitation). If a template changes a marker (a filter), it is rendered in full."""
    if not printed:
        return _render(template, language, context)
    language = normalise_language(language) or DEFAULT_LANGUAGE
    try:
        key: Hashable = (template, language, _freeze(context), tuple(printed))
    except TypeError:  # an unhashable value: nothing to reuse
        return _render(template, language, {**context, **printed})
    form = _forms.get(key, _MISSING)
    if form is _MISSING:
        if len(_forms) >= _FORMS_KEPT:
            _forms.clear()
        form = _forms[key] = _form(template, language, context, tuple(printed))
    if form is None:
        return _render(template, language, {**context, **printed})
    assert isinstance(form, _Form)
    return form.fill(tuple(printed.values()))


def _render(template: str, language: str, context: dict[str, Any]) -> RenderedEmail:
    with use_language(language):
        text = _templates.get_template(f"{template}.txt").make_module(context)
        subject = str(text.subject())  # type: ignore[attr-defined]
        html = _templates.get_template(f"{template}.html").render(context)
    return RenderedEmail(subject=" ".join(subject.split()), text=str(text), html=html)


def _freeze(value: Any) -> Hashable:
    """The context as a cache key (types included: 14 and 14.0 print differently); TypeError for an
    unhashable value other than a dict."""
    if isinstance(value, dict):
        return tuple([(k, _freeze(v)) for k, v in value.items()])
    hash(value)
    return (type(value), cast(Hashable, value))


@dataclass(frozen=True)
class _Form:
    """A rendered email as ``str.format`` strings with one positional field per printed value."""

    subject: str
    text: str
    html: str

    def fill(self, values: tuple[str, ...]) -> RenderedEmail:
        subject = self.subject.format(*values)
        return RenderedEmail(
            subject=" ".join(subject.split()),
            text=self.text.format(*values),
            html=self.html.format(*(str(escape(v)) for v in values)),
        )


_forms: dict[Hashable, _Form | None] = {}
_FORMS_KEPT = 1024  # languages x templates x contexts; emptied when full
_MISSING = object()

# A marker stands for a printed value while the templates run: private-use characters around
# lowercase letters and an "&". Autoescaping turns the "&" into "&amp;" in the HTML part and nothing
# else; a filter (case, ``safe``, ``e``, ...) would change it differently, and that is detected.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARKER_TEXT = re.compile(f"{_OPEN}([a-z]+)&{_CLOSE}")
_MARKER_HTML = re.compile(f"{_OPEN}([a-z]+)&amp;{_CLOSE}")


def _form(template: str, language: str, context: dict[str, Any], names: tuple[str, ...]) -> _Form | None:
    """The email with markers for ``names``, as ``str.format`` strings; None if a marker changed."""
    labels = [chr(ord("a") + i % 26) * (i // 26 + 1) for i in range(len(names))]
    markers = {name: f"{_OPEN}{label}&{_CLOSE}" for name, label in zip(names, labels, strict=True)}
    index = {label: i for i, label in enumerate(labels)}
    rendered = _render(template, language, {**context, **markers})

    def as_format(part: str, marker: re.Pattern[str]) -> str | None:
        pieces = marker.split(part.replace("{", "{{").replace("}", "}}"))
        for i in range(1, len(pieces), 2):
            if pieces[i] not in index:
                return None
            pieces[i] = f"{{{index[pieces[i]]}}}"
        out = "".join(pieces)
        return None if _OPEN in out or _CLOSE in out else out

    subject = as_format(rendered.subject, _MARKER_TEXT)
    text = as_format(rendered.text, _MARKER_TEXT)
    html = as_format(rendered.html, _MARKER_HTML)
    if subject is None or text is None or html is None:
        return None
    return _Form(subject, text, html)


def build_email(settings: Settings, *, to: str, rendered: RenderedEmail, language: str) -> bytes:
    """The MIME message (multipart/alternative, UTF-8 quoted-printable parts) as bytes.

    Written out directly rather than through ``email.message.EmailMessage``, whose header registry
    cost about 1 ms per message (80 % of the CPU of creating an invitation); tests parse the result
    back with the standard library's parser. Header values come from validated data and templates;
    any CR or LF in them is refused, so nothing can inject a header. The To header carries the
    address as it goes on the wire (``wire_address``): an internationalised domain in IDNA, a
    non-ASCII local part as UTF-8 (RFC 6532: such a message needs a server with SMTPUTF8)."""
    for value in (settings.mail_from, to, rendered.subject, language):
        if "\r" in value or "\n" in value:
            raise ValueError("line break in a header value")
    if "@" not in to or any(c in to for c in '<>,;" '):
        raise ValueError(f"not a bare address: {to!r}")
    if not to.isascii():
        to = wire_address(to).address
    boundary = f"=_{secrets.token_hex(16)}"
    headers = (
        ("From", _address_header(settings.mail_from)),
        ("To", to),
        ("Subject", _text_header(rendered.subject)),
        ("Date", _date_header(int(time.time()))),
        ("Message-ID", email.utils.make_msgid(domain=settings.brand_mail_domain)),
        # RFC 3834: automatic mail, so auto-responders do not answer it.
        ("Auto-Submitted", "auto-generated"),
        ("Content-Language", language),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    )
    # ASCII but for a non-ASCII local part (or sender) that only an SMTPUTF8 server takes.
    out = "\r\n".join(f"{name}: {value}" for name, value in headers).encode("utf-8") + b"\r\n\r\n"
    for subtype, body in (("plain", rendered.text), ("html", rendered.html)):
        out += (
            f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode("ascii")
        out += binascii.b2a_qp(body.encode("utf-8"), istext=True).replace(b"\n", b"\r\n") + b"\r\n"
    return out + f"--{boundary}--\r\n".encode("ascii")


def outbox_email(
    settings: Settings,
    rendered: RenderedEmail,
    *,
    to: str,
    language: str,
    purpose: str,
    reference_id: int | None = None,
) -> NewMessage:
    """``rendered`` as an outbox message to ``to``: the MIME message of ``build_email`` as payload,
    the subject kept beside it, ``reference_id`` naming what it is about (the invitation, the support
    request, ...)."""
    return NewMessage(
        channel="email",
        purpose=purpose,
        recipient=to,
        payload=build_email(settings, to=to, rendered=rendered, language=language),
        subject=rendered.subject,
        reference_id=reference_id,
    )


@lru_cache(maxsize=2)
def _date_header(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)  # one per second: a batch shares a few


def _text_header(value: str) -> str:
    """RFC 2047 base64 encoded-words, folded, for a non-ASCII header (``email.header`` weighs both
    encodings for every character, which cost 0.5 ms a subject)."""
    if value.isascii():
        return value
    data, words, start = value.encode("utf-8"), [], 0
    while start < len(data):
        end = min(start + 45, len(data))  # 45 bytes -> 60 base64 characters: a word <= 75
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # never split a character
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode()}?=")
        start = end
    return "\r\n ".join(words)


@lru_cache(maxsize=8)
def _address_header(value: str) -> str:
    name, address = email.utils.parseaddr(value)
    if not address:
        raise ValueError(f"not an address: {value!r}")
    if not address.isascii():
        # Internationalised addresses need SMTPUTF8; a raw UTF-8 header is what such servers expect.
        return value
    return email.utils.formataddr((name, address), charset="utf-8") if name else address


def parse_email(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body_parts(message: EmailMessage) -> tuple[str, str | None]:
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    text = text_part.get_content() if isinstance(text_part, EmailMessage) else ""
    html = html_part.get_content() if isinstance(html_part, EmailMessage) else None
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n") if html is not None else None


@lru_cache(maxsize=8)
def _envelope_sender(mail_from: str) -> str:
    return email.utils.parseaddr(mail_from)[1]


def envelope_sender(settings: Settings) -> str:
    return _envelope_sender(settings.mail_from)


# What would end an address on an SMTP command line (aiosmtplib refuses these too).
_UNSAFE_IN_ADDRESS = re.compile(r'[\s<>"]')


def _plain_address(address: str) -> bool:
    return address.isascii() and "@" in address and _UNSAFE_IN_ADDRESS.search(address) is None


@dataclass(frozen=True)
class WireAddress:
    """An address as it goes into the envelope and the To header."""

    address: str  # the domain in IDNA (``xn--…``), the local part as given
    smtputf8: bool  # the local part is not ASCII: only a server offering SMTPUTF8 (RFC 6531) takes it


def wire_address(address: str) -> WireAddress:
    """The address with its domain in IDNA: ``anna@bücher.example`` → ``anna@xn--bcher-kva.example``.
    ValueError (an ``EmailNotValidError``) for what is not an address (IDNA and the address syntax
    by ``email-validator``, as the order service checks them)."""
    if _plain_address(address):
        return WireAddress(address, False)
    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(f"not an address: {exc}") from exc
    local = checked.local_part
    return WireAddress(f"{local}@{checked.ascii_domain}", not local.isascii())


# Why a message to a non-ASCII local part is dead at once on a server without SMTPUTF8 (shown to staff).
NO_SMTPUTF8 = (
    "the address has non-ASCII characters before the @, and the mail server does not offer "
    "SMTPUTF8 (RFC 6531), which such an address needs; correct the buyer's email address or use a "
    "mail server that supports internationalised addresses"
)


def _crlf_only(payload: bytes) -> bool:
    """Every line ends with CRLF, the last one too: what ``build_email`` writes."""
    crlf = payload.count(b"\r\n")
    return payload.endswith(b"\r\n") and payload.count(b"\n") == crlf == payload.count(b"\r")


async def send_mail(
    client: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    payload: bytes,
    *,
    timeout: float | None,
    before_data: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """One mail transaction: the same commands and errors as ``client.sendmail(sender, [recipient],
    payload)``, without its per-message work that does not apply here: parsing both bare addresses
    twice with the standard library's address parser, rewriting the line ends of the whole message
    to count its size, and a timer per command (``timeout`` bounds the whole transaction instead):
    a third of the SMTP client's CPU time per message. Anything else (a first message before EHLO,
    an address that needs care, other line ends) goes through ``sendmail``.

    ``before_data`` is awaited before the message's content is sent (from then on the server may
    accept it): the outbox's admission, which waits while too many sent messages are unrecorded,
    and refuses a message whose claim is lost (``LeaseLost``, raised with the envelope reset).
    Outside ``timeout``."""
    if client.is_ehlo_or_helo_needed or not (
        _plain_address(sender) and _plain_address(recipient) and _crlf_only(payload)
    ):
        if before_data is not None:
            await before_data()
        await client.sendmail(sender, [recipient], payload, timeout=timeout)
        return
    options = [f"size={len(payload)}".encode("ascii")] if client.supports_extension("size") else []
    try:
        async with asyncio.timeout(timeout):
            mail_from = f"FROM:<{sender}>".encode("ascii")
            response = await client.execute_command(b"MAIL", mail_from, *options, timeout=None)
            if response.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
            rcpt_to = f"TO:<{recipient}>".encode("ascii")
            response = await client.execute_command(b"RCPT", rcpt_to, timeout=None)
            if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                raise aiosmtplib.SMTPRecipientsRefused(
                    [aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)]
                )
        if before_data is not None:
            await before_data()
        async with asyncio.timeout(timeout):
            await client.data(payload, timeout=None)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused, LeaseLost):
        # Refused by the server or, before DATA, by the outbox: reset the envelope, as sendmail
        # does, so that the connection can carry the next message.
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise
    except TimeoutError:
        client.close()  # a reply may still come: the connection is out of step
        raise


class SmtpSender:
    channel = "email"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Connections stay open across the batches of one drain; ``close`` ends them.
        self._idle: list[aiosmtplib.SMTP] = []

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        assert s.smtp_host
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            start_tls=s.smtp_starttls,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout_seconds,
        )

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        """Send over up to ``smtp_concurrency`` connections, reporting each outcome as it comes. A
        refused or unsendable message fails alone; a connection that breaks costs that connection;
        a server that cannot be reached leaves the rest of the batch not attempted. A message the
        outbox does not admit (its claim is lost) is skipped, and the connection carries on."""
        queue: asyncio.Queue[ClaimedMessage] = asyncio.Queue()
        for m in messages:
            queue.put_nowait(m)
        sender = envelope_sender(self.settings)
        timeout = self.settings.smtp_timeout_seconds

        async def worker() -> None:
            client: aiosmtplib.SMTP | None = self._idle.pop() if self._idle else None
            try:
                while not queue.empty():
                    m = queue.get_nowait()
                    try:
                        recipient = wire_address(m.recipient)
                    except ValueError as exc:
                        outcomes.report(m, Undeliverable(f"not an address a mail server can take: {exc}"))
                        continue
                    if client is None or not client.is_connected:
                        client = self._client()
                        try:
                            await client.connect()
                        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                            # Server unreachable or login refused: this worker stops; what is left
                            # in the queue is reported as not attempted and retried after back-off.
                            outcomes.report(m, f"{type(exc).__name__}: {exc}")
                            client.close()
                            client = None
                            return
                    try:
                        admit = partial(outcomes.admit, m)
                        if recipient.smtputf8:
                            error = await _send_smtputf8(client, sender, recipient, m, timeout, admit)
                            outcomes.report(m, error)
                        else:
                            await send_mail(
                                client,
                                sender,
                                recipient.address,
                                m.payload,
                                timeout=timeout,
                                before_data=admit,
                            )
                            outcomes.report(m, None)
                    except LeaseLost:
                        continue  # another process sends it, or a later pass: nothing to report
                    except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                        # Refused for this message only; the connection stays usable unless the
                        # server said it is closing (421).
                        outcomes.report(m, f"{type(exc).__name__}: {exc}")
                        if getattr(exc, "code", None) == 421:
                            client.close()
                            client = None
                    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                        outcomes.report(m, f"{type(exc).__name__}: {exc}")
                        client.close()
                        client = None
                    except (ValueError, UnicodeError) as exc:
                        # Something in this message the client refuses to send: no retry changes
                        # it. The connection may be mid-transaction: start afresh.
                        outcomes.report(m, Undeliverable(f"{type(exc).__name__}: {exc}"))
                        client.close()
                        client = None
            finally:
                if client is not None and client.is_connected:
                    self._idle.append(client)

        workers = min(self.settings.smtp_concurrency, len(messages))
        await asyncio.gather(*(worker() for _ in range(workers)))
        for m in messages:
            if m.id not in outcomes.results:
                outcomes.report(m, "not attempted: the SMTP server was unavailable")


async def _send_smtputf8(
    client: aiosmtplib.SMTP,
    sender: str,
    recipient: WireAddress,
    message: ClaimedMessage,
    timeout: float,
    admit: Callable[[], Awaitable[None]],
) -> str | None:
    """A message to a non-ASCII local part: with SMTPUTF8 when the server offers it, else dead at
    once with the reason (no server without it can take the address)."""
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    if not client.supports_extension("smtputf8"):
        return Undeliverable(NO_SMTPUTF8)
    options = ["SMTPUTF8"]
    if client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")  # the UTF-8 To header is 8-bit data (RFC 6531 §3.4)
    await admit()
    await client.sendmail(sender, [recipient.address], message.payload, mail_options=options, timeout=timeout)
    return None


class DevMailboxSender:
    """Keeps every message in the development mailbox (``/dev/mailbox``); nothing leaves the machine."""

    channel = "email"

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    async def deliver(self, messages: Sequence[ClaimedMessage], outcomes: Outcomes) -> None:
        now = utcnow()
        kept: list[ClaimedMessage] = []
        # Stored in one transaction with nothing sent elsewhere: a crash repeats nothing, so the
        # messages need no admission.
        with transaction(self.factory) as session:
            for m in messages:
                try:
                    parsed = parse_email(m.payload)
                    text, html = body_parts(parsed)
                    subject = str(parsed["Subject"] or "")
                except Exception as exc:  # a payload that is not a readable message: this one only
                    outcomes.report(m, Undeliverable(f"not a readable email: {type(exc).__name__}: {exc}"))
                    continue
                session.add(
                    DevMailboxMessage(
                        outbox_id=m.id,
                        channel="email",
                        recipient=m.recipient,
                        subject=subject,
                        text_body=text,
                        html_body=html,
                        created_at=now,
                    )
                )
                kept.append(m)
        for m in kept:
            outcomes.report(m, None)

    async def close(self) -> None:
        return None


def email_sender(settings: Settings, factory: sessionmaker[Session]) -> SmtpSender | DevMailboxSender:
    return SmtpSender(settings) if settings.smtp_host else DevMailboxSender(factory)
