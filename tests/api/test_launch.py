"""One launch path: concurrent session starts never exceed the slots, refusals lose nothing.

The supervisor here is the real ``runtime.supervisor.SessionSupervisor``; its session
processes are a stand-in script (no models) that takes 0.3 s to report ready, so the
requests overlap the way real ones (spare hand-over, model loading) do.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from api.launch import LaunchError, LaunchRequest, launch
from config.personas import load_persona
from config.settings import Settings
from runtime.supervisor import SessionSupervisor
from server import create_app
from store import Store
from testkit.api_support import V1, Api, FakeSupervisor, running

STAND_IN = """\
#!{python}
# Stands in for `python -m runtime.session_process --stdin`: notes its start, reports ready after
# 0.3 s, ends when stdin closes or an `end` request arrives.
import json, sys, time
with open({starts!r}, "a") as f:
    f.write(json.loads(sys.stdin.readline())["spec"]["session_id"] + "\\n")
time.sleep(0.3)
print(json.dumps({{"event": "ready"}}), flush=True)
for line in sys.stdin:
    if json.loads(line).get("op") == "end":
        break
print(json.dumps({{"event": "ended", "reason": "done"}}), flush=True)
"""


def stand_in(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that the supervisor runs as its ``python``, and its file of starts."""
    starts = tmp_path / "starts.txt"
    exe = tmp_path / "session-process"
    exe.write_text(textwrap.dedent(STAND_IN.format(python=sys.executable, starts=str(starts))))
    exe.chmod(0o755)
    return exe, starts


async def test_twelve_simultaneous_starts_with_four_slots_start_four_processes(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXTUTOR_MAX_SESSIONS", "4")
    settings = Settings(home=tmp_path)
    assert settings.max_sessions == 4
    exe, starts = stand_in(tmp_path)
    store = await Store.open(sqlite_url)
    key, plaintext = await store.create_api_key("app")
    learner = await store.create_learner(key.id, "Eva", "de")
    sup = SessionSupervisor(
        store, max_sessions=settings.max_sessions, log_dir=tmp_path / "logs", python=str(exe)
    )
    app = create_app(settings, store=store, supervisor=sup, llm_base_url="http://127.0.0.1:9/v1")
    body = {"persona": "german-tutor", "tier": "local", "transport": "webrtc"}
    try:
        async with running(app) as client:
            replies = await asyncio.gather(
                *(
                    client.post(
                        f"{V1}/sessions",
                        json={**body, "learner_id": learner.id},
                        headers={"Authorization": f"Bearer {plaintext}"},
                    )
                    for _ in range(12)
                )
            )
            codes = sorted(r.status_code for r in replies)
            assert codes == [201] * 4 + [429] * 8, [r.text for r in replies]
            for r in replies:
                if r.status_code == 429:
                    assert r.json()["error"] == "at_capacity"
                    assert int(r.headers["Retry-After"]) >= 1
            assert len(starts.read_text().split()) == 4
            assert sup.active_count == 4
            # Refused before the first await: no session row was created for them.
            rows, total = await store.list_sessions(key.id, None, None, 100, 0)
            assert total == 4 and {row.status for row in rows} == {"ready"}
    finally:
        await store.close()
    assert len(starts.read_text().split()) == 4


async def german_session(api: Api) -> LaunchRequest:
    """A launch of a new learner's German session on the local tier over WebRTC.

    The learner's plan (``dpe_live``) includes every tier, so a test may switch tiers.
    """
    learner = await api.store.get_learner(await api.learner(plan="dpe_live"), api.key_a_id)
    assert learner is not None
    return LaunchRequest(
        learner=learner,
        persona=load_persona("german-tutor"),
        tier="local",
        transport="webrtc",
    )


async def test_a_refused_launch_gives_its_slot_back(lite) -> None:
    """A quota refusal, a failed spawn and a capacity refusal each leave no slot reserved."""
    ctx = lite.app.state.ctx
    sup: FakeSupervisor = lite.sup
    request = await german_session(lite)
    sup.spawn_error = RuntimeError("no model")
    with pytest.raises(LaunchError) as failed:
        await launch(ctx, request)
    assert (failed.value.status, failed.value.code) == (503, "session_start_failed")
    assert ctx.slots.reserved == 0
    sup.spawn_error = None
    first = await launch(ctx, request)
    second = await launch(ctx, request)
    assert first.session.status == second.session.status == "ready"
    with pytest.raises(LaunchError) as busy:
        await launch(ctx, request)
    assert (busy.value.status, busy.value.code) == (429, "at_capacity")
    assert busy.value.headers["Retry-After"] == "30"
    assert ctx.slots.reserved == 0 and sup.active_count == 2


async def test_slots_reserved_by_launches_in_flight_count_against_the_cap(lite) -> None:
    """Launches still awaiting the store hold their slots: a third is refused at once."""
    ctx = lite.app.state.ctx
    sup: FakeSupervisor = lite.sup
    request = await german_session(lite)
    first = asyncio.create_task(launch(ctx, request))
    second = asyncio.create_task(launch(ctx, request))
    await asyncio.sleep(0)  # both have reserved and wait on the store; neither has spawned
    assert ctx.slots.reserved == 2 and sup.active_count == 0
    with pytest.raises(LaunchError, match="slots are busy"):
        await launch(ctx, request)
    assert {(await first).session.status, (await second).session.status} == {"ready"}
    assert ctx.slots.reserved == 0 and sup.active_count == 2


async def test_the_supervisor_alone_starts_no_more_processes_than_its_slots(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Direct callers of ``spawn`` (benchmarks, tools) get the same cap as the API's launches."""
    from contracts.session_spec import SessionSpec
    from runtime.protocol import CapacityError

    exe, starts = stand_in(tmp_path)
    store = await Store.open(sqlite_url)
    key, _ = await store.create_api_key("app")
    learner = await store.create_learner(key.id, "Eva", "de")
    sup = SessionSupervisor(store, max_sessions=4, log_dir=tmp_path / "logs", python=str(exe))
    specs = []
    for _ in range(12):
        info, _token = await store.create_session(
            learner.id, key.id, "german-tutor", "local", "webrtc"
        )
        specs.append(
            SessionSpec(
                session_id=info.id,
                persona="german-tutor",
                tier="local",
                transport="webrtc",
                llm_base_url="http://127.0.0.1:9/v1",
            )
        )
    try:
        results = await asyncio.gather(*(sup.spawn(s) for s in specs), return_exceptions=True)
        refused = [r for r in results if isinstance(r, CapacityError)]
        assert len(refused) == 8 and results.count(None) == 4, results
        assert len(starts.read_text().split()) == 4 and sup.active_count == 4
    finally:
        await sup.shutdown()
        await store.close()


async def test_local_tier_sessions_beyond_the_llm_servers_cap_are_refused_with_a_reason(
    lite,
) -> None:
    """The next local session gets 429; a cloud-tier one, not on that server, still starts."""
    ctx = lite.app.state.ctx
    ctx.settings = ctx.settings.model_copy(update={"max_local_sessions": 1})
    sup: FakeSupervisor = lite.sup
    sup.max_sessions = 3
    local = await german_session(lite)
    first = await launch(ctx, local)
    assert first.session.status == "ready"

    with pytest.raises(LaunchError) as refused:
        await launch(ctx, local)
    assert (refused.value.status, refused.value.code) == (429, "local_at_capacity")
    assert "local tier's LLM server" in refused.value.message
    assert refused.value.headers["Retry-After"] == "60"

    cloud = await launch(ctx, LaunchRequest(**{**local.__dict__, "tier": "ground_school"}))
    assert cloud.session.status == "ready" and sup.active_tiers().count("local") == 1
    assert ctx.slots.reserved == ctx.slots.reserved_local == 0

    # When the local session ends its place is free again.
    sup.running.pop(first.session.id)
    assert (await launch(ctx, local)).session.status == "ready"


async def test_local_reservations_in_flight_count_against_the_llm_servers_cap(lite) -> None:
    ctx = lite.app.state.ctx
    ctx.settings = ctx.settings.model_copy(update={"max_local_sessions": 1})
    request = await german_session(lite)
    first = asyncio.create_task(launch(ctx, request))
    await asyncio.sleep(0)  # reserved, waiting on the store, not spawned
    assert ctx.slots.reserved_local == 1
    with pytest.raises(LaunchError) as refused:
        await launch(ctx, request)
    assert refused.value.code == "local_at_capacity"
    assert (await first).session.status == "ready"
    assert ctx.slots.reserved_local == 0
