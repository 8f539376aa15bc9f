"""Usage metering and cost: price table, token buckets, SQL aggregation, API and CLI."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pipecat.observers.service_metrics_observer import ServiceUsageKind, ServiceUsageRecord
from sqlalchemy import update
from typer.testing import CliRunner

from config.prices import PriceError, exact_quantity, load_prices, usd
from config.tiers import load_tiers
from observers.usage_meter import usage_rows
from store import Store
from store.models import UsageEvent
from store.usage import usage_window
from testkit.api_support import V1, Api, assert_error

PRICES = load_prices()
M = Decimal(1_000_000)


# -- the price table ----------------------------------------------------------------------


def test_price_table_prices_a_median_session() -> None:
    # A median exam session: 12 exchanges of 600 spoken characters (7,200), 12 answers of 20 s
    # (240 s of learner audio), 2,500 prompt and 400 completion tokens per exchange.
    assert PRICES.cost("deepgram", "tts", "aura-2-thalia-en", "characters", 7200) == Decimal(
        "0.216"
    )
    assert PRICES.cost("deepgram", "stt", "nova-3-general", "audio_seconds", 240.0) == Decimal(
        "0.0308"
    )
    assert PRICES.cost("cartesia", "tts", "sonic-3", "characters", 7200) == Decimal("0.2808")
    assert PRICES.cost("openai", "tts", "tts-1", "characters", 7200) == Decimal("0.108")
    sonnet_in = PRICES.cost("anthropic", "llm", "claude-sonnet-4-6", "prompt_tokens", 30_000)
    sonnet_out = PRICES.cost("anthropic", "llm", "claude-sonnet-4-5", "completion_tokens", 4_800)
    assert (sonnet_in, sonnet_out) == (Decimal("0.09"), Decimal("0.072"))
    # The more specific glob wins: tts-1-hd is not priced as tts-1.
    assert PRICES.cost("openai", "tts", "tts-1-hd", "characters", 7200) == Decimal("0.216")


PRICING_PAGES = {
    "anthropic": "https://platform.claude.com/docs/en/about-claude/pricing",
    "deepgram": "https://deepgram.com/pricing",
    "cartesia": "https://cartesia.ai/pricing",
}
"""The provider's own public pricing page that each of its price entries must cite."""


def test_every_price_names_its_source_and_date() -> None:
    for entry in PRICES.entries:
        assert entry.source.strip() and entry.as_of.year >= 2025, entry
        if entry.provider not in ("local", "text"):
            assert entry.source.startswith("https://"), entry
    for provider, page in PRICING_PAGES.items():
        entries = [e for e in PRICES.entries if e.provider == provider]
        assert entries and all(page in e.source.split() for e in entries), provider


def test_every_model_a_tier_can_use_has_a_price() -> None:
    main_metric = {"stt": "audio_seconds", "llm": "prompt_tokens", "tts": "characters"}
    for tier in load_tiers().values():
        links = [("llm", tier.realtime)] if tier.realtime else []
        links += [(role, link) for role in ("stt", "llm", "tts") for link in getattr(tier, role)]
        for role, link in links:
            assert link is not None
            # Deepgram TTS reports its voice as the model (aura-2-thalia-en).
            models = list(link.voices.values()) if link.provider == "deepgram" else []
            for model in models or [link.model or "any-local-model"]:
                price = PRICES.lookup(link.provider, role, model, main_metric[role])
                assert price is not None, (tier.name, role, link.provider, model)


def test_a_price_quoted_in_the_wrong_unit_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text(
        "prices:\n  - {provider: deepgram, service: tts, models: ['aura-2*'], per: minute,\n"
        "     usd: {characters: '0.03'}, source: x, as_of: 2026-01-01}\n"
    )
    with pytest.raises(PriceError, match="cannot price it per 'minute'"):
        load_prices(bad)


def test_quantities_are_exact_and_money_has_six_decimals() -> None:
    assert exact_quantity("audio_seconds", 0.4 + 0.2 + 0.4) == Decimal("1.000000")
    assert exact_quantity("characters", 7200.0) == Decimal(7200)
    assert usd(Decimal("0.0077") / 60) == "0.000128"
    assert usd(Decimal("0.2808")) == "0.280800"


def test_month_and_day_windows_are_utc_and_half_open() -> None:
    assert usage_window("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="YYYY-MM"):
        usage_window("2026-13")


# -- token buckets --------------------------------------------------------------------------


def _llm(**tokens: int) -> ServiceUsageRecord:
    return ServiceUsageRecord(
        kind=ServiceUsageKind.LLM, processor="X#0", model="m", timestamp=0.0, **tokens
    )


def _buckets(record: ServiceUsageRecord, provider: str) -> dict[str, float]:
    return {r.metric: r.quantity for r in usage_rows(record, provider)}


def test_plain_token_usage_is_stored_as_reported() -> None:
    record = _llm(prompt_tokens=812, completion_tokens=57, total_tokens=869)
    assert _buckets(record, "openai") == {"prompt_tokens": 812, "completion_tokens": 57}


def test_cached_tokens_are_not_billed_twice_gross_or_net() -> None:
    # OpenAI reports prompt_tokens gross (cache inside), Anthropic net (cache beside it).
    openai = _llm(prompt_tokens=1000, completion_tokens=50, total_tokens=1050,
                  cache_read_input_tokens=400)  # fmt: skip
    anthropic = _llm(prompt_tokens=600, completion_tokens=50, total_tokens=1250,
                     cache_read_input_tokens=400, cache_creation_input_tokens=200)  # fmt: skip
    assert _buckets(openai, "openai") == {
        "prompt_tokens": 600,
        "cache_read_input_tokens": 400,
        "completion_tokens": 50,
    }
    assert _buckets(anthropic, "anthropic") == {
        "prompt_tokens": 600,
        "cache_read_input_tokens": 400,
        "cache_creation_input_tokens": 200,
        "completion_tokens": 50,
    }


def test_realtime_audio_tokens_get_their_own_buckets_and_prices() -> None:
    # 500 in = 200 text (50 of them cached) + 300 audio (100 cached); 200 out = 150 audio.
    record = _llm(prompt_tokens=500, completion_tokens=200, total_tokens=700,
                  cache_read_input_tokens=150, input_audio_tokens=300,
                  cache_read_input_audio_tokens=100, output_audio_tokens=150)  # fmt: skip
    rows = usage_rows(record, "openai")
    assert {r.metric: r.quantity for r in rows} == {
        "prompt_tokens": 150,
        "cache_read_input_tokens": 50,
        "input_audio_tokens": 200,
        "cache_read_input_audio_tokens": 100,
        "completion_tokens": 50,
        "output_audio_tokens": 150,
    }
    assert sum(r.quantity for r in rows) == 700  # every token in exactly one bucket
    cost = sum(
        PRICES.cost("openai", "llm", "gpt-realtime", r.metric, r.quantity) or Decimal(-1)
        for r in rows
    )
    hand = 150 * 4 + 50 * Decimal("0.4") + 200 * 32 + 100 * Decimal("0.4") + 50 * 16 + 150 * 64
    assert cost == hand / M


# -- the store: SQL aggregation and cost --------------------------------------------------


@dataclass
class Seeded:
    key_a: str
    key_b: str
    jana: str
    petr: str
    sessions: dict[str, str]


async def _at(store: Store, session_id: str, when: datetime) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            update(UsageEvent).where(UsageEvent.session_id == session_id).values(created_at=when)
        )


async def seed(store: Store, key_a: str | None = None, key_b: str | None = None) -> Seeded:
    if key_a is None:
        key_a = (await store.create_api_key("A"))[0].id
    if key_b is None:
        key_b = (await store.create_api_key("B"))[0].id
    jana = (await store.create_learner(key_a, "Jana", "en")).id
    petr = (await store.create_learner(key_a, "Petr", "de")).id
    bob = (await store.create_learner(key_b, "Bob", "en")).id
    Row = tuple[str, str, str, str, float]
    plan: list[tuple[str, str, str, str, datetime, list[Row]]] = [
        ("s1", jana, key_a, "checkride_prep", datetime(2026, 3, 10, 23, 59, tzinfo=UTC), [
            ("tts", "deepgram", "aura-2-thalia-en", "characters", 7200),
            ("stt", "deepgram", "nova-3-general", "audio_seconds", 240.0),
            ("llm", "anthropic", "claude-sonnet-4-6", "prompt_tokens", 30_000),
            ("llm", "anthropic", "claude-sonnet-4-6", "completion_tokens", 4_800),
        ]),
        ("s2", jana, key_a, "dpe_live", datetime(2026, 3, 11, 0, 0, tzinfo=UTC), [
            ("tts", "cartesia", "sonic-3", "characters", 7200),
            ("stt", "deepgram", "nova-3-general", "audio_seconds", 0.4),
            ("stt", "deepgram", "nova-3-general", "audio_seconds", 0.6),
        ]),
        ("s3", petr, key_a, "local", datetime(2026, 4, 2, 12, 0, tzinfo=UTC), [
            ("stt", "local", "whisper-base", "audio_seconds", 12.5),
            ("llm", "local", "qwen", "prompt_tokens", 500),
            ("tts", "local", "de", "characters", 300),
            ("llm", "openai", "qwen-not-priced", "prompt_tokens", 100),
        ]),
        ("s4", bob, key_b, "ground_school", datetime(2026, 3, 10, 8, 0, tzinfo=UTC), [
            ("tts", "openai", "gpt-4o-mini-tts", "characters", 1000),
        ]),
    ]  # fmt: skip
    sessions = {}
    for name, learner, key, tier, when, rows in plan:
        s, _ = await store.create_session(learner, key, "aviation-examiner", tier, "webrtc")
        for row in rows:
            await store.add_usage_event(s.id, *row)
        await _at(store, s.id, when)
        sessions[name] = s.id
    return Seeded(key_a, key_b, jana, petr, sessions)


S1 = Decimal("0.216") + Decimal("0.0308") + Decimal("0.09") + Decimal("0.072")
S2 = Decimal("0.2808") + Decimal("0.0077") / 60  # Cartesia 7,200 chars + Nova-3 1.0 s


async def test_cost_per_session_learner_and_tier_match_hand_computed_values(store: Store) -> None:
    db = await seed(store)
    by_session = await store.usage_report("session", PRICES, owner_key_id=db.key_a)
    costs = {g.key: g.cost for g in by_session.groups}
    assert costs == {db.sessions["s1"]: S1, db.sessions["s2"]: S2, db.sessions["s3"]: 0}
    assert {g.label for g in by_session.groups} == {"Jana", "Petr"}

    by_learner = await store.usage_report("learner", PRICES, owner_key_id=db.key_a)
    jana, petr = by_learner.groups  # ordered by name
    assert (jana.key, jana.label, jana.sessions, jana.cost) == (db.jana, "Jana", 2, S1 + S2)
    assert jana.quantity("stt", "audio_seconds") == pytest.approx(241.0)
    assert jana.quantity("tts", "characters") == 14_400
    assert (petr.label, petr.sessions, petr.cost, petr.unpriced) == ("Petr", 1, 0, 1)
    assert by_learner.cost == S1 + S2
    assert usd(by_learner.cost) == "0.689728"

    by_tier = await store.usage_report("tier", PRICES, owner_key_id=db.key_a)
    assert {g.key: g.cost for g in by_tier.groups} == {
        "checkride_prep": S1,
        "dpe_live": S2,
        "local": 0,
    }


async def test_days_and_months_are_utc_calendar_periods(store: Store) -> None:
    db = await seed(store)
    by_day = await store.usage_report("day", PRICES, owner_key_id=db.key_a)
    assert [(g.key, g.cost) for g in by_day.groups] == [
        ("2026-03-10", S1),  # 23:59 UTC stays on the 10th
        ("2026-03-11", S2),
        ("2026-04-02", 0),
    ]
    since, until = usage_window("2026-03")
    march = await store.usage_report(
        "tier", PRICES, owner_key_id=db.key_a, since=since, until=until
    )
    assert {g.key for g in march.groups} == {"checkride_prep", "dpe_live"}
    by_month = await store.usage_report("month", PRICES, owner_key_id=db.key_a)
    assert [(g.key, g.sessions, g.cost) for g in by_month.groups] == [
        ("2026-03", 2, S1 + S2),
        ("2026-04", 1, 0),
    ]


async def test_a_key_sees_only_its_own_usage_and_the_cli_sees_all(store: Store) -> None:
    db = await seed(store)
    b = await store.usage_report("tier", PRICES, owner_key_id=db.key_b)
    assert [(g.key, g.cost) for g in b.groups] == [("ground_school", Decimal("0.0159"))]
    everyone = await store.usage_report("day", PRICES)
    assert everyone.groups[0].key == "2026-03-10"
    assert everyone.groups[0].cost == S1 + Decimal("0.0159")
    only_jana = await store.usage_report("tier", PRICES, learner_id=db.jana)
    assert {g.key for g in only_jana.groups} == {"checkride_prep", "dpe_live"}


# -- GET /api/v1/usage ----------------------------------------------------------------------


async def test_api_groups_usage_by_learner_tier_and_day_for_the_calling_key(api: Api) -> None:
    key_b = await api.store.authenticate(api.key_b)
    assert key_b is not None
    db = await seed(api.store, api.key_a_id, key_b.id)

    r = await api.client.get(f"{V1}/usage", headers=api.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["group_by"] == "learner" and body["currency"] == "USD"
    assert body["total_cost_usd"] == "0.689728"
    jana, petr = body["rows"]
    assert (jana["key"], jana["label"], jana["sessions"]) == (db.jana, "Jana", 2)
    assert jana["cost_usd"] == "0.689728" and jana["unpriced"] == 0
    aura = next(i for i in jana["items"] if i["model"] == "aura-2-thalia-en")
    assert aura["quantity"] == 7200 and aura["unit"] == "characters"
    assert (aura["price_usd"], aura["price_per"], aura["cost_usd"]) == (
        "0.030",
        "1K characters",
        "0.216000",
    )
    assert aura["price_source"].startswith("https://deepgram.com/pricing ")
    assert aura["price_as_of"] == "2026-02-14"
    assert petr["cost_usd"] == "0.000000" and petr["unpriced"] == 1
    unpriced = next(i for i in petr["items"] if i["model"] == "qwen-not-priced")
    assert unpriced["cost_usd"] is None and unpriced["price_usd"] is None

    r = await api.client.get(f"{V1}/usage", params={"group_by": "tier"}, headers=api.a)
    assert [(x["key"], x["cost_usd"]) for x in r.json()["rows"]] == [
        ("checkride_prep", "0.408800"),
        ("dpe_live", "0.280928"),
        ("local", "0.000000"),
    ]
    params = {"group_by": "day", "from": "2026-03-10", "to": "2026-03-10"}
    r = await api.client.get(f"{V1}/usage", params=params, headers=api.a)
    assert [(x["key"], x["cost_usd"]) for x in r.json()["rows"]] == [("2026-03-10", "0.408800")]
    params = {"group_by": "tier", "month": "2026-03", "tier": "dpe_live"}
    r = await api.client.get(f"{V1}/usage", params=params, headers=api.a)
    assert [(x["key"], x["sessions"]) for x in r.json()["rows"]] == [("dpe_live", 1)]

    # Key B sees its own learner only; A's learner id filters B's report to nothing.
    r = await api.client.get(f"{V1}/usage", params={"group_by": "tier"}, headers=api.b)
    assert [(x["key"], x["cost_usd"]) for x in r.json()["rows"]] == [("ground_school", "0.015900")]
    r = await api.client.get(f"{V1}/usage", params={"learner_id": db.jana}, headers=api.b)
    assert r.json()["rows"] == [] and r.json()["total_cost_usd"] == "0.000000"


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "week"},
        {"month": "2026-3"},
        {"month": "2026-03", "from": "2026-03-01"},
        {"from": "2026-03-02", "to": "2026-03-01"},
        {"from": "yesterday"},
        {"tier": "platinum"},
    ],
)
async def test_api_refuses_bad_usage_parameters_with_422(lite: Api, params: dict) -> None:
    r = await lite.client.get(f"{V1}/usage", params=params, headers=lite.a)
    assert_error(r, 422, "invalid_request")


async def test_api_usage_needs_an_api_key(lite: Api) -> None:
    assert_error(await lite.client.get(f"{V1}/usage"), 401, "unauthorized")


# -- voxtutor usage -------------------------------------------------------------------------


def test_cli_prints_the_same_costs_as_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli
    from cli import app
    from config.settings import get_settings

    monkeypatch.setattr(cli.console, "width", 160)

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def prepare() -> Seeded:
        async with await Store.open(url) as store:
            return await seed(store)

    asyncio.run(prepare())
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        r = runner.invoke(app, ["usage", "--by", "tier"])
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        row = next(line for line in lines if "checkride_prep" in line)
        assert "0.408800" in row and "7,200" in row and "240.0" in row
        assert "~0.280928" in next(line for line in lines if "dpe_live" in line)  # Cartesia est.
        assert "0.015900" in next(line for line in lines if "ground_school" in line)
        assert "0.705628" in next(line for line in lines if "total" in line)  # every key
        r = runner.invoke(app, ["usage", "--by", "month", "--month", "2026-04"])
        assert r.exit_code == 0 and "2026-04" in r.stdout and "2026-03" not in r.stdout
        assert "+1 unpriced" in r.stdout
        r = runner.invoke(app, ["usage", "--by", "week"])
        assert r.exit_code == 2 and "--by must be one of" in r.output
    finally:
        get_settings.cache_clear()


async def test_api_accepts_the_widest_day_range(lite: Api) -> None:
    params = {"group_by": "month", "from": "0001-01-01", "to": "9999-12-31"}
    r = await lite.client.get(f"{V1}/usage", params=params, headers=lite.a)
    assert r.status_code == 200, r.text
    assert r.json()["until"] is None and r.json()["rows"] == []
