"""OCPI 2.2.1, eMSP side of the Tokens module (no HTTP): the specification's objects as pydantic
models, a card as its Token, the Sender interface's list and real-time authorisation, and the
credentials of the charge-point operators (parties) that call us.

Validity (Token.valid, spec "Is this Token valid"): a card is the driver's from the moment it exists
(requested, produced, shipped, delivered): a card in the post may be valid, as nobody else holds it.
A blocked or replaced card is not, nor a card of an ended contract: ending a contract (the car
removed, the holder's link ended, the ID blocked by support) blocks its cards, so the answer is
BLOCKED and the change is pushed. Deleting an ID (SPEC §3.10, not built yet) is to deactivate it the
same way first (``identity.account_blocking.deactivate``).

Whitelist: a valid card is ``ALLOWED_OFFLINE`` (real-time authorisation in normal operation, allowed
when the CPO cannot reach us); an invalid one ``NEVER``, so that a stolen card is never let through on
a stale cache, even while we are unreachable.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from sqlalchemy import Connection, Select, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from onboarding.core.crypto import new_token, seal_text, token_hash
from onboarding.core.settings import Settings
from vehicles.charging.models import ChargingCard, ChargingContract, OcpiParty

VERSION = "2.2.1"
THEIR_TOKEN_PURPOSE = "ocpi-their-token"  # noqa: S105 (a sealing purpose, not a secret)
VALID_CARD_STATES = frozenset({"requested", "produced", "shipped", "delivered"})
BLOCKED_CARD_STATES = frozenset({"blocked", "replaced"})
MAX_LIMIT = 500


class Status(enum.IntEnum):
    """OCPI status codes (status_codes.asciidoc) this module answers."""

    SUCCESS = 1000
    CLIENT_ERROR = 2000
    INVALID_PARAMETERS = 2001
    NOT_ENOUGH_INFORMATION = 2002
    UNKNOWN_LOCATION = 2003
    UNKNOWN_TOKEN = 2004
    SERVER_ERROR = 3000


CiString2 = Annotated[str, Field(min_length=2, max_length=2)]
CiString3 = Annotated[str, Field(min_length=3, max_length=3)]
CiString36 = Annotated[str, Field(min_length=1, max_length=36)]


class OcpiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


def ocpi_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (types.asciidoc DateTime: string(25), fractions allowed)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return text + "Z"


def parse_ocpi_datetime(text: str) -> datetime:
    """A DateTime parameter: RFC 3339, UTC when no zone is given. ``ValueError`` when not one."""
    if len(text) > 32 or "T" not in text:
        raise ValueError("not an RFC 3339 date-time")
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TokenType(enum.StrEnum):
    AD_HOC_USER = "AD_HOC_USER"
    APP_USER = "APP_USER"
    OTHER = "OTHER"
    RFID = "RFID"


class WhitelistType(enum.StrEnum):
    ALWAYS = "ALWAYS"
    ALLOWED = "ALLOWED"
    ALLOWED_OFFLINE = "ALLOWED_OFFLINE"
    NEVER = "NEVER"


class AllowedType(enum.StrEnum):
    ALLOWED = "ALLOWED"
    BLOCKED = "BLOCKED"
    EXPIRED = "EXPIRED"
    NO_CREDIT = "NO_CREDIT"
    NOT_ALLOWED = "NOT_ALLOWED"


class ProfileType(enum.StrEnum):
    CHEAP = "CHEAP"
    FAST = "FAST"
    GREEN = "GREEN"
    REGULAR = "REGULAR"


class InterfaceRole(enum.StrEnum):
    SENDER = "SENDER"
    RECEIVER = "RECEIVER"


class DisplayText(OcpiModel):
    language: str = Field(min_length=2, max_length=2)
    text: str = Field(max_length=512)


class EnergyContract(OcpiModel):
    supplier_name: str = Field(max_length=64)
    contract_id: str | None = Field(default=None, max_length=64)


class LocationReferences(OcpiModel):
    location_id: CiString36
    evse_uids: list[CiString36] = Field(default_factory=list)


class Token(OcpiModel):
    country_code: CiString2
    party_id: CiString3
    uid: CiString36
    type: TokenType
    contract_id: CiString36
    visual_number: str | None = Field(default=None, max_length=64)
    issuer: str = Field(max_length=64)
    group_id: CiString36 | None = None
    valid: bool
    whitelist: WhitelistType
    language: str | None = Field(default=None, min_length=2, max_length=2)
    default_profile_type: ProfileType | None = None
    energy_contract: EnergyContract | None = None
    last_updated: datetime

    @field_serializer("last_updated")
    def _last_updated(self, value: datetime) -> str:
        return ocpi_datetime(value)


class AuthorizationInfo(OcpiModel):
    allowed: AllowedType
    token: Token
    location: LocationReferences | None = None
    authorization_reference: CiString36 | None = None
    info: DisplayText | None = None


class Version(OcpiModel):
    version: str
    url: str


class Endpoint(OcpiModel):
    identifier: str
    role: InterfaceRole
    url: str


class VersionDetails(OcpiModel):
    version: str
    endpoints: list[Endpoint] = Field(min_length=1)


DataT = TypeVar("DataT")


class Envelope(OcpiModel, Generic[DataT]):
    """The response format of every OCPI answer (transport_and_format.asciidoc)."""

    data: DataT | None = None
    status_code: int = Field(ge=1000, le=4999)
    status_message: str | None = None
    timestamp: datetime

    @field_serializer("timestamp")
    def _timestamp(self, value: datetime) -> str:
        return ocpi_datetime(value)


def authorization_json(info: AuthorizationInfo, *, now: datetime) -> bytes:
    """The success envelope of an AuthorizationInfo as JSON, serialised by pydantic in one pass
    (None fields left out): the real-time authorisation's answer."""
    answer = _AuthorizationEnvelope.model_construct(data=info, status_code=int(Status.SUCCESS), timestamp=now)
    return answer.model_dump_json(exclude_none=True).encode()


def envelope(data: object, status: Status, message: str | None, *, now: datetime) -> dict[str, object]:
    """The envelope as JSON-ready data (``data`` left out when None, as for 2004)."""
    body: dict[str, object] = {"status_code": int(status), "timestamp": ocpi_datetime(now)}
    if data is not None:
        body["data"] = data
    if message is not None:
        body["status_message"] = message
    return body


_AuthorizationEnvelope = Envelope[AuthorizationInfo]


# -- tokens ------------------------------------------------------------------------------------------


def _token_rows() -> Select[ChargingCard, ChargingContract]:
    return select(ChargingCard, ChargingContract).join(
        ChargingContract, ChargingContract.id == ChargingCard.contract_id
    )


def card_is_valid(card: ChargingCard, contract: ChargingContract) -> bool:
    return card.state in VALID_CARD_STATES and contract.ended_at is None


def token_of(card: ChargingCard, contract: ChargingContract, settings: Settings) -> Token:
    valid = card_is_valid(card, contract)
    return Token(
        country_code=settings.emsp_country_code,
        party_id=settings.emsp_party_id,
        uid=card.uid,
        type=TokenType.RFID,
        contract_id=contract.emaid,
        visual_number=card.visual_number,
        issuer=settings.brand_name[:64],
        valid=valid,
        whitelist=WhitelistType.ALLOWED_OFFLINE if valid else WhitelistType.NEVER,
        last_updated=card.last_updated,
    )


def tokens_for_cards(session: Session, settings: Settings, card_ids: list[int]) -> list[Token]:
    rows = session.execute(_token_rows().where(ChargingCard.id.in_(card_ids)).order_by(ChargingCard.id))
    return [token_of(card, contract, settings) for card, contract in rows]


@dataclass(frozen=True)
class TokenPage:
    tokens: list[Token]
    total: int
    offset: int
    limit: int
    last: tuple[datetime, int] | None  # the last token's (last_updated, card id): the next page's cursor
    remaining: int  # tokens after ``last``

    @property
    def has_next(self) -> bool:
        return self.remaining > 0


def list_tokens(
    session: Session,
    settings: Settings,
    *,
    date_from: datetime | None,
    date_to: datetime | None,
    offset: int,
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> TokenPage:
    """Tokens with ``date_from <= last_updated < date_to``, oldest first (ties by id: a stable order).

    A token that changes while a client walks the pages gets a new ``last_updated`` and moves to the
    end of the order (or out of a ``date_to`` window): the client sees it on a later page (or, with
    ``date_to``, notices the lower ``X-Total-Count``).

    Offsets alone would then skip the token that slid into the page already read (every later token
    moves up by one). So the ``Link`` we hand out also carries ``after`` (the last token's
    ``last_updated`` and id): the next page starts right after it whatever moved meanwhile, and a
    changed token is delivered again, in its new state, at the end. ``offset`` is honoured when a
    client builds its own URL without ``after``."""
    limit = max(1, min(limit, MAX_LIMIT))
    conditions = []
    if date_from is not None:
        conditions.append(ChargingCard.last_updated >= date_from)
    if date_to is not None:
        conditions.append(ChargingCard.last_updated < date_to)
    where = and_(True, *conditions)
    total = session.scalar(select(func.count()).select_from(ChargingCard).where(where)) or 0
    query = _token_rows().where(where).order_by(ChargingCard.last_updated, ChargingCard.id).limit(limit)
    if after is not None:
        at, card_id = after
        query = query.where(
            or_(
                ChargingCard.last_updated > at,
                and_(ChargingCard.last_updated == at, ChargingCard.id > card_id),
            )
        )
        rows = session.execute(query)
    else:
        rows = session.execute(query.offset(offset))
    found = [(row[0], row[1]) for row in rows]
    tokens = [token_of(card, contract, settings) for card, contract in found]
    last = (found[-1][0].last_updated, found[-1][0].id) if found else after
    remaining = 0
    if last is not None and found:
        at, card_id = last
        remaining = (
            session.scalar(
                select(func.count())
                .select_from(ChargingCard)
                .where(
                    where,
                    or_(
                        ChargingCard.last_updated > at,
                        and_(ChargingCard.last_updated == at, ChargingCard.id > card_id),
                    ),
                )
            )
            or 0
        )
    return TokenPage(tokens=tokens, total=total, offset=offset, limit=limit, last=last, remaining=remaining)


def cursor_text(last: tuple[datetime, int]) -> str:
    at = last[0].astimezone(UTC) if last[0].tzinfo is not None else last[0]
    return f"{at.replace(tzinfo=None).isoformat(timespec='microseconds')}Z_{last[1]}"


def parse_cursor(text: str) -> tuple[datetime, int]:
    at, _, card_id = text.partition("_")
    if not (card_id.isascii() and card_id.isdigit()) or len(card_id) > 12:
        raise ValueError("after: a cursor from a Link header")
    return parse_ocpi_datetime(at), int(card_id)


# Built once: the real-time authorisation is the operators' hot path. The caller's credentials and
# the token are read in one statement (the party, left-joined to the card): one round trip, and an
# operator's revocation or a card's blocking counts from the next call, with nothing cached.
AUTHORIZATION = (
    select(
        OcpiParty.id,
        OcpiParty.revoked_at,
        OcpiParty.token_hash,
        ChargingCard.uid,
        ChargingCard.state,
        ChargingCard.visual_number,
        ChargingCard.last_updated,
        ChargingContract.emaid,
        ChargingContract.ended_at,
    )
    .select_from(OcpiParty)
    .outerjoin(ChargingCard, ChargingCard.uid == bindparam("uid"))
    .outerjoin(ChargingContract, ChargingContract.id == ChargingCard.contract_id)
    .where(OcpiParty.token_hash.in_([bindparam("token_hash"), bindparam("raw_token_hash")]))
    # Two rows only if the header's decoded and raw forms are two parties' tokens: the decoded wins.
    .order_by((OcpiParty.token_hash == bindparam("token_hash")).desc())
    .limit(1)
)


def allowed_for(card_state: str, contract_ended: bool) -> AllowedType:
    if card_state in BLOCKED_CARD_STATES:
        return AllowedType.BLOCKED
    if contract_ended:
        return AllowedType.EXPIRED
    if card_state not in VALID_CARD_STATES:
        return AllowedType.NOT_ALLOWED
    return AllowedType.ALLOWED


@dataclass(frozen=True)
class Authorization:
    party_id: int  # the calling operator
    info: AuthorizationInfo | None  # None: we do not know the token (HTTP 404, OCPI 2004)


def authorization_parameters(
    settings: Settings, authorization_header: str | None, uid: str, type: TokenType
) -> dict[str, str] | None:
    """The parameters of ``AUTHORIZATION`` for this call; None when it presents no credentials."""
    hashes = _credential_hashes(authorization_header, settings)
    if hashes is None:
        return None
    # Only RFID cards are ours; another type or an impossible uid matches no card.
    card_uid = uid.upper() if type is TokenType.RFID and len(uid) <= 14 else ""
    return {"uid": card_uid, "token_hash": hashes[0], "raw_token_hash": hashes[1]}


def authorization_of(
    row: Any,
    settings: Settings,
    location_references: LocationReferences | None,
) -> Authorization | None:
    """The answer to a real-time authorisation from its ``AUTHORIZATION`` row; None when the
    caller's credentials are unknown or revoked.

    We have no location restrictions (the spec: the eMSP shall not judge a location by its opening
    hours or EVSE state), so a valid card is ALLOWED at any location, returned with all its EVSEs."""
    if row is None or row.revoked_at is not None:
        return None
    if row.uid is None:
        return Authorization(row.id, None)
    allowed = allowed_for(row.state, row.ended_at is not None)
    valid = allowed is AllowedType.ALLOWED
    # Built without validation: every value is ours, of the column types the model was written for.
    token = Token.model_construct(
        country_code=settings.emsp_country_code,
        party_id=settings.emsp_party_id,
        uid=row.uid,
        type=TokenType.RFID,
        contract_id=row.emaid,
        visual_number=row.visual_number,
        issuer=settings.brand_name[:64],
        valid=valid,
        whitelist=WhitelistType.ALLOWED_OFFLINE if valid else WhitelistType.NEVER,
        last_updated=row.last_updated,
    )
    info = AuthorizationInfo.model_construct(
        allowed=allowed, token=token, location=location_references if valid else None
    )
    return Authorization(row.id, info)


def authorize(
    connection: Connection,
    settings: Settings,
    authorization_header: str | None,
    uid: str,
    type: TokenType,
    location_references: LocationReferences | None,
) -> Authorization | None:
    """``authorization_parameters``, the statement and ``authorization_of`` on a connection."""
    parameters = authorization_parameters(settings, authorization_header, uid, type)
    if parameters is None:
        return None
    row = connection.execute(AUTHORIZATION, parameters).first()
    return authorization_of(row, settings, location_references)


# -- credentials -------------------------------------------------------------------------------------


def add_party(
    session: Session,
    settings: Settings,
    *,
    country_code: str,
    party_id: str,
    name: str,
    tokens_url: str | None,
    their_token: str | None,
    now: datetime,
) -> tuple[OcpiParty, str]:
    """Register a charge-point operator: returns the party and the credentials token it will present
    (shown once; only its SHA-256 is stored). ``their_token`` (the token the operator gave us for its
    endpoints) is kept sealed for the pushes."""
    country_code, party_id = country_code.strip().upper(), party_id.strip().upper()
    if len(country_code) != 2 or not country_code.isalpha():
        raise ValueError("country code: two letters (ISO 3166-1 alpha-2)")
    if len(party_id) != 3 or not party_id.isalnum():
        raise ValueError("party id: three letters or digits")
    if not name.strip() or len(name) > 100:
        raise ValueError("name: 1 to 100 characters")
    if tokens_url is not None and not tokens_url.startswith(("https://", "http://")):
        raise ValueError("tokens URL: an http(s) URL")
    token = new_token()
    party = OcpiParty(
        country_code=country_code,
        party_id=party_id,
        name=name.strip(),
        token_hash=token_hash(token),
        tokens_url=tokens_url,
        their_token_sealed=(
            seal_text(settings.secret_key_value(), THEIR_TOKEN_PURPOSE, their_token) if their_token else None
        ),
        created_at=now,
    )
    session.add(party)
    session.flush()
    return party, token


def presented_token(header: str | None, settings: Settings) -> str | None:
    """The credentials token of an ``Authorization: Token <base64>`` header (unencoded accepted when
    configured: OCPI 2.2 and earlier clients send it raw)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "token" or not value or len(value) > 512:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = None
    if decoded and decoded.isprintable() and " " not in decoded:
        return decoded
    return value if settings.ocpi_accept_unencoded_tokens else None


def _credential_hashes(header: str | None, settings: Settings) -> tuple[str, str] | None:
    """The hashes to look the caller's credentials up by: the presented token's, and (where
    unencoded tokens are accepted) the header value's as it stands, which may itself have looked like
    base64; the first twice otherwise."""
    token = presented_token(header, settings)
    if token is None or header is None:
        return None
    first = token_hash(token)
    if not settings.ocpi_accept_unencoded_tokens:
        return first, first
    return first, token_hash(header.strip().partition(" ")[2].strip())


_PARTY_BY_TOKEN = select(OcpiParty.id, OcpiParty.revoked_at, OcpiParty.token_hash).where(
    OcpiParty.token_hash.in_([bindparam("token_hash"), bindparam("raw_token_hash")])
)


def party_for(connection: Connection, header: str | None, settings: Settings) -> int | None:
    """The id of the live party presenting this ``Authorization`` header, or None."""
    hashes = _credential_hashes(header, settings)
    if hashes is None:
        return None
    rows = connection.execute(_PARTY_BY_TOKEN, {"token_hash": hashes[0], "raw_token_hash": hashes[1]}).all()
    row = min(rows, key=lambda r: r.token_hash != hashes[0], default=None)
    if row is None or row.revoked_at is not None:
        return None
    party_id: int = row.id
    return party_id
