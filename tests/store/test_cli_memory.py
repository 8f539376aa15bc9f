"""``voxtutor learners show`` and ``voxtutor report``: the memory from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts.assessment import Assessment, Correction
from store import Store
from testkit.providers.openai_fake import OpenAIFake

BUS = Assessment(
    kind="gec",
    text="Ich fahre mit der Bus.",
    corrected="Ich fahre mit dem Bus.",
    errors=(Correction("der Bus", "dem Bus", "mit takes the dative", "case"),),
)


async def seed(url: str) -> str:
    async with await Store.open(url) as store:
        key, _ = await store.create_api_key("k")
        learner = await store.create_learner(key.id, "Olga", "de", interests=["Jazz"])
        session, _ = await store.create_session(learner.id, key.id, "german-tutor", "local", "file")
        await store.add_turn(session.id, {"index": 1, "role": "learner", "text": BUS.text})
        await store.add_assessment(session.id, BUS.to_dict(), 1)
        await store.set_session_status(session.id, "ended")
        return session.id


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from config.settings import get_settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_learners_show_prints_the_model(cli_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import cli
    from cli import app

    monkeypatch.setattr(cli.console, "width", 160)
    asyncio.run(seed(cli_db))
    runner = CliRunner()
    r = runner.invoke(app, ["learners", "show", "olga"])
    assert r.exit_code == 0, r.output
    assert "Olga" in r.stdout and "A2" in r.stdout and "case" in r.stdout
    assert "der Bus → dem Bus" in r.stdout and "1 due" in r.stdout and "Jazz" in r.stdout
    r = runner.invoke(app, ["learners", "show", "Olga", "--json"])
    assert json.loads(r.stdout)["weaknesses"][0]["count"] == 1
    r = runner.invoke(app, ["learners", "show", "nobody"])
    assert r.exit_code == 2 and "no learner 'nobody'" in r.output


async def test_report_writes_a_pending_report_then_prints_it(cli_db: str) -> None:
    from cli import app

    sid = await seed(cli_db)
    summary = {"summary": "Olga practised the dative.", "strengths": ["clear"]}
    async with OpenAIFake(reply=json.dumps(summary)) as llm:
        runner = CliRunner()
        r = await asyncio.to_thread(
            runner.invoke, app, ["report", sid, "--llm-base-url", llm.base_url]
        )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["summary"] == "Olga practised the dative." and report["written_by"] == "local"
    assert report["corrections"][0]["original"] == "der Bus"
    r = await asyncio.to_thread(runner.invoke, app, ["report", "not-a-session"])
    assert r.exit_code == 2 and "no ended session" in r.output


def test_learners_link_prints_a_link_whose_token_opens_the_learner(cli_db: str) -> None:
    from cli import app

    asyncio.run(seed(cli_db))
    r = CliRunner().invoke(app, ["learners", "link", "Olga", "--base-url", "https://t.example"])
    assert r.exit_code == 0, r.output
    url = r.stdout.strip()
    assert url.startswith("https://t.example/#token=")
    token = url.split("#token=", 1)[1]

    async def whose() -> str | None:
        async with await Store.open(cli_db) as store:
            access = await store.learner_access(token)
            return access.learner.name if access else None

    assert asyncio.run(whose()) == "Olga"
    r = CliRunner().invoke(app, ["learners", "link", "nobody"])
    assert r.exit_code == 2
