"""Field-level validation errors shared by every service; HTTP turns them into RFC 9457 problems."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """``message`` is the English source text (a catalogue key, with ``%(name)s`` placeholders filled
    from ``params``), so pages can show it in the reader's language."""

    field: str
    message: str
    code: str = "invalid"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.message % self.params if self.params else self.message


class ValidationFailed(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.text}" for e in errors))
        self.errors = errors


class NotFound(Exception):
    pass


class Forbidden(Exception):
    pass
