"""The durable job that writes each ended session's report (``store.reports``).

A :class:`ReportWorker` claims a ``pending`` job (or one whose worker died: its lease ran
out), reads the session's rows, builds the report (:mod:`services.reports`: the LLM writes
only the summary and strengths) and finishes the job, which succeeds only while its claim
holds, so each report is written once. Ending a session adds the job and waits for nothing
else. The server runs a worker in the background (``Settings.reports``); ``voxtutor reports
work`` runs one on its own; ``voxtutor report SESSION_ID`` runs one session's job at once.

After the report is stored, the learner's level estimate (``store.learner_model``) is
recorded, once per session.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from loguru import logger

from config.personas import PersonaError, load_persona
from config.settings import Settings
from config.tiers import TierError, get_tier
from services.assessment.json_chat import JsonChat
from services.reports import (
    AnthropicJson,
    ReportLLM,
    acs_debrief,
    practise,
    write_summary,
)
from store import Store
from store.learner_model import estimate_level

RETRY_IN_S = 30.0
"""Wait before a failed job (no LLM answered) is tried again, s."""


def default_owner() -> str:
    """``host:pid`` of this process: who holds a claim."""
    return f"{socket.gethostname()}:{os.getpid()}"


def report_llms(
    tier: str, settings: Settings, local_base_url: str | None
) -> list[tuple[str, ReportLLM]]:
    """The LLMs that may write a ``tier`` session's summary, in the tier's order.

    Each link of the tier's LLM chain whose key is set: Anthropic (:class:`AnthropicJson`),
    OpenAI (:class:`JsonChat`, ``openai`` dialect), the local model (``local_base_url``).
    An unknown tier gets the local model only.
    """
    out: list[tuple[str, ReportLLM]] = []
    try:
        links = list(get_tier(tier).llm)
    except TierError:
        links = []
    for link in links:
        key = os.environ.get(link.key_env) if link.key_env else None
        if link.provider == "anthropic" and key and link.model:
            out.append(("anthropic", AnthropicJson(key, link.model, settings.anthropic_base_url)))
        elif link.provider == "openai" and key and link.model:
            url = settings.openai_base_url or "https://api.openai.com/v1"
            out.append(("openai", JsonChat(url, model=link.model, api_key=key, dialect="openai")))
    if local_base_url:
        # Any key: llama.cpp ignores it, another OpenAI-compatible server may want one.
        out.append(("local", JsonChat(local_base_url, api_key="local", timeout_s=120.0)))
    return out


class ReportWorker:
    """Claims report jobs and writes the reports.

    Args:
        store: The open store.
        settings: LLM endpoints, lease and poll times.
        local_base_url: The local LLM server (writes the summary on ``local``, and is the last
            resort on cloud tiers), or ``None``.
        owner: Who claims (default ``host:pid``).
        llms_for: The summary writers of a tier (default :func:`report_llms`).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        local_base_url: str | None,
        owner: str | None = None,
        llms_for: Callable[[str], list[tuple[str, ReportLLM]]] | None = None,
    ):
        self.llms_for = llms_for or (lambda tier: report_llms(tier, settings, local_base_url))
        self.store = store
        self.settings = settings
        self.local_base_url = local_base_url
        self.owner = owner or default_owner()

    async def build(self, session_id: str) -> dict[str, Any]:
        """The report of ``session_id`` (reads the store; writes nothing).

        Raises:
            RuntimeError: no LLM wrote the summary.
            store.NotFoundError: the session or its learner is gone.
        """
        from store import NotFoundError

        session = await self.store.get_session(session_id)
        if session is None:
            raise NotFoundError(f"no session {session_id!r}")
        learner = await self.store.get_learner(session.learner_id)
        if learner is None:
            raise NotFoundError(f"no learner {session.learner_id!r}")
        try:
            role = load_persona(session.persona).role
        except PersonaError:
            role = "tutor"
        turns = [{"role": t.role, "text": t.text} for t in await self.store.list_turns(session_id)]
        mistakes = [
            {
                "sentence": m.sentence,
                "corrected_sentence": m.corrected_sentence,
                "original": m.original,
                "corrected": m.corrected,
                "rule": m.rule,
                "category": m.category,
            }
            for m in await self.store.list_mistakes(session_id)
        ]
        acs = [
            {"question_id": r.question_id, "task": r.task, "grade": r.grade, "missing": r.missing}
            for r in await self.store.list_acs_results(session_id)
        ]
        learner_turns = sum(t["role"] == "learner" for t in turns)
        if learner_turns:
            llms = self.llms_for(session.tier)
            try:
                written = await write_summary(llms, role, turns, mistakes)
            finally:
                for _, llm in llms:
                    close = getattr(llm, "aclose", None)
                    if close is not None:
                        await close()
        else:
            written = {
                "summary": "The learner said nothing in this session.",
                "strengths": [],
                "written_by": None,
            }
        model = await self.store.learner_model(learner.id)
        level, evidence = learner.cefr_level, dict[str, Any]()
        if role == "tutor" and session.mode == "conversation":
            level, evidence = estimate_level(
                learner.cefr_level, *await self.store.level_evidence(learner.id)
            )
        reviews = await self.store.session_review_logs(session_id)
        minutes = (
            (session.ended_at - (session.ready_at or session.created_at)).total_seconds() / 60
            if session.ended_at
            else None
        )
        return {
            "session_id": session_id,
            "learner_id": learner.id,
            "persona": session.persona,
            "mode": session.mode,
            "tier": session.tier,
            "started_at": session.created_at.isoformat(),
            "ended_at": session.ended_at.isoformat() if session.ended_at else None,
            "minutes": round(minutes, 2) if minutes is not None else None,
            "learner_turns": learner_turns,
            **written,
            "corrections": mistakes,
            "practise": practise(mistakes, model.get("weaknesses") or ()),
            "level": {"before": learner.cefr_level, "estimate": level, "evidence": evidence},
            "acs": acs_debrief(acs) if acs else [],
            "review": {
                "answered": sum(r.source == "review" for r in reviews),
                "right": sum(r.source == "review" and r.rating >= 3 for r in reviews),
            },
        }

    async def run_one(self, session_id: str | None = None) -> str | None:
        """Claim one job (``session_id``'s, or the oldest), write its report; its session id.

        ``None`` when there was nothing to claim. A failure gives the job back to be retried
        after :data:`RETRY_IN_S` (the error is stored with it).
        """
        sid = await self.store.claim_report(self.owner, self.settings.report_lease_s, session_id)
        if sid is None:
            return None
        log = logger.bind(session_id=sid)
        try:
            report = await self.build(sid)
        except Exception as e:
            log.warning(f"report not written, retried in {RETRY_IN_S:.0f} s: {e!r}")
            await self.store.release_report(sid, self.owner, repr(e), RETRY_IN_S)
            return sid
        if not await self.store.finish_report(sid, self.owner, report):
            log.warning("report written after the claim ran out; another worker's stands")
            return sid
        level = report["level"]
        if level["estimate"] != level["before"]:  # the history holds changes (the report all)
            await self.store.record_level(
                report["learner_id"],
                level["estimate"],
                "estimate",
                {**level["evidence"], "session_id": sid},
            )
        log.info("session report written")
        return sid

    async def run_forever(self) -> None:
        """Write reports as jobs arrive (poll every ``settings.report_poll_s``) until cancelled."""
        while True:
            try:
                while await self.run_one() is not None:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a database hiccup must not end the worker
                logger.error(f"report worker: {e!r}")
            await asyncio.sleep(self.settings.report_poll_s)
