"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboarding.activation import pages
from onboarding.api import routes as api_routes
from onboarding.core.db import engine_of, make_engine, make_session_factory
from onboarding.core.logconfig import configure_logging
from onboarding.core.settings import Settings, get_settings
from onboarding.identity import account_pages
from onboarding.identity import pages as auth_pages
from onboarding.identity.ratelimit import RateLimits
from onboarding.ops import all_models, mailbox_pages
from onboarding.ops.scheduler import start_background
from onboarding.web.admission import admission_for
from onboarding.web.problems import EXCEPTION_HANDLERS, openapi_with_problems
from onboarding.web.request_context import RequestContext
from onboarding.web.transactions import AdmitApiRequests

SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",  # invitation links carry a token; never leak it onwards
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'",
}


# Pages with links, codes or personal data: never kept by a browser or proxy cache.
NO_STORE_PREFIXES = ("/i/", "/activate", "/login", "/logout", "/register", "/password", "/account")


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


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    run_scheduler: bool = False,
) -> FastAPI:
    assert all_models.TABLE_MODULES
    settings = settings or get_settings()
    configure_logging()
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

    app = FastAPI(
        title=f"{settings.brand_name} onboarding",
        version="1",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        # No OpenTelemetry here (logs are structlog's): spares every request FastAPI's provider checks.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.session_factory = factory
    app.state.admission = admission_for(settings, engine_of(factory))
    app.state.rate_limits = RateLimits.from_settings(settings)
    for exc_type, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)

    # Correlation ids, the body size limit (413), and a 500 problem for an unexpected error.
    app.add_middleware(AdmitApiRequests)  # API requests queue here, inside the two below
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.openapi = openapi_with_problems(app)  # type: ignore[method-assign]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(api_routes.router)
    app.include_router(pages.router)
    app.include_router(auth_pages.router)
    app.include_router(account_pages.router)
    app.include_router(mailbox_pages.router)
    return app
