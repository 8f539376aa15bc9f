"""Warm spare processes per kind: the local tier's preload Whisper and Piper, cloud ones don't.

A cloud-tier session that never fails over to a local model should not carry ~150 MB of them,
so the server keeps a ``cloud`` spare (imports only) beside the ``local`` one when a cloud tier
is usable, and a cloud tier builds its local backups without loading their models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from api.runtime import spare_kinds
from config.settings import Settings
from runtime.supervisor import SessionSupervisor, spare_kind
from store import Store


def rss_mb(pid: int) -> float:
    """Resident set of a process now, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize(
    ("tier", "transport", "kind"),
    [
        ("local", "webrtc", "local"),
        ("local", "twilio", "local"),
        ("ground_school", "webrtc", "cloud"),
        ("checkride_prep", "daily", "cloud"),
        ("dpe_live", "webrtc", "cloud"),
        ("dpe_live", "twilio", "phone"),
        ("ground_school", "telnyx", "phone"),
        ("realtime", "webrtc", "cloud"),
        ("no-such-tier", "webrtc", "cloud"),
    ],
)
def test_each_session_starts_from_the_spare_that_preloads_what_it_uses(
    tier: str, transport: str, kind: str
) -> None:
    assert spare_kind(tier, transport) == kind


def test_a_cloud_spare_is_kept_only_where_a_cloud_tier_is_usable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    phone = Settings(twilio_auth_token="twilio-secret")
    assert spare_kinds() == spare_kinds(phone) == ("local",)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")  # the realtime tier needs only this
    assert spare_kinds(Settings()) == ("local", "cloud")
    assert spare_kinds(phone) == ("local", "cloud", "phone")


def test_unknown_spare_kinds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown spare kinds"):
        SessionSupervisor(None, max_sessions=1, log_dir=tmp_path, spares=("gpu",))  # type: ignore[arg-type]


async def test_cloud_spares_load_no_local_model_and_phone_ones_no_webrtc(
    tmp_path: Path,
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    sup = SessionSupervisor(
        store, max_sessions=1, log_dir=tmp_path / "logs", spares=("local", "cloud", "phone")
    )
    try:
        sup.start_spare()
        await sup.wait_spares()
        pids = sup.spare_pids()
        assert set(pids) == {"local", "cloud", "phone"}, (tmp_path / "logs").glob("*.log")
        local, cloud, phone = (rss_mb(pids[k]) for k in ("local", "cloud", "phone"))
        # Whisper base (int8) and the Piper voice are well over 100 MB resident together.
        assert local - cloud > 100, (local, cloud)
        # aiortc, PyAV and daily-python: ~45 MB a phone call does not need.
        assert cloud - phone > 25, (cloud, phone)
    finally:
        await sup.shutdown()
        await store.close()


def maps_library(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a shared library whose file name starts with ``name``."""
    return any(
        Path(line.split()[-1]).name.startswith(name)
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if "/" in line
    )


@pytest.mark.parametrize("daily_key", [None, "dk-test-key"])
async def test_a_cloud_spare_loads_daily_python_only_when_daily_rooms_can_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daily_key: str | None
) -> None:
    if daily_key is None:
        monkeypatch.delenv("DAILY_API_KEY", raising=False)
    else:
        monkeypatch.setenv("DAILY_API_KEY", daily_key)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vox.db'}")
    sup = SessionSupervisor(store, max_sessions=1, log_dir=tmp_path / "logs", spares=("cloud",))
    try:
        sup.start_spare()
        await sup.wait_spares()
        pid = sup.spare_pids()["cloud"]
        # daily-python's native module (~9 MB resident); aiortc's SRTP binding is always there.
        assert maps_library(pid, "daily.abi3") is (daily_key is not None)
        assert maps_library(pid, "_binding.abi3")
    finally:
        await sup.shutdown()
        await store.close()
