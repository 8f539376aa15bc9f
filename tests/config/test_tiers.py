from pathlib import Path

import pytest
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.deepgram.tts import DeepgramTTSService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from typer.testing import CliRunner

import cli
from cli import app
from config.personas import load_persona
from config.settings import Settings
from config.tiers import PROVIDER_KEY_ENV, Link, TierError, get_tier, load_tiers
from pipelines.providers import build_link

KEYS = list(PROVIDER_KEY_ENV.values())


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def all_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEYS:
        monkeypatch.setenv(name, f"test-{name.lower()}")


def test_packaged_tiers_load_with_the_issue_chains() -> None:
    tiers = load_tiers()
    assert list(tiers) == ["local", "ground_school", "checkride_prep", "dpe_live", "realtime"]
    dpe = tiers["dpe_live"]
    assert [x.provider for x in dpe.tts] == ["cartesia", "deepgram", "openai", "local", "text"]
    assert [x.provider for x in dpe.stt] == ["deepgram", "openai", "local"]
    assert [x.provider for x in dpe.llm] == ["anthropic", "openai", "local"]
    assert tiers["realtime"].kind == "speech_to_speech"
    # The paid tiers' hard quotas (sessions/month, exchanges/session, TTS characters/month).
    q = [tiers[t].quotas for t in ("ground_school", "checkride_prep", "dpe_live")]
    assert [x.sessions_per_month for x in q] == [30, 60, None]
    assert [x.exchanges_per_session for x in q] == [20, 30, 50]
    assert [x.tts_chars_per_month for x in q] == [200_000, 500_000, 1_000_000]
    assert tiers["local"].quotas.sessions_per_month is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("t:\n  title: T\n  stt: [{provider: nope}]\n", "nope"),
        (
            "t:\n  title: T\n  stt: [{provider: local}]\n  llm: [{provider: text}]\n"
            "  tts: [{provider: local}]\n",
            "TTS fallback only",
        ),
        ("t:\n  title: T\n  stt: [{provider: local}]\n  llm: [{provider: local}]\n", "needs stt"),
        ("t:\n  title: T\n  kind: speech_to_speech\n", "realtime link"),
        ("t:\n  title: T\n  colour: red\n", "colour"),
        ("- just a list\n", "mapping"),
        ("t: {title: T, quotas: {sessions_per_month: 0}}\n", "sessions_per_month"),
    ],
)
def test_invalid_tier_files_name_the_problem(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(body)
    with pytest.raises(TierError, match=needle):
        load_tiers(path)


def test_unknown_tier_lists_the_known_ones() -> None:
    with pytest.raises(TierError, match="known: local, ground_school"):
        get_tier("platinum")


def test_availability_names_missing_primary_keys_only(
    no_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiers = load_tiers()
    assert tiers["local"].missing_env() == []
    assert tiers["dpe_live"].missing_env() == [
        "ANTHROPIC_API_KEY",
        "CARTESIA_API_KEY",
        "DEEPGRAM_API_KEY",
    ]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "a")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "d")
    # OpenAI is only a backup on checkride_prep: its key is not required.
    assert tiers["checkride_prep"].missing_env() == []
    assert tiers["realtime"].missing_env() == ["OPENAI_API_KEY"]


def test_backups_without_keys_drop_out_of_the_chain(
    no_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "a")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "d")
    tier = get_tier("checkride_prep")
    assert [x.provider for x in tier.chain("llm", "en")] == ["anthropic", "local"]
    assert [x.provider for x in tier.chain("tts", "en")] == ["deepgram", "local", "text"]


def test_czech_persona_skips_aura2_which_has_no_czech_voice(all_keys: None) -> None:
    tier = get_tier("checkride_prep")
    assert [x.provider for x in tier.chain("tts", "cs")] == ["openai", "local", "text"]
    assert [x.provider for x in tier.chain("tts", "de")][0] == "deepgram"


def test_chain_with_nothing_left_is_an_error(no_keys: None) -> None:
    with pytest.raises(TierError, match="no tts provider"):
        get_tier("realtime").chain("tts", "en")


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        openai_base_url="http://127.0.0.1:1/v1",
        anthropic_base_url="http://127.0.0.1:2",
        deepgram_base_url="http://127.0.0.1:3",
        cartesia_url="ws://127.0.0.1:4/tts/websocket",
    )


def test_cloud_links_build_the_real_pipecat_services(all_keys: None, tmp_path: Path) -> None:
    examiner = load_persona("aviation-examiner")
    settings = _settings(tmp_path)
    dpe = get_tier("dpe_live")
    stt = build_link("stt", dpe.stt[0], examiner, settings)
    assert isinstance(stt, DeepgramSTTService)
    assert "METAR" in stt._settings.keyterm
    assert stt._settings.model == "nova-3-general"
    assert isinstance(build_link("stt", dpe.stt[1], examiner, settings), OpenAISTTService)
    llm = build_link("llm", dpe.llm[0], examiner, settings, level="B1")
    assert isinstance(llm, AnthropicLLMService)
    assert str(llm._client.base_url).startswith("http://127.0.0.1:2")
    assert "examiner" in llm._settings.system_instruction.lower()
    openai_llm = build_link("llm", dpe.llm[1], examiner, settings)
    assert isinstance(openai_llm, OpenAILLMService)
    assert openai_llm._settings.model == "gpt-4.1-mini"
    cartesia = build_link("tts", dpe.tts[0], examiner, settings)
    assert isinstance(cartesia, CartesiaTTSService)
    assert cartesia._url == "ws://127.0.0.1:4/tts/websocket"
    assert cartesia._settings.model == "sonic-3"
    deepgram = build_link("tts", dpe.tts[1], examiner, settings)
    assert isinstance(deepgram, DeepgramTTSService)
    assert deepgram._base_url == "ws://127.0.0.1:3"
    assert deepgram._settings.voice == "aura-2-thalia-en"
    openai_tts = build_link("tts", dpe.tts[2], examiner, settings)
    assert isinstance(openai_tts, OpenAITTSService)
    assert openai_tts._settings.voice == "onyx"


def test_link_without_a_key_or_voice_is_refused(no_keys: None, tmp_path: Path) -> None:
    czech = load_persona("czech-tutor")
    aura = Link(provider="deepgram", model="aura-2", voices={"en": "aura-2-thalia-en"})
    with pytest.raises(TierError, match="no voice for 'cs'"):
        build_link("tts", aura, czech, _settings(tmp_path))
    with pytest.raises(TierError, match="DEEPGRAM_API_KEY"):
        build_link("stt", Link(provider="deepgram", model="nova-3"), czech, _settings(tmp_path))


def test_cli_tiers_prints_providers_and_availability(
    no_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.console, "width", 250)
    result = CliRunner().invoke(app, ["tiers"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "yes" in rows["local"]
    assert "cartesia sonic-3" in rows["dpe_live"]
    assert "no (set" in rows["ground_school"]
    assert "CARTESIA_API_KEY" in result.output and "sk-" not in result.output
    assert "30 / 20 / 200,000" in rows["ground_school"]
