"""The command line's way into the learner memory: find or create a learner, write a report.

``voxtutor session --learner NAME_OR_ID`` stores its session as that learner's in the same
store the server uses (SQLite under ``VOXTUTOR_HOME`` by default, ``DATABASE_URL`` for
PostgreSQL), so two command-line sessions, or one there and one through the API, share one
memory. Learners created here belong to a ``voxtutor cli`` API key whose plaintext nobody
holds (it exists because every learner has an owner key).
"""

from __future__ import annotations

from config.personas import Persona
from config.settings import Settings
from runtime.report_jobs import ReportWorker
from store import ApiKeyInfo, LearnerInfo, Store

CLI_KEY_NAME = "voxtutor cli"


async def cli_owner_key(store: Store) -> ApiKeyInfo:
    """The active ``voxtutor cli`` key, created on first use (its plaintext is discarded)."""
    for key in await store.list_api_keys(include_revoked=False):
        if key.name == CLI_KEY_NAME:
            return key
    key, _plaintext = await store.create_api_key(CLI_KEY_NAME)
    return key


async def find_learner(store: Store, name_or_id: str) -> LearnerInfo | None:
    """The learner with this id, or the one learner with this name (case-insensitive).

    Raises:
        ValueError: several learners have the name (the message lists their ids).
    """
    found = await store.find_learners(name_or_id)
    if len(found) > 1:
        ids = ", ".join(f.id for f in found)
        raise ValueError(f"{len(found)} learners are called {name_or_id!r}; pass an id: {ids}")
    return found[0] if found else None


async def learner_for_session(
    store: Store, name_or_id: str, persona: Persona, level: str | None
) -> LearnerInfo:
    """The learner a command-line session is for.

    Found by name or id, or created learning ``persona``'s language at ``level`` (default
    the persona's).

    Raises:
        ValueError: the name is ambiguous, or the learner learns another language.
    """
    learner = await find_learner(store, name_or_id)
    if learner is None:
        key = await cli_owner_key(store)
        return await store.create_learner(
            key.id, name_or_id, persona.language, level or persona.cefr_level
        )
    if learner.target_language != persona.language:
        raise ValueError(
            f"{learner.name} learns {learner.target_language!r}; {persona.id} speaks "
            f"{persona.language!r}"
        )
    return learner


async def write_report_now(
    store: Store, settings: Settings, session_id: str, local_base_url: str | None
) -> bool:
    """Run ``session_id``'s report job here (unless another worker holds it).

    Returns:
        Whether the report is done afterwards.
    """
    await ReportWorker(store, settings, local_base_url).run_one(session_id)
    job = await store.get_report_job(session_id)
    return job is not None and job.status == "done"
