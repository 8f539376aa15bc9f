"""The voxtutor HTTP server: ``create_app`` builds the FastAPI app, ``voxtutor serve`` runs it.

Routes live in the ``api`` package (``/api/v1``); this module wires them with the store, the
session runtime (``api.runtime.default_runtime``), metrics, limits, CORS and the ops
endpoints ``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response as StarletteResponse
from starlette.types import Scope

from api import routes_catalog, routes_learners, routes_sessions, routes_usage, routes_webrtc
from api.billing import StripeBilling
from api.deps import AppContext, require_api_key
from api.errors import install_error_handlers
from api.limits import ApiLimits
from api.metrics import CONTENT_TYPE, Metrics
from api.middleware import BodySizeLimitMiddleware, CatchAllMiddleware, SecurityHeadersMiddleware
from api.routes_billing import router as billing_router
from api.routes_dialin import router as dialin_router
from api.routes_learner_phone import router as learner_phone_router
from api.routes_me import router as me_router
from api.routes_phone import router as phone_router
from api.runtime import Runtime, RuntimeFactory, Supervisor, default_runtime
from api.schemas import Health, Readiness
from config.settings import Settings, get_settings
from store import Store

API_PREFIX = "/api/v1"
CHECK_TIMEOUT_S = 2.0
"""Timeout of each readiness check (database query, LLM server)."""

DESCRIPTION = """\
Realtime voice tutoring (German, Czech, FAA oral exam) on Pipecat.

1. Create an API key: `voxtutor keys create NAME`; send it as `Authorization: Bearer <key>` or
   `X-API-Key: <key>` on every `/api/v1` route (except the offer routes).
2. `POST /api/v1/learners`, then `POST /api/v1/sessions` → `connect.offer_url` and
   `connect.token`.
3. The browser POSTs its SDP offer to `offer_url` with the token (`?token=` or
   `Authorization: Bearer`), and PATCHes ICE candidates there.
4. `GET /api/v1/sessions/{id}` returns turns and latency; `DELETE` ends the session.

Errors are `{"error": code, "message": text}`. Missing, unknown and revoked API keys all
answer 401; a key sees only its own learners and sessions (others answer 404).
"""


def _version() -> str:
    try:
        return importlib.metadata.version("voxtutor")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


WEB_DIR = Path(__file__).parent / "web"
NOT_SERVED = frozenset({"node_modules", "tools", "package.json", "package-lock.json"})
"""What in ``web/`` builds the app rather than being it (npm packages, scripts, lockfile)."""


class WebFiles(StaticFiles):
    """``web/`` as static files, except its build inputs (:data:`NOT_SERVED`: 404)."""

    async def get_response(self, path: str, scope: Scope) -> StarletteResponse:
        """The file at ``path``, or 404 for a build input."""
        if path.split("/", 1)[0] in NOT_SERVED:
            raise StarletteHTTPException(404)
        return await super().get_response(path, scope)


"""The browser room: landing page, WebRTC client and live transcript (no build step)."""


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    supervisor: Supervisor | None = None,
    llm_base_url: str | None = None,
    runtime: RuntimeFactory = default_runtime,
) -> FastAPI:
    """Build the API app.

    Args:
        settings: Process settings (limits, CORS, store URL, session defaults).
        store: An open store to use (tests); otherwise the lifespan opens
            ``settings.store_url`` and closes it at shutdown.
        supervisor: The session supervisor (tests); otherwise ``runtime`` provides one.
        llm_base_url: The LLM server sessions use and ``/readyz`` checks; defaults to the
            runtime's (``settings.llm_base_url`` until the lead wires the LLM start).
        runtime: Builds the session runtime when no ``supervisor`` is given.

    Returns:
        The app; its lifespan sets ``app.state.ctx`` (:class:`api.deps.AppContext`) and calls
        ``supervisor.shutdown()`` at exit.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            the_store = store
            if the_store is None:
                the_store = await Store.open(settings.store_url)
                stack.push_async_callback(the_store.close)
            if supervisor is not None:
                rt = Runtime(supervisor=supervisor, llm_base_url=settings.llm_base_url)
            else:
                rt = await stack.enter_async_context(runtime(settings, the_store, metrics))
            sup = rt.supervisor
            if sup is not None:
                stack.push_async_callback(sup.shutdown)
                metrics.track_active(lambda: sup.active_count)
            app.state.ctx = AppContext(
                settings=settings,
                store=the_store,
                metrics=metrics,
                supervisor=sup,
                llm_base_url=(llm_base_url or rt.llm_base_url or None),
                limits=ApiLimits(settings),
                billing=StripeBilling.from_settings(settings),
            )
            if app.state.ctx.billing is not None:
                stack.push_async_callback(app.state.ctx.billing.aclose)
            logger.info(
                "voxtutor API up (store: {}, sessions: {})",
                the_store.dialect,
                f"up to {sup.max_sessions}" if sup is not None else "not configured",
            )
            try:
                yield
            finally:
                app.state.ctx = None
                metrics.track_active(lambda: 0)

    public = settings.ops_public
    app = FastAPI(
        title="voxtutor",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        # Without VOXTUTOR_OPS_PUBLIC the schema needs a key (below) and no docs page is served.
        docs_url="/docs" if public else None,
        redoc_url="/redoc" if public else None,
        openapi_url="/openapi.json" if public else None,
        openapi_tags=[
            {"name": "learners", "description": "People being tutored."},
            {"name": "sessions", "description": "Tutoring sessions."},
            {"name": "webrtc", "description": "Browser signalling (session token)."},
            {"name": "catalog", "description": "Personas and tiers."},
            {"name": "usage", "description": "Metered usage and its cost."},
            {"name": "billing", "description": "Stripe checkout, portal and webhook."},
            {"name": "ops", "description": "Health, readiness, metrics (no auth)."},
        ],
    )
    app.state.metrics = metrics
    app.state.ctx = None
    install_error_handlers(app)
    for module in (routes_learners, routes_sessions, routes_webrtc, routes_catalog, routes_usage):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(learner_phone_router, prefix=API_PREFIX)
    app.include_router(me_router, prefix=API_PREFIX)
    app.include_router(phone_router, prefix=API_PREFIX)
    app.include_router(dialin_router, prefix=API_PREFIX)
    app.include_router(billing_router, prefix=API_PREFIX)
    _add_ops_routes(app, public)
    # The learner app (static; the last route, so the API and ops routes come first).
    app.mount("/", WebFiles(directory=WEB_DIR, html=True), name="web")

    # Starlette runs the last added middleware first: CORS → catch-all → body limit → app.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(CatchAllMiddleware, on_error=lambda: metrics.error("internal"))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            max_age=600,
        )
    return app


async def _check_database(ctx: AppContext) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), ctx.store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as e:
        logger.warning("readiness: database check failed: {!r}", e)
        return f"failed: database unreachable ({type(e).__name__})"
    return "ok"


async def _check_llm(base_url: str) -> str:
    url = base_url.rstrip("/") + "/models"
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
            response = await client.get(url)
    except httpx.ReadTimeout:
        # Connected, but the answer waits: llama-cpp-python serves /models under the same
        # lock as completions, so it waits out the reply being generated. Busy, not down
        # (a dead server refuses the connection; its supervisor restarts it).
        return "busy"
    except httpx.HTTPError as e:
        logger.warning("readiness: LLM server check failed: {!r}", e)
        return f"failed: LLM server unreachable ({type(e).__name__})"
    if response.status_code != 200:
        return f"failed: LLM server answered {response.status_code}"
    return "ok"


def _add_ops_routes(app: FastAPI, public: bool) -> None:
    ops_auth = [] if public else [Depends(require_api_key)]
    if not public:

        @app.get("/openapi.json", include_in_schema=False, dependencies=ops_auth)
        async def openapi() -> JSONResponse:
            """The OpenAPI schema (needs an API key unless ``VOXTUTOR_OPS_PUBLIC``)."""
            return JSONResponse(app.openapi())

    @app.get("/healthz", response_model=Health, tags=["ops"], summary="Liveness")
    async def healthz() -> Health:
        """200 whenever the process is up."""
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["ops"],
        summary="Readiness",
        responses={503: {"model": Readiness, "description": "A check failed."}},
    )
    async def readyz(request: Request) -> JSONResponse:
        """200 when the database and the LLM server (if configured) answer; else 503.

        On an API replica of a scaled-out deployment (``VOXTUTOR_NATS_URL``) ``hosts`` says
        how many registered session hosts take sessions instead of checking an LLM; it
        never makes the replica unready (with none, session starts answer 429).

        The database must answer ``SELECT 1`` and the LLM server ``GET {base}/models``, each
        within 2 s; ``checks`` names the one that failed. An LLM server that accepts the
        request but is still generating another reply after 2 s is ``busy``, and ready.
        """
        ctx: AppContext | None = request.app.state.ctx
        if ctx is None:
            body = Readiness(status="unready", checks={"app": "failed: not started"})
            return JSONResponse(body.model_dump(), status_code=503)
        checks = {"database": await _check_database(ctx)}
        hosts = getattr(ctx.supervisor, "hosts", None)
        if hosts is not None:  # an API replica: its sessions' LLM servers are the hosts'
            # Said, never failed on: with no host (scaled to zero, all draining) the replica
            # still serves the app, history, reports and webhooks; new sessions get 429.
            up = [h for h in hosts() if not h.draining]
            checks["hosts"] = f"ok: {len(up)} taking sessions"
        elif ctx.llm_base_url:
            checks["llm"] = await _check_llm(ctx.llm_base_url)
        else:
            checks["llm"] = "skipped"
        ok = all(v in ("ok", "skipped", "busy") or v.startswith("ok:") for v in checks.values())
        body = Readiness(status="ready" if ok else "unready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}, "description": "Metrics."}},
        dependencies=ops_auth,
    )
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition (active sessions, spawn, latency, TTFB, errors).

        Needs an API key (``Authorization: Bearer``; Prometheus: ``authorization`` in the
        scrape config) unless ``VOXTUTOR_OPS_PUBLIC`` is set.
        """
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


def _log_format(record: Any) -> str:
    """Loguru format: the usual line plus the bound fields (``session_id=…``) when present."""
    extra = " ".join(f"{k}={v}" for k, v in record["extra"].items())
    extra = extra.replace("{", "{{").replace("}", "}}").replace("<", r"\<")
    extra = " | " + extra if extra else ""
    return (
        "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
        + extra
        + "\n{exception}"
    )


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``settings.log_level``, with each record's bound ``session_id``."""
    logger.remove()
    logger.add(sys.stderr, level=settings.log_level, format=_log_format)


def create_app_from_env() -> FastAPI:
    """App factory for uvicorn (``server:create_app_from_env``, ``factory=True``).

    Reads the settings from the environment and configures logging (once per worker).
    """
    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)
