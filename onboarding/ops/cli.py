"""The ``onboarding`` command line (SPEC §4)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from onboarding.core.clock import utcnow
from onboarding.core.db import make_engine, make_session_factory, transaction
from onboarding.core.errors import ValidationFailed
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import get_settings
from onboarding.ops import all_models, migrations

# Tracebacks never print local variables: they may hold keys or personal data.
app = typer.Typer(
    help="Connected-services onboarding.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
orders_app = typer.Typer(help="Orders.", no_args_is_help=True)
scheduler_app = typer.Typer(help="Scheduled jobs.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for order systems.", no_args_is_help=True)
vehicles_app = typer.Typer(help="Vehicles and their users.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(orders_app, name="orders")
app.add_typer(scheduler_app, name="scheduler")
app.add_typer(keys_app, name="api-keys")
app.add_typer(vehicles_app, name="vehicles")
staff_app = typer.Typer(help="Staff portal accounts.", no_args_is_help=True)
app.add_typer(staff_app, name="staff")
accounts_app = typer.Typer(help="IDs (buyers' accounts).", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
ocpi_app = typer.Typer(help="OCPI 2.2.1 (charging).", no_args_is_help=True)
ocpi_parties_app = typer.Typer(help="Charge-point operators (OCPI parties).", no_args_is_help=True)
ocpi_app.add_typer(ocpi_parties_app, name="parties")
app.add_typer(ocpi_app, name="ocpi")


@app.callback()
def _every_command() -> None:
    # Jobs log like the server: JSON on stderr, personal data and secrets redacted.
    configure_logging()


def _factory() -> sessionmaker[Session]:
    assert all_models.TABLE_MODULES
    return make_session_factory(make_engine(get_settings().database_url))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Bring the database schema to the newest migration (creates a local SQLite file if needed)."""
    migrations.upgrade(get_settings().database_url, revision)
    typer.echo(f"Database at {revision}.")


# Addresses meaning "every interface": no one can open a link to them from another machine.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 (compared with, not bound to)


def _http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def local_base_url(host: str, port: int) -> str:
    """The public base URL of a server listening on ``host:port`` when none is configured: its own
    address (on this machine, for a server listening on every interface)."""
    return _http_url("127.0.0.1" if host in WILDCARD_HOSTS else host, port)


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    migrate: Annotated[bool, typer.Option(help="Run `db upgrade` first.")] = True,
    scheduler: Annotated[bool, typer.Option(help="Run the scheduled jobs in this process.")] = True,
) -> None:
    """Serve the web pages and APIs (and, by default, run the scheduler)."""
    import uvicorn

    from onboarding.ops.app import create_app

    settings = get_settings()
    configured = "public_base_url" in settings.model_fields_set and bool(settings.public_base_url.strip())
    if not configured:
        # Not configured: links in pages and emails (the scheduler's too) point at this server.
        settings = settings.model_copy(update={"public_base_url": local_base_url(host, port)})
    if migrate:
        migrations.upgrade(settings.database_url)
    url = settings.public_url
    typer.echo(f"Serving on {_http_url(host, port)}  (public base URL {url('')})")
    if not configured and host in WILDCARD_HOSTS:
        typer.echo("Links point at this machine: set ONBOARDING_PUBLIC_BASE_URL to the address others use.")
    if settings.dev_mailbox_enabled:
        typer.echo(f"No SMTP host configured: emails go to the development mailbox at {url('/dev/mailbox')}")
    if settings.sms_backend == "dev":
        typer.echo(f"No SMS gateway configured: text messages (codes) go to {url('/dev/sms')}")
    typer.echo(f"Log in or create an ID without an invitation: {url('/login')}, {url('/register')}")
    typer.echo(f"API documentation: {url('/api/docs')}")
    uvicorn.run(create_app(settings, run_scheduler=scheduler), host=host, port=port, log_level="warning")


@app.command()
def demo() -> None:
    """Seed demo dealers, models, an API key and orders at several distances from delivery."""
    from onboarding.ops.demo import seed_demo

    migrations.upgrade(get_settings().database_url)
    with transaction(_factory()) as session:
        summary = seed_demo(session, get_settings(), now=utcnow())
    for line in summary:
        typer.echo(line)


@orders_app.command("import")
def orders_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only; store nothing.")] = False,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the valid rows of a file with errors.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import orders from CSV. A file with any error imports nothing unless --skip-invalid."""
    import os

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from vehicles.csv_import import ImportProgress, import_orders_csv

    settings = get_settings()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=as_json,
    )
    tasks: dict[str, TaskID] = {}

    with open(file, "rb") as source, progress, transaction(_factory()) as session:

        def after_chunk(step: ImportProgress) -> None:
            # Each chunk is its own transaction: SQLite's write lock is held one chunk at a time.
            if step.may_commit:
                session.commit()
            if step.stage not in tasks:
                label = "Checking rows" if step.stage == "checking" else "Importing rows"
                tasks[step.stage] = progress.add_task(label, total=step.total)
            progress.update(tasks[step.stage], completed=step.done)

        report = import_orders_csv(
            session,
            source,
            now=utcnow(),
            actor=f"csv:{file.name}",
            lead_days=settings.invitation_lead_days,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            chunk_rows=settings.csv_import_chunk_rows,
            workers=settings.csv_import_workers or os.cpu_count() or 1,
            after_chunk=after_chunk,
        )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    **{k: v for k, v in vars(report).items() if k not in ("errors", "hints")},
                    "errors": [vars(e) for e in report.errors],
                    "hints": [vars(h) for h in report.hints],
                },
                indent=2,
            )
        )
    else:
        for error in report.errors:
            typer.echo(f"row {error.row}: {error.field}: {error.message}", err=True)
        for hint in report.hints:
            typer.echo(f"row {hint.row}: note: {hint.message}")
        verdict = (
            "dry run, nothing stored" if dry_run else ("imported" if report.imported else "nothing imported")
        )
        if report.errors_not_listed:
            typer.echo(f"... and {report.errors_not_listed} more errors", err=True)
        typer.echo(
            f"{report.rows} rows, {report.valid} valid, {report.error_count} errors; "
            f"{report.created} created, {report.updated} updated ({verdict})."
        )
    if report.error_count and not (skip_invalid and report.imported):
        raise typer.Exit(1)


@scheduler_app.command("run-once")
def run_once() -> None:
    """Run every due job once (invitations, reminders, outbox), then exit."""
    from onboarding.activation.jobs import run_due_jobs

    report = asyncio.run(run_due_jobs(_factory(), get_settings()))
    typer.echo(
        f"invited {report.invited}, reminders {report.reminded}, sent {report.sent}, failed {report.failed}"
    )


@ocpi_parties_app.command("add")
def ocpi_parties_add(
    country: Annotated[str, typer.Option(help="The operator's ISO 3166-1 alpha-2 country code.")],
    party: Annotated[str, typer.Option(help="The operator's three-character party id.")],
    name: Annotated[str, typer.Option(help="The operator's name.")],
    tokens_url: Annotated[
        str | None, typer.Option(help="The operator's Tokens receiver endpoint (for pushes).")
    ] = None,
    their_token: Annotated[
        str | None,
        typer.Option(help="The credentials token the operator gave us for its endpoints (kept sealed)."),
    ] = None,
) -> None:
    """Register a charge-point operator; its credentials token is printed once (only its hash is stored)."""
    from vehicles.charging.ocpi_2_2_1 import add_party

    try:
        with transaction(_factory()) as session:
            added, token = add_party(
                session,
                get_settings(),
                country_code=country,
                party_id=party,
                name=name,
                tokens_url=tokens_url,
                their_token=their_token,
                now=utcnow(),
            )
            label = f"{added.country_code}/{added.party_id} {added.name}"
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"OCPI credentials token for {label}; give it to the operator now, it is not shown again:", err=True
    )
    typer.echo(token)


@keys_app.command("create")
def api_keys_create(
    name: str,
    country: Annotated[
        list[str] | None, typer.Option(help="Limit the key to these markets (repeatable).")
    ] = None,
    scope: Annotated[
        str, typer.Option(help="What the key may call: order_system, or card_supplier (card states only).")
    ] = "order_system",
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from onboarding.api.keys import create_api_key

    try:
        with transaction(_factory()) as session:
            key, plaintext = create_api_key(session, name, now=utcnow(), countries=country, scope=scope)
    except ValidationFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    markets = ", ".join(key.countries) if key.countries else "all markets"
    typer.echo(
        f"API key ({key.scope}) for {key.name} ({markets}); store it now, it is not shown again:", err=True
    )
    typer.echo(plaintext)


@vehicles_app.command("provision")
def vehicles_provision(vin: str) -> None:
    """Provision the car's OAuth client credential (SPEC §3.7), or rotate it (the old secret stops
    working at once). The secret is printed once; only its hash is stored. Audited as "cli"."""
    from vehicles.incar.clients import provision

    try:
        with transaction(_factory()) as session:
            client, secret = provision(session, vin, now=utcnow(), actor="cli")
            client_id, rotated = client.client_id, client.rotated_at is not None
    except ValidationFailed as exc:
        for error in exc.errors:
            typer.echo(f"{error.field}: {error.text}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"client_id: {client_id}")
    typer.echo(f"client_secret: {secret}")
    typer.echo("Rotated: the old secret no longer works." if rotated else "Provisioned.")
    typer.echo("The secret is shown only now; store it in the vehicle.")


@vehicles_app.command("transfer")
def vehicles_transfer(
    vin: str,
    to: Annotated[str, typer.Option("--to", help="The login email of the new owner's ID.")],
) -> None:
    """Replace the primary user (a used car's new owner): every current user is removed and told by
    email, open invitations are withdrawn, the new owner becomes the primary user. Audited as "cli"."""
    from vehicles.secondary import transfer

    settings = get_settings()
    try:
        with transaction(_factory()) as session:
            done = transfer(session, settings, vin, to, now=utcnow(), actor="cli")
            removed = [(link.account_id, link.role) for link in done.ended]
            summary = (done.vehicle.vin, done.new_primary.email, done.revoked_invitations)
    except ValidationFailed as exc:
        for error in exc.errors:
            typer.echo(f"{error.field}: {error.text}", err=True)
        raise typer.Exit(1) from exc
    vehicle_vin, new_email, revoked = summary
    typer.echo(f"Vehicle {vehicle_vin}: primary user is now {new_email}.")
    for account_id, role in removed:
        typer.echo(f"Removed {role} user (ID #{account_id}); notified by email.")
    typer.echo(f"Ended {len(removed)} links, withdrew {revoked} open invitations.")


@accounts_app.command("block")
def accounts_block(
    email: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept on the ID and in the audit log).")],
) -> None:
    """Block an ID: it can no longer sign in, its sessions and in-car logins end, and its charging
    cards are blocked (operators are told). Audited as "cli"."""
    from onboarding.identity import account_blocking
    from onboarding.identity.accounts import find_account

    with transaction(_factory()) as session:
        account = find_account(session, email)
        if account is None:
            typer.echo(f"email: no ID has the address {email!r}.", err=True)
            raise typer.Exit(1)
        try:
            done = account_blocking.block(session, account, reason=reason, actor="cli", now=utcnow())
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"ID {account.email} blocked." if done else f"ID {account.email} was blocked already.")


@accounts_app.command("unblock")
def accounts_unblock(email: str) -> None:
    """Let a blocked ID sign in again (what ended stays ended: cards are booked again). Audited."""
    from onboarding.identity import account_blocking
    from onboarding.identity.accounts import find_account

    with transaction(_factory()) as session:
        account = find_account(session, email)
        if account is None:
            typer.echo(f"email: no ID has the address {email!r}.", err=True)
            raise typer.Exit(1)
        done = account_blocking.unblock(session, account, actor="cli", now=utcnow())
    typer.echo(f"ID {account.email} unblocked." if done else f"ID {account.email} was not blocked.")


@staff_app.command("create")
def staff_create(
    email: str,
    role: Annotated[
        str, typer.Option("--role", help="dealer_agent, dealer_admin, market_agent or platform_admin.")
    ],
    name: Annotated[str, typer.Option("--name", help="The staff member's name.")],
    dealer: Annotated[str | None, typer.Option("--dealer", help="The dealer code (dealer roles).")] = None,
    country: Annotated[str | None, typer.Option("--country", help="The country (market agents).")] = None,
    language: Annotated[str, typer.Option("--language", help="en, de, sv or nb.")] = "en",
    print_link: Annotated[
        bool, typer.Option("--print-link", help="Also print the invitation link (it is a credential).")
    ] = False,
) -> None:
    """Create a staff account and email its invitation (valid 72 hours): the staff member chooses a
    password, then sets up an authenticator app at the first login. Audited as "cli"."""
    from onboarding.portal import staff as staff_service

    settings = get_settings()
    try:
        with transaction(_factory()) as session:
            now = utcnow()
            staff, token = staff_service.create_staff(
                session,
                email=email,
                name=name,
                role=role,
                dealer_code=dealer,
                country=country,
                language=language,
                creator=None,
                now=now,
            )
            staff_service.send_invitation(session, settings, staff, token, now=now)
            address = staff.email
    except ValidationFailed as exc:
        for error in exc.errors:
            typer.echo(f"{error.field}: {error.text}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Staff account {address} ({role}) created; the invitation email is queued.")
    if print_link:
        typer.echo(staff_service.invitation_link(settings, token))


@staff_app.command("reinvite")
def staff_reinvite(
    email: str,
    print_link: Annotated[
        bool, typer.Option("--print-link", help="Also print the invitation link (it is a credential).")
    ] = False,
) -> None:
    """A fresh start for a staff account (a forgotten password, a lost authenticator, a deactivated
    account): its password, authenticator and sessions stop working now and a new invitation is
    emailed. Audited as "cli"."""
    from onboarding.portal import staff as staff_service

    settings = get_settings()
    with transaction(_factory()) as session:
        staff = staff_service.find_staff(session, email)
        if staff is None:
            typer.echo(f"email: no staff member has the address {email!r}.", err=True)
            raise typer.Exit(1)
        now = utcnow()
        token = staff_service.reinvite(session, staff, by=None, now=now)
        staff_service.send_invitation(session, settings, staff, token, now=now)
        address = staff.email
    typer.echo(
        f"Staff account {address}: a new invitation email is queued; the old password no longer works."
    )
    if print_link:
        typer.echo(staff_service.invitation_link(settings, token))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
