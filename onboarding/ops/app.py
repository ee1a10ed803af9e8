"""The application factory."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboarding.activation import (
    car_pages,
    charging_pages,
    consent_pages,
    pages,
    pairing_pages,
    secondary_pages,
    vehicle_pages,
)
from onboarding.api import routes as api_routes
from onboarding.core.db import PointReads, engine_of, make_engine, make_session_factory
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import Settings, get_settings
from onboarding.identity import account_pages
from onboarding.identity import pages as auth_pages
from onboarding.identity.ratelimit import RateLimits
from onboarding.ops import all_models, mailbox_pages
from onboarding.ops.scheduler import start_background
from onboarding.portal import pages as portal_pages
from onboarding.web.admission import admission_for
from onboarding.web.problems import EXCEPTION_HANDLERS, openapi_with_problems
from onboarding.web.request_context import RequestContext
from onboarding.web.transactions import AdmitApiRequests
from onboarding.web.url_rules import UrlTextRules
from vehicles.charging import ocpi_push, ocpi_routes
from vehicles.incar import pages as incar_pages
from vehicles.incar import routes as incar_routes
from vehicles.incar import vehicle_routes as incar_vehicle_routes

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",  # invitation links carry a token; never leak it onwards
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}

# The API documentation (Swagger UI 5, which renders OpenAPI 3.1) is served from the files the
# ``fastapi-offline`` package bundles: no CDN, so it works offline and under the policy above. Outside
# ``/api/`` so that its scripts never wait for a database slot (``AdmitApiRequests``).
DOCS_URL = "/api/docs"
DOCS_ASSETS_URL = "/static/swagger-ui"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
FAVICON = (files("onboarding.web") / "static" / "favicon.svg").read_bytes()


# Pages with links, codes or personal data: never kept by a browser or proxy cache.
NO_STORE_PREFIXES = ("/i/", "/activate", "/login", "/logout", "/register", "/password", "/account", "/portal")


class SecurityHeaders:
    """Adds the security headers (and ``no-store`` under ``NO_STORE_PREFIXES``) to every HTTP response.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs each
    request through an extra task and memory streams, a measurable share of a cheap request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = scope["path"].startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers.append(name, value)
                if no_store:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def api_docs_page(title: str, openapi_url: str) -> tuple[bytes, str]:
    """FastAPI's Swagger UI page on the bundled assets, and its Content-Security-Policy: the page's one
    inline script (the ``SwaggerUIBundle`` call) is allowed by its hash on this page alone; every other
    page keeps ``script-src 'self'``."""
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
    )
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    return bytes(page.body), f"{CONTENT_SECURITY_POLICY}; script-src 'self' {hashes}"


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    run_scheduler: bool = False,
) -> FastAPI:
    assert all_models.TABLE_MODULES
    settings = settings or get_settings()
    configure_logging()
    ocpi_push.install(settings)  # the OCPI push signs with this instance's settings
    factory = session_factory or make_session_factory(
        make_engine(
            settings.database_url,
            sqlite_busy_seconds=settings.sqlite_request_busy_seconds,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = start_background(factory, settings) if run_scheduler else None
        app.state.background_jobs = scheduler
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            await app.state.point_reads.dispose()

    app = FastAPI(
        title=f"{settings.brand_name} onboarding",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below, from the bundled Swagger UI
        redoc_url=None,
        # No OpenTelemetry here (logs are structlog's): spares every request FastAPI's provider checks.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.session_factory = factory
    app.state.admission = admission_for(settings, engine_of(factory))
    app.state.point_reads = PointReads(engine_of(factory), app.state.admission.capacity)
    app.state.rate_limits = RateLimits.from_settings(settings)
    for exc_type, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)

    # Correlation ids, the body size limit (413), and a 500 problem for an unexpected error.
    app.add_middleware(UrlTextRules)  # a query parameter the text rule refuses: 422, or a page without it
    app.add_middleware(AdmitApiRequests)  # API requests queue here, inside the two below
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.max_body_bytes,
        upload_paths=(portal_pages.UPLOAD_PATH,),
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(SecurityHeaders)
    app.openapi = openapi_with_problems(app)  # type: ignore[method-assign]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The pages' icon (web/base.html links it; browsers that ask for /favicon.ico get it too).
    @app.get("/favicon.svg", include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(
            FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
        )

    docs_body, docs_policy = api_docs_page(f"{app.title} API", app.openapi_url or "/openapi.json")

    @app.get(DOCS_URL, include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(docs_body, headers={"Content-Security-Policy": docs_policy})

    app.mount(DOCS_ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="swagger-ui")
    # Operators' real-time authorisations are the latency-bound path; routes are matched in order.
    app.include_router(ocpi_routes.router)
    app.include_router(api_routes.router)
    app.include_router(pages.router)
    app.include_router(consent_pages.router)
    app.include_router(car_pages.router)
    app.include_router(vehicle_pages.router)
    app.include_router(secondary_pages.router)
    app.include_router(pairing_pages.router)
    app.include_router(charging_pages.router)
    app.include_router(incar_routes.router)
    app.include_router(incar_vehicle_routes.router)
    app.include_router(incar_pages.router)
    app.include_router(portal_pages.router)
    app.include_router(auth_pages.router)
    app.include_router(account_pages.router)
    app.include_router(mailbox_pages.router)
    return app
