"""The application factory: plugins, the /api/v1 router, OpenAPI, CORS, error handling."""

from __future__ import annotations

import gc
import multiprocessing
from functools import partial
from typing import Any

import msgspec
import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar, MediaType, Request, Router, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.engine import make_url

from app.api.audit import AuditController
from app.api.items import ItemsController
from app.api.login import LoginController
from app.api.private import PrivateController
from app.api.users import TotpController, UsersController
from app.api.utils import UtilsController
from app.audit_store import AuditStore
from app.auth import EXCLUDE_FROM_AUTH, auth_middleware
from app.background import Background
from app.breach import breach_check
from app.cli import AdminCLIPlugin
from app.config import STARTUP_WARNINGS, Settings, get_settings
from app.database import sqlalchemy_config
from app.docs import CONTENT_SECURITY_POLICY, FAVICON, REDOC_JS_URL, docs_static_router, swagger_plugin
from app.emails import Outbox
from app.errors import exception_handlers
from app.frontend import Frontend
from app.metrics import Metrics, metrics_endpoint
from app.observability import configure_logging, flush_logs, init_sentry, log_response, request_logging
from app.openapi import SECURITY_SCHEME, openapi_fixups, operation_id
from app.ratelimit import RateLimiter
from app.schemas import SHOWN_WITH_EMAIL_VERIFICATION, Caller
from app.security import passwords
from app.services import (
    provide_item_service,
    provide_session_service,
    provide_token_service,
    provide_totp_service,
    provide_user_service,
)
from app.sessions import Pruner, Touches
from app.tracing import Tracing, tracing_enabled
from app.validation import reject_nul_characters
from app.verification import EmailVerification
from db.executor import Executor


def provide_current_user(request: Request[Caller, Any, Any]) -> Caller:
    return request.user


OPENAPI_URL = "/api/v1/openapi.json"


@get(OPENAPI_URL, include_in_schema=False, opt={EXCLUDE_FROM_AUTH: True}, media_type=MediaType.JSON)
async def openapi_json(request: Request[Any, Any, Any]) -> bytes:
    """The OpenAPI document, byte-identical across restarts for the same code and settings."""
    document: bytes = request.app.state.openapi_document
    return document


class RedocFromURL(RedocRenderPlugin):
    """ReDoc reading the document we serve, as the template's page does, rather than a second copy inlined in
    the page (which would also skip the fixups applied to the served document)."""

    @staticmethod
    def render_json(request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return msgspec.json.encode(OPENAPI_URL)


# Our bundle, no Google Fonts (ReDoc falls back to the system's): nothing from another host (app/docs.py).
REDOC = RedocFromURL(js_url=REDOC_JS_URL, google_fonts=False, favicon=FAVICON)


@get(
    "/redoc",
    include_in_schema=False,
    opt={EXCLUDE_FROM_AUTH: True},
    media_type=MediaType.HTML,
    response_headers=[CONTENT_SECURITY_POLICY],
)
async def redoc(request: Request[Any, Any, Any]) -> bytes:
    """A route of its own beside /docs: as a render plugin of the docs router it could only live under /docs."""
    return REDOC.render(request, request.app.openapi_schema.to_schema())


async def preflight_ok(message: Message, scope: Scope) -> None:
    """CORS preflights answer 200, as the template's do; Litestar answers them 204."""
    if message["type"] != "http.response.start" or message["status"] != 204 or scope.get("method") != "OPTIONS":
        return
    headers = MutableScopeHeaders.from_message(message)
    if "access-control-allow-origin" in headers:
        message["status"] = 200
        headers["content-length"] = "0"


def complete_allow_headers(app: Litestar) -> None:
    """`OPTIONS` answers every method of its path (litestar-org/litestar#4169, fixed in Litestar 3 only).

    Litestar 2 makes a path's OPTIONS handler when the path's first handler is registered, and that handler
    answers the `Allow` of the route it was made for; the routes made as the path's other handlers join it do not
    replace it, so `OPTIONS /items/{id}` said `Allow: DELETE, OPTIONS`. Once the app is built every route knows
    all its handlers: give each Litestar-made OPTIONS handler the function its final route makes (the 405's `Allow`
    comes from the routing table and is already complete)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        options, _ = route.route_handler_map["OPTIONS"]
        if options.handler_name == "options_handler":  # Litestar's own; a handler of ours would be left alone
            options(route.create_options_handler(route.path).fn)


def freeze_startup_objects() -> None:
    """Leave what start-up built (modules, the app, the ORM's mappers: most of the heap) out of every garbage
    collection to come: a full collection otherwise walks all of it, a pause of tens of milliseconds in some
    request's latency (the `gc.freeze` advice of the gc module's documentation, for forking servers and alike)."""
    gc.collect()
    gc.freeze()


def log_configuration(settings: Settings) -> None:
    """One line that says what this process runs as: the environment, the database's driver and host (never its
    password) and what is switched on."""
    database = make_url(settings.database_url)
    switches = {
        "private_routes": settings.private_routes_enabled,
        "emails": settings.emails_enabled,
        "email_verification": settings.email_verification_enabled,
        "sentry": settings.sentry_enabled,
        "metrics": settings.METRICS_ENABLED,
        "tracing": tracing_enabled(settings),
        "frontend": settings.frontend_dir is not None,
        "rate_limits": settings.RATE_LIMIT_ENABLED,
        "redis": bool(settings.REDIS_URL),
        "breach_check": settings.PASSWORD_BREACH_CHECK_URL is not None,
    }
    structlog.get_logger("app").info(
        "configured",
        environment=settings.ENVIRONMENT,
        database_driver=database.drivername,
        database_host=f"{database.host}:{database.port or 5432}" if database.host else database.database,
        enabled=[name for name, on in switches.items() if on],
    )


def speaks_for_the_server() -> bool:
    """Whether this process says what the server starts with. uvicorn's `--workers N` and `--reload` run the app in
    children that its supervisor (which never loads the app) spawns one by one: the first speaks for all, so a
    start-up says each thing once, not once per worker."""
    return multiprocessing.parent_process() is None or multiprocessing.current_process().name.endswith("-1")


def announce(settings: Settings) -> None:
    """The configuration line and the warnings about dev defaults, at server start-up: CLI commands (prestart,
    migrate) start no server and say neither, so `just dev` and `just serve` show each once."""
    if not speaks_for_the_server():
        return
    log_configuration(settings)
    for message in STARTUP_WARNINGS:
        structlog.get_logger("app.config").warning(message)
    STARTUP_WARNINGS.clear()


def create_app(settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None) -> Litestar:
    """`tracer_provider`: where spans go when tracing is on (the OTLP exporter otherwise; tests pass their own)."""
    settings = settings or get_settings()
    configure_logging(settings)
    init_sentry(settings)
    db_config = sqlalchemy_config(settings)
    # With email verification on, user answers show `is_verified` (app/schemas.py).
    fast = Executor(
        db_config.get_engine(),
        shown=SHOWN_WITH_EMAIL_VERIFICATION if settings.email_verification_enabled else frozenset(),
    )
    # Shared by every worker and replica through Redis when configured; per process otherwise.
    rate_limiter = RateLimiter(settings.REDIS_URL, settings.REDIS_NAMESPACE, enabled=settings.RATE_LIMIT_ENABLED)
    # Off by default, and then nothing of them is installed (README "Operating").
    metrics = Metrics(settings, fast, rate_limiter) if settings.METRICS_ENABLED else None
    # Mail after the answer, by tasks of the process's own (app/emails.py).
    outbox = Outbox()
    verification = EmailVerification(settings, outbox) if settings.email_verification_enabled else None
    # Sessions' last_used_at after the answer, and their pruning (app/sessions.py).
    touches = Touches(fast)
    pruner = Pruner(fast)
    # Jobs after the answer (a personal access token's last use, app/auth.py).
    background = Background()
    # Audit events stored after the answers, when asked for (app/audit_store.py).
    audit_store = (
        AuditStore(fast, settings.AUDIT_FLUSH_SECONDS, settings.AUDIT_RETENTION_DAYS)
        if settings.AUDIT_STORE_ENABLED
        else None
    )
    # New passwords looked up in a range API, when asked for (app/breach.py).
    breach = breach_check(settings)
    tracing = Tracing(settings, tracer_provider) if tracing_enabled(settings) else None
    if tracing is not None:
        tracing.instrument(db_config.get_engine(), fast)

    controllers: list[Any] = [
        LoginController,
        UsersController,
        TotpController,
        ItemsController,
        UtilsController,
        AuditController,
    ]
    if settings.private_routes_enabled:
        controllers.append(PrivateController)
    services = {
        "users": Provide(provide_user_service, sync_to_thread=False),
        "items": Provide(provide_item_service, sync_to_thread=False),
        "sessions": Provide(provide_session_service, sync_to_thread=False),
        "tokens": Provide(provide_token_service, sync_to_thread=False),
        "totp": Provide(provide_totp_service, sync_to_thread=False),
    }
    api = Router(path=settings.API_V1_STR, route_handlers=controllers, dependencies=services)

    app = Litestar(
        route_handlers=[
            api,
            openapi_json,
            redoc,
            docs_static_router(),
            *([metrics_endpoint(metrics)] if metrics else []),
        ],
        plugins=[
            SQLAlchemyPlugin(config=db_config),
            AdminCLIPlugin(),
            *([tracing.plugin] if tracing else []),
            # The built frontend at `/`, behind every route (README "Deployment").
            *([Frontend(settings.frontend_dir)] if settings.frontend_dir else []),
        ],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            "rate_limiter": Provide(lambda: rate_limiter, sync_to_thread=False, use_cache=True),
            "outbox": Provide(lambda: outbox, sync_to_thread=False, use_cache=True),
            "current_user": Provide(provide_current_user, sync_to_thread=False),
        },
        middleware=[
            request_logging,
            *([tracing.middleware] if tracing else []),
            auth_middleware(settings, fast, background, touches),
        ],
        on_startup=[
            freeze_startup_objects,
            partial(announce, settings),
            pruner.start,
            *([audit_store.start] if audit_store else []),
            *(observer.start for observer in (metrics, tracing) if observer),
        ],
        on_shutdown=[
            pruner.stop,
            touches.close,
            outbox.close,
            background.close,
            *([audit_store.stop] if audit_store else []),
            *([breach.close] if breach else []),
            rate_limiter.close,
            *(observer.stop for observer in (metrics, tracing) if observer),
            fast.close,
            flush_logs,
        ],
        before_send=[preflight_ok, log_response],
        before_request=reject_nul_characters,
        exception_handlers=exception_handlers,
        cors_config=CORSConfig(
            allow_origins=settings.all_cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        ),
        openapi_config=OpenAPIConfig(
            title=settings.PROJECT_NAME,
            version="0.1.0",
            # The docs live at /docs; /api/v1/openapi.json is served by `openapi_json` (a catch-all of the docs
            # router under /api/v1 would turn unknown API paths into HTML pages).
            openapi_router=Router(
                "/docs",
                route_handlers=[],
                include_in_schema=False,
                opt={EXCLUDE_FROM_AUTH: True},
                response_headers=[CONTENT_SECURITY_POLICY],
            ),
            # Both UIs load their JavaScript and CSS from us (app/docs.py): the docs work on a closed network.
            render_plugins=[swagger_plugin(path="/")],
            operation_id_creator=operation_id,
            use_handler_docstrings=True,
            components=Components(
                security_schemes={
                    SECURITY_SCHEME: SecurityScheme(
                        type="oauth2",
                        flows=OAuthFlows(
                            password=OAuthFlow(token_url=f"{settings.API_V1_STR}/login/access-token", scopes={})
                        ),
                    )
                }
            ),
        ),
        request_max_body_size=settings.MAX_REQUEST_BODY_BYTES,
        logging_config=None,
        debug=False,
    )
    complete_allow_headers(app)
    if audit_store is not None:
        app.asgi_handler = audit_store.wrap(app.asgi_handler)
    if metrics is not None:  # outside routing, so that a path no route matches is counted too
        app.asgi_handler = metrics.wrap(app.asgi_handler)
    app.state.settings = settings
    app.state.db_config = db_config
    app.state.executor = fast
    app.state.verification = verification
    app.state.passwords = passwords(settings.PASSWORD_HASH_PROFILE)
    app.state.breach = breach
    openapi_fixups(app)
    app.state.openapi_document = msgspec.json.encode(app.openapi_schema.to_schema())
    return app
