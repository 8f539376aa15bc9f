"""The learner model: what the store knows about a learner, read from the rows of record.

Nothing here is asked of an LLM: level, weaknesses, review items and ACS mastery are counted
from the stored mistakes, ACS grades, sessions and review items, so the next session's prompt
is built from the database (the source of truth), not from what a model remembers.

- **Weaknesses**: error categories ranked by a recency-weighted count (each mistake weighs
  ``0.5 ** (age_days / WEAKNESS_HALF_LIFE_DAYS)``), each with its most frequent rules and its
  latest example.
- **Level**: the learner's CEFR level with its history (created, set by the learner or app,
  estimated after a session by :func:`estimate_level`).
- **ACS mastery** per task, 0-5: five times the mean of the task's last three grades
  (satisfactory 1, probe 0.5, unsatisfactory 0); 0 and ``covered: false`` when never asked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from config.acs import load_acs_bank
from store.base import StoreBase, learner_info
from store.billing import SubscriptionActiveError
from store.models import (
    CEFR_LEVELS,
    AcsResult,
    Learner,
    LearnerLevel,
    Mistake,
    ReviewItem,
    ReviewLog,
    Turn,
    TutorSession,
    utcnow,
)
from store.records import LearnerInfo, NotFoundError

WEAKNESS_HALF_LIFE_DAYS = 14.0
"""Age at which a mistake counts half toward its category's weight, days."""

GRADE_SCORE = {"satisfactory": 1.0, "probe": 0.5, "unsatisfactory": 0.0}

LEVEL_MIN_TURNS = 10
"""Learner turns (over the last sessions) an estimate needs before it moves the level."""

LEVEL_UP_ERRORS = 0.15
"""Errors per learner turn below which (with :data:`LEVEL_UP_WORDS`) the level goes up."""

LEVEL_UP_WORDS = 6.0
"""Mean words per learner turn a level-up needs."""

LEVEL_DOWN_ERRORS = 0.6
"""Errors per learner turn above which the level goes down."""


def estimate_level(
    level: str, learner_turns: int, errors: int, words: int
) -> tuple[str, dict[str, Any]]:
    """The CEFR level the evidence supports, one step at most from ``level``, and the evidence.

    A coarse rule, stated so a reader can check it: with at least :data:`LEVEL_MIN_TURNS`
    learner turns, fewer than :data:`LEVEL_UP_ERRORS` errors per turn at
    :data:`LEVEL_UP_WORDS`+ words per turn moves up a level; more than
    :data:`LEVEL_DOWN_ERRORS` errors per turn moves down; otherwise the level stays. (CEFR's
    descriptors, https://www.coe.int/en/web/common-european-framework-reference-languages,
    grade accuracy and range; errors per turn and words per turn are their countable part.)
    """
    evidence: dict[str, Any] = {
        "learner_turns": learner_turns,
        "errors": errors,
        "errors_per_turn": round(errors / learner_turns, 3) if learner_turns else None,
        "words_per_turn": round(words / learner_turns, 2) if learner_turns else None,
    }
    i = CEFR_LEVELS.index(level)
    if learner_turns < LEVEL_MIN_TURNS:
        evidence["rule"] = f"fewer than {LEVEL_MIN_TURNS} learner turns: level kept"
        return level, evidence
    rate, wpt = errors / learner_turns, words / learner_turns
    if rate < LEVEL_UP_ERRORS and wpt >= LEVEL_UP_WORDS and i + 1 < len(CEFR_LEVELS):
        evidence["rule"] = "few errors in full sentences: one level up"
        return CEFR_LEVELS[i + 1], evidence
    if rate > LEVEL_DOWN_ERRORS and i > 0:
        evidence["rule"] = "many errors per turn: one level down"
        return CEFR_LEVELS[i - 1], evidence
    evidence["rule"] = "level kept"
    return level, evidence


def weaknesses(rows: Iterable[Mistake], now: datetime, limit: int = 5) -> list[dict[str, Any]]:
    """Error categories ranked by recency-weighted count, with rules, counts and recency."""
    by_cat: dict[str, list[Mistake]] = defaultdict(list)
    for r in rows:
        by_cat[r.category].append(r)
    ranked = []
    for cat, ms in by_cat.items():
        weight = sum(
            0.5 ** ((now - m.created_at).total_seconds() / 86400 / WEAKNESS_HALF_LIFE_DAYS)
            for m in ms
        )
        latest = max(ms, key=lambda m: (m.created_at, m.id))
        rules = Counter(m.rule for m in ms if m.rule)
        ranked.append(
            {
                "category": cat,
                "count": len(ms),
                "weight": round(weight, 3),
                "last_seen": latest.created_at.isoformat(),
                "rules": [{"rule": r, "count": n} for r, n in rules.most_common(3)],
                "example": {"original": latest.original, "corrected": latest.corrected},
            }
        )
    ranked.sort(key=lambda w: (-w["weight"], w["category"]))
    return ranked[:limit]


def acs_mastery(results: Iterable[AcsResult]) -> dict[str, Any]:
    """``{"tasks": {task: {...}}, "areas", "uncovered_areas", "weak_tasks", "asked"}`` of grades.

    ``areas``: every ACS area's title by its Roman numeral (the learner app's grid rows).

    ``weak_tasks``: tasks with mastery under 3, most recent first.
    """
    bank = load_acs_bank()
    per_task: dict[str, list[AcsResult]] = defaultdict(list)
    for r in sorted(results, key=lambda r: (r.created_at, r.id)):
        per_task[r.task].append(r)
    tasks: dict[str, Any] = {}
    for task in bank.tasks:
        rs = per_task.get(task, [])
        last = rs[-3:]
        mastery = round(5 * sum(GRADE_SCORE[r.grade] for r in last) / len(last)) if last else 0
        tasks[task] = {
            "title": bank.tasks[task],
            "mastery": mastery,
            "results": len(rs),
            "covered": bool(rs),
            "last_grade": rs[-1].grade if rs else None,
        }
    covered_areas = {t.split(".")[1] for t, v in tasks.items() if v["covered"]}
    recent = sorted(
        (t for t, v in tasks.items() if v["covered"] and v["mastery"] < 3),
        key=lambda t: per_task[t][-1].created_at,
        reverse=True,
    )
    return {
        "tasks": tasks,
        "areas": dict(bank.areas),
        "uncovered_areas": [
            {"area": a, "title": title} for a, title in bank.areas.items() if a not in covered_areas
        ],
        "weak_tasks": recent,
        "asked": sorted({r.question_id for rs in per_task.values() for r in rs}),
    }


class LearnerModelStore(StoreBase):
    """The learner model and what a learner or app sets (mixed into :class:`store.Store`)."""

    async def update_learner(
        self,
        learner_id: str,
        owner_key_id: str | None = None,
        *,
        name: str | None = None,
        cefr_level: str | None = None,
        interests: Iterable[str] | None = None,
        plan: str | None = None,
    ) -> LearnerInfo:
        """Set a learner's name, level (recorded in the level history), interests or plan.

        The caller checks that the plan exists and that the key may grant it. A plan that a
        Stripe subscription holds (``plan_source`` ``stripe``, :mod:`store.billing`) is not
        changed here: the subscription decides it until it ends.

        Raises:
            ValueError: an empty name or an unknown level.
            SubscriptionActiveError: a different plan for a learner whose plan a Stripe
                subscription holds.
            NotFoundError: no such learner for ``owner_key_id``.
        """
        async with self._tx() as s:
            # Locked when the plan changes: a Stripe event (store.billing) cannot interleave.
            row = await s.get(Learner, learner_id, with_for_update=plan is not None)
            if (
                row is None
                or row.erased
                or (owner_key_id is not None and row.owner_key_id != owner_key_id)
            ):
                raise NotFoundError(f"no learner {learner_id!r}")
            if name is not None:
                if not name.strip():
                    raise ValueError("learner name must not be empty")
                row.name = name.strip()
            if interests is not None:
                row.interests = [t.strip() for t in interests if t.strip()]
            if plan is not None and plan != row.plan:
                if row.plan_source == "stripe":
                    raise SubscriptionActiveError(
                        f"a Stripe subscription holds this learner's plan {row.plan!r}; change "
                        "or cancel it in the customer portal (POST .../billing/portal)"
                    )
                row.plan, row.plan_source = plan, "key"
            if cefr_level is not None:
                level = cefr_level.strip().upper()
                if level not in CEFR_LEVELS:
                    raise ValueError(f"cefr_level must be one of {CEFR_LEVELS}, got {cefr_level!r}")
                if level != row.cefr_level:
                    row.cefr_level = level
                    s.add(LearnerLevel(learner_id=learner_id, cefr_level=level, source="set"))
            return learner_info(row)

    async def find_learners(self, name_or_id: str) -> list[LearnerInfo]:
        """Learners whose id or name (case-insensitive) is ``name_or_id``, oldest first."""
        async with self._tx() as s:
            row = await s.get(Learner, name_or_id)
            if row is not None and not row.erased:
                return [learner_info(row)]
            rows = await s.scalars(
                select(Learner)
                .where(Learner.erased.is_(False))
                .order_by(Learner.created_at, Learner.id)
            )
            wanted = name_or_id.strip().casefold()
            return [learner_info(r) for r in rows if r.name.casefold() == wanted]

    async def record_level(
        self, learner_id: str, level: str, source: str, evidence: dict[str, Any]
    ) -> bool:
        """Add a level history entry and set the learner's level; ``True`` if it changed."""
        async with self._tx() as s:
            row = await s.get(Learner, learner_id)
            if row is None:
                raise NotFoundError(f"no learner {learner_id!r}")
            changed = row.cefr_level != level
            row.cefr_level = level
            s.add(
                LearnerLevel(
                    learner_id=learner_id, cefr_level=level, source=source, evidence=evidence
                )
            )
            return changed

    async def level_evidence(self, learner_id: str, sessions: int = 3) -> tuple[int, int, int]:
        """``(learner turns, errors, words)`` of the learner's last ``sessions`` ended sessions.

        Only sessions that started after the level last changed count: evidence that moved
        the level once does not move it again.
        """
        async with self._tx() as s:
            since = await s.scalar(
                select(func.max(LearnerLevel.created_at)).where(
                    LearnerLevel.learner_id == learner_id
                )
            )
            where = [
                TutorSession.learner_id == learner_id,
                TutorSession.status.in_(("ended", "failed")),
                TutorSession.mode == "conversation",
            ]
            if since is not None:
                where.append(TutorSession.created_at >= since)
            ids = list(
                await s.scalars(
                    select(TutorSession.id)
                    .where(*where)
                    .order_by(TutorSession.created_at.desc())
                    .limit(sessions)
                )
            )
            if not ids:
                return 0, 0, 0
            texts = list(
                await s.scalars(
                    select(Turn.text).where(Turn.session_id.in_(ids), Turn.role == "learner")
                )
            )
            errors = len(
                list(await s.scalars(select(Mistake.id).where(Mistake.session_id.in_(ids))))
            )
        return len(texts), errors, sum(len(t.split()) for t in texts)

    async def learner_model(
        self, learner_id: str, owner_key_id: str | None = None
    ) -> dict[str, Any]:
        """The learner model as JSON-ready data (``GET /api/v1/learners/{id}/progress``).

        Returns:
            ``learner`` (name, language, level, interests), ``level`` (current, source,
            evidence, ``history``), ``weaknesses`` (:func:`weaknesses`), ``sessions``,
            ``minutes``, ``last_session``, ``review`` (``total``, ``due``, ``learned``),
            ``acs`` (:func:`acs_mastery`, only when the learner took an exam) and
            ``series``: per session (mistakes per category, ACS grades, minutes, review
            items learned by then) and per day (reviews answered right/wrong).

        Raises:
            NotFoundError: no such learner for ``owner_key_id``.
        """
        now = utcnow()
        async with self._tx() as s:
            row = await s.get(Learner, learner_id)
            if (
                row is None
                or row.erased
                or (owner_key_id is not None and row.owner_key_id != owner_key_id)
            ):
                raise NotFoundError(f"no learner {learner_id!r}")
            info = learner_info(row)
            sessions = list(
                await s.scalars(
                    select(TutorSession)
                    .where(TutorSession.learner_id == learner_id)
                    .order_by(TutorSession.created_at, TutorSession.id)
                )
            )
            ids = [x.id for x in sessions]
            mistakes = (
                list(await s.scalars(select(Mistake).where(Mistake.session_id.in_(ids))))
                if ids
                else []
            )
            acs = (
                list(await s.scalars(select(AcsResult).where(AcsResult.session_id.in_(ids))))
                if ids
                else []
            )
            levels = list(
                await s.scalars(
                    select(LearnerLevel)
                    .where(LearnerLevel.learner_id == learner_id)
                    .order_by(LearnerLevel.id)
                )
            )
            items = list(
                await s.scalars(select(ReviewItem).where(ReviewItem.learner_id == learner_id))
            )
            logs = (
                list(
                    await s.scalars(
                        select(ReviewLog)
                        .where(
                            ReviewLog.item_id.in_([i.id for i in items]),
                            ReviewLog.source == "review",
                        )
                        .order_by(ReviewLog.id)
                    )
                )
                if items
                else []
            )
            turns = (
                Counter(
                    sid
                    for sid in await s.scalars(
                        select(Turn.session_id).where(
                            Turn.session_id.in_(ids), Turn.role == "learner"
                        )
                    )
                )
                if ids
                else Counter()
            )
        ended = [x for x in sessions if x.ended_at is not None]
        minutes = sum(
            (x.ended_at - (x.ready_at or x.created_at)).total_seconds() / 60
            for x in ended
            if x.ended_at is not None
        )
        last = ended[-1] if ended else None
        level_now = levels[-1] if levels else None
        by_session = defaultdict(list)
        for m in mistakes:
            by_session[m.session_id].append(m)
        acs_by_session = defaultdict(list)
        for a in acs:
            acs_by_session[a.session_id].append(a)
        series_sessions = []
        covered: set[str] = set()
        for x in sessions[-50:]:
            covered |= {a.task for a in acs_by_session[x.id]}
            learned_by = sum(
                1 for i in items if i.card.get("state") == 2 and i.created_at <= (x.ended_at or now)
            )
            series_sessions.append(
                {
                    "session_id": x.id,
                    "started_at": x.created_at.isoformat(),
                    "persona": x.persona,
                    "mode": x.mode,
                    "minutes": round(
                        ((x.ended_at or now) - (x.ready_at or x.created_at)).total_seconds() / 60, 2
                    )
                    if x.ended_at
                    else None,
                    "learner_turns": turns.get(x.id, 0),
                    "mistakes": dict(Counter(m.category for m in by_session[x.id])),
                    "acs": dict(Counter(a.grade for a in acs_by_session[x.id])),
                    "acs_tasks_covered": len(covered),
                    "review_items": sum(1 for i in items if i.created_at <= (x.ended_at or now)),
                    "review_items_learned": learned_by,
                }
            )
        days: dict[str, Counter[str]] = defaultdict(Counter)
        for log in logs:
            days[log.reviewed_at.date().isoformat()]["right" if log.rating >= 3 else "wrong"] += 1
        model: dict[str, Any] = {
            "learner": {
                "id": info.id,
                "name": info.name,
                "target_language": info.target_language,
                "cefr_level": info.cefr_level,
                "interests": list(info.interests),
            },
            "level": {
                "cefr": info.cefr_level,
                "source": level_now.source if level_now else "created",
                "evidence": dict(level_now.evidence or {}) if level_now else {},
                "history": [
                    {"cefr": lv.cefr_level, "source": lv.source, "at": lv.created_at.isoformat()}
                    for lv in levels
                ],
            },
            "weaknesses": weaknesses(mistakes, now),
            "mistakes": len(mistakes),
            "sessions": len(sessions),
            "minutes": round(minutes, 2),
            "last_session": {
                "id": last.id,
                "persona": last.persona,
                "mode": last.mode,
                "ended_at": last.ended_at.isoformat() if last.ended_at else None,
            }
            if last
            else None,
            "review": {
                "total": len(items),
                "due": sum(i.due <= now for i in items),
                "learned": sum(i.card.get("state") == 2 for i in items),
            },
            "acs": acs_mastery(acs) if acs else None,
            "series": {
                "sessions": series_sessions,
                "reviews_per_day": [
                    {"date": d, "right": c["right"], "wrong": c["wrong"]}
                    for d, c in sorted(days.items())
                ],
                "level": [
                    {"cefr": lv.cefr_level, "at": lv.created_at.isoformat()} for lv in levels
                ],
            },
        }
        return model
