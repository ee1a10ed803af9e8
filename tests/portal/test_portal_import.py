"""CSV import in the portal: the upload is checked first (a dry run in the background, its progress on
the page), the report lists each bad row and field as a table and stores nothing; a clean file is
then imported from the same upload. The rules are the CLI's, within the staff member's dealer; an
empty upload names the field; another staff member cannot see the job."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from onboarding.core.db import transaction
from onboarding.core.settings import Settings
from onboarding.ops.app import create_app
from onboarding.portal import imports
from onboarding.portal.models import PortalImport, StaffMember
from tests.conftest import NOW, Database
from tests.helpers import csrf
from tests.portal.portal_support import add_dealer, make_staff, signed_in_staff
from vehicles.models import Order

HEADER = (
    "order_number,dealer_code,model_code,vin,buyer_first_name,buyer_last_name,buyer_email,buyer_phone,"
    "country,language,planned_delivery_date\n"
)


def _row(number: str, dealer: str = "SE-01", email: str = "kim@example.com") -> str:
    return f"{number},{dealer},E40,,Kim,Berg,{email},+46701234567,SE,sv,2027-05-01\n"


def _finished(client: TestClient, url: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page = client.get(url)
        assert page.status_code == 200
        state = re.search(r'data-state="(\w+)"', page.text)
        assert state is not None
        if state.group(1) in ("done", "failed"):
            assert state.group(1) == "done", page.text
            text: str = page.text
            return text
        assert '<meta http-equiv="refresh"' in page.text  # the page refreshes itself while it runs
        time.sleep(0.1)
    raise AssertionError("the import did not finish in 20 s")


def _orders(db: Database) -> int:
    with db.factory() as session:
        return int(session.scalar(select(func.count()).select_from(Order)) or 0)


def test_dry_run_report_then_import(db: Database, settings: Settings, reference: None) -> None:
    add_dealer(db.factory, "SE-02", "SE")
    _id, secret = make_staff(
        db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01", enrolled_with=settings
    )
    _other, other_secret = make_staff(
        db.factory, "agent@se02.example", "dealer_agent", dealer="SE-02", enrolled_with=settings
    )
    app = create_app(settings, session_factory=db.factory)
    with TestClient(app) as client, TestClient(app) as other:
        signed_in_staff(client, "agent@se01.example", secret)
        signed_in_staff(other, "agent@se02.example", other_secret)

        empty = client.post(
            "/portal/import", data=csrf(client), files={"file": ("orders.csv", b"", "text/csv")}
        )
        assert empty.status_code == 422 and 'id="file-error"' in empty.text

        bad_file = HEADER + _row("P-1") + _row("P-2", email="not-an-address") + _row("P-3", dealer="SE-02")
        checked = client.post(
            "/portal/import",
            data=csrf(client),
            files={"file": ("orders.csv", bad_file.encode(), "text/csv")},
            follow_redirects=False,
        )
        assert checked.status_code == 303
        job_url = checked.headers["location"]
        report = _finished(client, job_url)
        rows = re.findall(r"<tr><td>(\d+)</td><td>([\w_]+)</td><td>", report)
        assert (
            ("3", "buyer_email") in rows
            and ("4", "dealer_code") in rows
            and not any(r == "2" for r, _f in rows)
        )
        assert 'action="/portal/import/' not in report  # no import from a file with errors
        assert _orders(db) == 0
        assert other.get(job_url).status_code == 404  # another staff member's job

        good_file = HEADER + _row("P-1") + _row("P-2", email="lo@example.com")
        checked = client.post(
            "/portal/import",
            data=csrf(client),
            files={"file": ("good.csv", good_file.encode(), "text/csv")},
            follow_redirects=False,
        )
        report = _finished(client, checked.headers["location"])
        assert _orders(db) == 0  # a check stores nothing
        run = re.search(r'action="(/portal/import/\d+/run)"', report)
        assert run is not None
        started = client.post(run.group(1), data=csrf(client), follow_redirects=False)
        assert started.status_code == 303
        done = _finished(client, started.headers["location"])
        assert 'data-dry-run="no"' in done
        with db.factory() as session:
            assert sorted(
                session.scalars(select(Order.order_number).where(Order.dealer_code == "SE-01"))
            ) == ["P-1", "P-2"]
        # The checked file was imported once: asking again changes nothing.
        client.post(run.group(1), data=csrf(client))
        assert _orders(db) == 2


def test_two_clicks_on_import_start_one_import(db: Database, settings: Settings, reference: None) -> None:
    """The checked file is claimed by a conditional update: two requests at once make one import."""
    staff_id, _ = make_staff(db.factory, "agent@se01.example", "dealer_agent", dealer="SE-01")
    with transaction(db.factory) as session:
        staff = session.get(StaffMember, staff_id)
        assert staff is not None
        checked = imports.create(
            session, staff, file_name="a.csv", stored_path="/nowhere/a.csv", dry_run=True, now=NOW
        )
        checked.state, checked.report = imports.DONE, {"error_count": 0}
        checked_id = checked.id
    barrier = threading.Barrier(2)

    def click() -> int | None:
        barrier.wait(timeout=10)
        with transaction(db.factory) as session:
            staff = session.get(StaffMember, staff_id)
            checked = session.get(PortalImport, checked_id)
            assert staff is not None and checked is not None
            job = imports.import_checked(session, staff, checked, now=NOW)
            return job.id if job else None

    with ThreadPoolExecutor(2) as pool:
        started = [f.result(timeout=60) for f in [pool.submit(click), pool.submit(click)]]
    assert sum(job is not None for job in started) == 1
    with db.factory() as session:
        imports_started = session.scalars(select(PortalImport).where(PortalImport.dry_run.is_(False))).all()
        assert [(j.stored_path, j.state) for j in imports_started] == [("/nowhere/a.csv", "queued")]
