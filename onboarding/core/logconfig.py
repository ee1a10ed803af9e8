"""Structured logs (structlog, rendered through the standard library's logging as JSON lines on
stderr). Nothing secret or personal is passed to a logger on purpose: tokens, passwords, message
bodies and buyers' details stay out of every event. Should one slip in anyway (a database error, an
SMTP reply, a URL), the redaction here removes it:

- keys that hold secrets (``token``, ``password``, ...) are replaced whole;
- email addresses, E.164-like phone numbers, bearer credentials, API keys and long tokens are
  replaced wherever they appear in a value, in structlog events and in every standard-library record
  (uvicorn's, SQLAlchemy's, ...), whichever handler prints it;
- an exception is logged as its type and a traceback whose messages are removed: a database error's
  message can carry a whole row (``Failing row contains (...)``).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter

_SECRET_KEYS = frozenset({"token", "password", "secret", "api_key", "authorization", "payload", "code"})
# Values the redaction leaves alone: set by this module or checked to be harmless.
_PLAIN_KEYS = frozenset({"timestamp", "level", "logger", "correlation_id", "exception", "exc_type"})
# The service's own loggers log at the configured level; other libraries keep the root's (warnings).
APP_LOGGERS = ("onboarding", "notifications", "vehicles")
REDACTED = "[redacted]"

_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;\"']+"), r"\1 " + REDACTED),
    (re.compile(r"\bonb_[0-9a-f]+_[\w-]+"), REDACTED),  # API keys (onboarding.api.keys)
    (re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"), REDACTED),  # email addresses
    (re.compile(r"\+\d(?:[\s().-]{0,2}\d){6,14}"), REDACTED),  # E.164-like phone numbers
    (re.compile(r"[A-Za-z0-9_-]{40,}"), REDACTED),  # link tokens, session tokens, hashes
)


def redact(text: str) -> str:
    """``text`` with every email address, phone number, credential and long token replaced."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if str(k).lower() in _SECRET_KEYS else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    return value


def _redact_event(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = REDACTED
        elif key not in _PLAIN_KEYS and not key.startswith("_"):
            event[key] = _redact_value(event[key])
    return event


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and the exceptions it was raised from or during, each ending in its
    type only: file names, line numbers and source lines, but no exception message."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts: list[str] = []
    for item in reversed(chain):
        if parts:
            parts.append("\nThe above exception led to the following exception:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{exception_type(item)}: {REDACTED}\n")
    return "".join(parts)


def exception_type(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _format_exception(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's ``format_exc_info``, with the messages left out."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info if isinstance(exc_info, BaseException) else (exc_info[1] if exc_info else None)
    if isinstance(exc, BaseException):
        event["exc_type"] = exception_type(exc)
        event["exception"] = redacted_traceback(exc)
    return event


def _record_exception(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # A standard-library record's traceback, already redacted when the record was made.
    record = event.get("_record")
    if record is not None and record.exc_text:
        event["exception"] = record.exc_text
    return event


_RecordFactory = Callable[..., logging.LogRecord]


def _redacting_record_factory(make_record: _RecordFactory) -> _RecordFactory:
    def make_redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if isinstance(record.msg, dict):  # a structlog event, redacted by its processors
            return record
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redacted_traceback(record.exc_info[1])
            record.exc_info = None
        return record

    make_redacted_record.redacts = True  # type: ignore[attr-defined]
    return make_redacted_record


def _install_record_redaction() -> None:
    """Every standard-library record is redacted as it is made, so whatever handler prints it (the
    root's, uvicorn's own, a test's) sees no personal data."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "redacts", False):
        logging.setLogRecordFactory(_redacting_record_factory(current))


_HANDLER_MARK = "onboarding_json_lines"


def _install_root_handler() -> None:
    root = logging.getLogger()
    if any(getattr(handler, _HANDLER_MARK, False) for handler in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ProcessorFormatter(
            processors=[ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _record_exception,
            ],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)


def configure_logging(level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_event,
            _format_exception,
            ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    for name in APP_LOGGERS:
        logging.getLogger(name).setLevel(level)
    _install_record_redaction()
    _install_root_handler()
