"""Configuration from environment variables prefixed ``ONBOARDING_``.

Defaults serve a local run: a SQLite file under ``var/``, the development mailbox and SMS outbox.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class DataPassProvider(BaseModel):
    name: str
    url: str


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONBOARDING_", env_file=".env", extra="ignore")

    database_url: str = f"sqlite:///{VAR_DIR / 'onboarding.core.db'}"
    public_base_url: str = "http://127.0.0.1:8000"
    # Keys invitation links' sealed copies and the outbox's encrypted payloads. Without one a local
    # run generates a key file under var/ (see ``secret_key_value``); production must set it.
    secret_key: SecretStr | None = None

    brand_name: str = "Nordlicht Motors"
    brand_mail_domain: str = "nordlicht-motors.example"
    brand_primary_colour: str = "#0b3d2e"
    mail_from: str = "Nordlicht Motors <no-reply@nordlicht-motors.example>"

    # No SMTP host: mail goes to the development mailbox (``/dev/mailbox``).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 30.0
    smtp_concurrency: int = 8

    sms_backend: str = "dev"  # "dev" (development outbox) or "http" (JSON gateway)
    sms_http_url: str | None = None
    sms_http_timeout_seconds: float = 10.0
    sms_sender_name: str = "Nordlicht"
    # Rate limits (``limits`` notation) live in memory, or in Redis when set so instances share them.
    redis_url: str | None = None
    rate_limit_namespace: str = "onboarding"
    rate_limit_login_per_ip: str = "30/minute;300/hour"
    rate_limit_login_per_account: str = "20/minute;100/hour"
    rate_limit_email_per_ip: str = "10/minute;50/hour"
    rate_limit_email_per_address: str = "3/minute;10/hour"
    # Only behind a proxy that sets it: the client address is then the last X-Forwarded-For hop.
    trust_forwarded_for: bool = False

    session_idle_minutes: int = 60
    session_max_hours: int = 12
    lockout_failures: int = 10
    lockout_minutes: int = 120
    password_reset_valid_minutes: int = 60
    email_verification_valid_hours: int = 72
    email_change_valid_hours: int = 24
    sms_code_valid_minutes: int = 10
    sms_code_max_failures: int = 5
    sms_resend_seconds: int = 60
    sms_max_sends_per_hour: int = 5
    pin_max_failures: int = 3

    # The requests' connection pool and admission (onboarding/admission.py): a request holds at most
    # one connection, and no more requests hold a session than the pool has connections, so none
    # waits for a connection. The rest queue briefly; beyond that they are answered 503 at once.
    db_pool_size: int = 10
    db_max_overflow: int = 5  # spare connections, e.g. for a request's messages sent after its response
    requests_in_flight: int | None = None  # requests holding a database session; None: db_pool_size
    requests_waiting: int = 1000  # requests queued for a slot; more are answered 503 at once
    request_queue_seconds: float = 10.0  # longest wait for a slot before 503
    # How long a request's write waits for SQLite's single write lock before it answers 503.
    sqlite_request_busy_seconds: float = 5.0
    scheduler_db_pool_size: int = 4  # the scheduler's own pool: requests never take its connections

    # Request bodies larger than this are answered 413 before being read whole.
    max_body_bytes: int = 1024 * 1024
    # The staff portal's CSV upload (``/portal/import``), the one request allowed a large body.
    max_upload_bytes: int = 200 * 1024 * 1024

    invitation_lead_days: int = 14
    invitation_valid_days: int = 14
    invitation_reminder_days: int = 7
    scheduler_interval_seconds: int = 20
    scheduler_batch_size: int = 1000
    outbox_max_attempts: int = 20
    # How long a claimed message is reserved for its sender; a living sender renews it every third
    # of this, so it only bounds how soon a dead process's claims are taken over.
    outbox_lease_seconds: int = 60
    # At most this many messages per process handed to the mail server and not yet recorded as
    # sent: the most a crash can send twice. Unset: ``smtp_concurrency``. Larger values let
    # outcomes be stored in larger groups (less database work per message).
    outbox_unrecorded_limit: int | None = None

    # CSV import (vehicles/csv_import.py): rows per committed chunk (SQLite's write lock is held for
    # one chunk at a time), and processes checking a large file's rows (None: one per CPU).
    csv_import_chunk_rows: int = 1000
    csv_import_workers: int | None = None

    terms_version: str = "2026-01"
    privacy_version: str = "2026-01"
    default_language: str = "en"
    # Minimum age for an ID; per-country exceptions, e.g. China (SPEC §3.2).
    minimum_age: int = 16
    minimum_age_by_country: dict[str, int] = {"CN": 14}

    # The Data Pass's mobile network provider per country (SPEC §3.4): the name shown and the page where
    # the buyer registers. JSON in the environment; the defaults are the demo brand's fictional ones.
    data_pass_providers: dict[str, DataPassProvider] = {
        "SE": DataPassProvider(name="Nordnet Mobil", url="https://datapass.nordnet-mobil.example/se"),
        "NO": DataPassProvider(name="Nordnet Mobil", url="https://datapass.nordnet-mobil.example/no"),
        "DE": DataPassProvider(name="Funkwerk Daten", url="https://datapass.funkwerk-daten.example/de"),
    }
    # Countries where the buyer can follow the order's production status ("track your car").
    order_tracking_countries: frozenset[str] = frozenset({"SE", "NO", "DE"})
    # Secondary users per vehicle, and how long their SMS code is valid (SPEC §3.5).
    secondary_users_max: int = 5
    secondary_code_valid_hours: int = 12
    secondary_invitation_valid_days: int = 14

    # The in-car API (SPEC §3.7): device logins, tokens, the retry grace of a rotated refresh token,
    # pairing codes.
    device_code_valid_minutes: int = 10
    device_poll_interval_seconds: int = 5
    incar_access_token_minutes: int = 10
    incar_refresh_token_days: int = 90
    incar_refresh_retry_seconds: int = 30
    pairing_code_valid_minutes: int = 10
    # The OAuth endpoints per client address and per vehicle client (a car polls every 5 s and
    # refreshes every few minutes; many cars may share a carrier's address).
    rate_limit_incar_per_ip: str = "1200/minute"
    rate_limit_incar_per_client: str = "60/minute;1200/hour"

    # The charging service (SPEC §3.6): the eMSP's identity in eMAIDs and OCPI (ISO 3166 country, a
    # 3-character provider/party id), card delivery, and OCPI 2.2.1's allowance for unencoded tokens.
    emsp_country_code: str = "SE"
    emsp_party_id: str = "NLM"
    charging_card_delivery_days: int = 10
    ocpi_accept_unencoded_tokens: bool = False
    # Requests per registered operator (real-time authorisations come at the operator's pace).
    rate_limit_ocpi_per_party: str = "1000/second"

    @property
    def dev_mailbox_enabled(self) -> bool:
        return not self.smtp_host

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")

    @property
    def unrecorded_limit(self) -> int:
        return self.outbox_unrecorded_limit or self.smtp_concurrency

    def public_url(self, path: str) -> str:
        """The address of ``path`` (``/…``) as people reach the service: for links in emails and SMS."""
        return self.public_base_url.rstrip("/") + path

    def secret_key_value(self) -> str:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return _local_secret_key()


@lru_cache(maxsize=1)
def _local_secret_key() -> str:
    # A per-checkout key so a local run works out of the box; never used when the key is configured.
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
