"""Offline model installer: assembly, verification, idempotence, resume and lookup errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import weights.install as install_module
import weights.registry as reg
from weights import (
    Manifest,
    ModelChecksumError,
    ModelError,
    ModelNotInstalledError,
    ModelSourceError,
    PartSpec,
    install_models,
    load_manifest,
    locate_installed_part,
    model_path,
    verify_models,
    voxtutor_home,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Fake:
    """Small fake parts on disk, a manifest describing them and a locator that counts calls."""

    root: Path
    home: Path
    pieces: dict[str, list[bytes]]
    located: list[PartSpec] = field(default_factory=list)

    def locate(self, part: PartSpec) -> Path:
        self.located.append(part)
        return self.root / part.package / part.path

    def data(self, name: str) -> bytes:
        return b"".join(self.pieces[name])

    def manifest(self, **sha_overrides: str) -> Manifest:
        def file(name: str) -> dict[str, Any]:
            parts = [
                {"package": f"pkg_{name}_{i}", "path": f"data/{name}.part{i}", "size": len(p)}
                for i, p in enumerate(self.pieces[name])
            ]
            digest = sha_overrides.get(name, sha(self.data(name)))
            return {"name": name, "size": len(self.data(name)), "sha256": digest, "parts": parts}

        entry = {"kind": "stt", "licence": "MIT", "requirements": ["fake-pkg==1.0"]}
        return Manifest.from_dict(
            {
                "default": ["fake-stt", "fake-llm"],
                "small": {"fake-llm": "fake-llm-small"},
                "models": [
                    {
                        **entry,
                        "id": "fake-stt",
                        "layout": "directory",
                        "files": [file("model.bin"), file("config.json")],
                    },
                    {
                        **entry,
                        "id": "fake-llm",
                        "kind": "llm",
                        "layout": "file",
                        "files": [file("tiny.gguf")],
                    },
                    {
                        **entry,
                        "id": "fake-llm-small",
                        "kind": "llm",
                        "layout": "file",
                        "files": [file("config.json")],
                    },
                ],
            }
        )

    def install(self, **kwargs: Any) -> list[Path]:
        kwargs.setdefault("manifest", self.manifest())
        return install_models(
            kwargs.pop("ids", None),
            home=self.home,
            pip_install=False,
            progress=False,
            locate_part=self.locate,
            **kwargs,
        )


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    monkeypatch.setattr(reg, "CHUNK_BYTES", 1000)  # several chunks per part
    pieces = {
        "model.bin": [os.urandom(3000), os.urandom(5500), os.urandom(1234)],
        "config.json": [b'{"layers": 6}\n'],
        "tiny.gguf": [os.urandom(4096), os.urandom(17)],
    }
    root = tmp_path / "site"
    for name, chunks in pieces.items():
        for i, chunk in enumerate(chunks):
            path = root / f"pkg_{name}_{i}" / "data" / f"{name}.part{i}"
            path.parent.mkdir(parents=True)
            path.write_bytes(chunk)
    return Fake(root, tmp_path / "home", pieces)


def test_assembles_parts_into_verified_files_with_stamps(fake: Fake) -> None:
    stt_dir, llm_file = fake.install()

    assert stt_dir == fake.home / "models" / "fake-stt"
    assert llm_file == fake.home / "models" / "fake-llm" / "tiny.gguf"
    assert (stt_dir / "model.bin").read_bytes() == fake.data("model.bin")
    assert (stt_dir / "config.json").read_bytes() == fake.data("config.json")
    assert llm_file.read_bytes() == fake.data("tiny.gguf")
    stamp = (stt_dir / "model.bin.sha256").read_text()
    assert stamp == f"{sha(fake.data('model.bin'))}  model.bin\n"
    assert not list(fake.home.rglob("*.partial"))
    assert model_path("fake-llm", fake.home, manifest=fake.manifest()) == llm_file


def test_second_install_reads_nothing(fake: Fake) -> None:
    fake.install()
    files = [p for p in fake.home.rglob("*") if p.is_file()]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    fake.located.clear()
    shutil.rmtree(fake.root)  # the parts are gone: any attempt to read them would fail

    paths = fake.install()

    assert fake.located == []
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert paths[1].read_bytes() == fake.data("tiny.gguf")


def test_checksum_mismatch_is_reported_and_leaves_no_file(fake: Fake) -> None:
    wrong = "0" * 64
    with pytest.raises(ModelChecksumError) as caught:
        fake.install(ids=["fake-stt"], manifest=fake.manifest(**{"model.bin": wrong}))

    message = str(caught.value)
    target = fake.home / "models" / "fake-stt" / "model.bin"
    assert str(target) in message
    assert wrong in message
    assert sha(fake.data("model.bin")) in message
    assert "voxtutor models install" in message
    assert not target.exists()
    assert not target.with_name("model.bin.partial").exists()
    assert not target.with_name("model.bin.sha256").exists()


def test_size_change_is_detected_by_model_path_and_verify(fake: Fake) -> None:
    fake.install()
    target = fake.home / "models" / "fake-stt" / "model.bin"
    with target.open("ab") as handle:
        handle.write(b"x")

    with pytest.raises(ModelChecksumError, match="voxtutor models install") as caught:
        model_path("fake-stt", fake.home, manifest=fake.manifest())
    assert "9735 bytes" in str(caught.value) and str(target) in str(caught.value)
    with pytest.raises(ModelChecksumError):
        verify_models(home=fake.home, manifest=fake.manifest())


def test_same_size_corruption_is_found_by_verify_and_repaired_by_install(fake: Fake) -> None:
    fake.install()
    target = fake.home / "models" / "fake-llm" / "tiny.gguf"
    corrupt = bytearray(target.read_bytes())
    corrupt[100] ^= 0xFF
    target.write_bytes(bytes(corrupt))
    model_path("fake-llm", fake.home, manifest=fake.manifest())  # cheap check cannot see it

    with pytest.raises(ModelChecksumError) as caught:
        verify_models(["fake-llm"], fake.home, manifest=fake.manifest())
    assert sha(bytes(corrupt)) in str(caught.value)

    fake.install(ids=["fake-llm"])
    assert target.read_bytes() == fake.data("tiny.gguf")
    assert verify_models(["fake-llm"], fake.home, manifest=fake.manifest()) == [target]


def test_resume_keeps_the_bytes_of_a_truncated_partial(fake: Fake) -> None:
    directory = fake.home / "models" / "fake-stt"
    directory.mkdir(parents=True)
    kept = fake.data("model.bin")[:4200]  # all of part 0 and a bit of part 1
    (directory / "model.bin.partial").write_bytes(kept)

    fake.install(ids=["fake-stt"])

    assert (directory / "model.bin").read_bytes() == fake.data("model.bin")
    assert "model.bin.part0" not in [part.path.rsplit("/", 1)[1] for part in fake.located]
    assert not (directory / "model.bin.partial").exists()


@pytest.mark.parametrize("junk", [b"garbage" * 100, os.urandom(20000)])
def test_resume_from_a_bad_partial_starts_the_file_over(fake: Fake, junk: bytes) -> None:
    directory = fake.home / "models" / "fake-stt"
    directory.mkdir(parents=True)
    (directory / "model.bin.partial").write_bytes(junk)

    fake.install(ids=["fake-stt"])

    assert (directory / "model.bin").read_bytes() == fake.data("model.bin")


def test_unstamped_file_is_rehashed_not_recopied(fake: Fake) -> None:
    stt_dir = fake.install(ids=["fake-stt"])[0]
    (stt_dir / "model.bin.sha256").unlink()
    with pytest.raises(ModelNotInstalledError):
        model_path("fake-stt", fake.home, manifest=fake.manifest())
    fake.located.clear()

    fake.install(ids=["fake-stt"])

    assert fake.located == []
    assert (stt_dir / "model.bin.sha256").read_text().startswith(sha(fake.data("model.bin")))


def test_missing_model_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError) as caught:
        model_path("qwen2.5-coder-1.5b", tmp_path)
    where = tmp_path / "models" / "qwen2.5-coder-1.5b"
    expected = (
        f"Model 'qwen2.5-coder-1.5b' is not installed in {where}. Run: voxtutor models install"
    )
    assert str(caught.value) == expected
    with pytest.raises(ModelNotInstalledError, match="voxtutor models install --model qwen2.5-"):
        model_path("qwen2.5-coder-0.5b", tmp_path)
    with pytest.raises(ModelNotInstalledError):
        verify_models(["whisper-base"], tmp_path)


def test_unknown_model_is_rejected_with_the_known_ids(fake: Fake) -> None:
    with pytest.raises(ModelError, match="Known: fake-stt, fake-llm"):
        fake.install(ids=["nope"])


def test_progress_output_does_not_break_the_install(fake: Fake, capsys: Any) -> None:
    install_models(
        home=fake.home, pip_install=False, manifest=fake.manifest(), locate_part=fake.locate
    )
    install_models(
        home=fake.home, pip_install=False, manifest=fake.manifest(), locate_part=fake.locate
    )
    assert "fake-llm: up to date" in capsys.readouterr().err


def test_real_manifest_default_and_small_sets() -> None:
    manifest = load_manifest()
    assert manifest.resolve() == ["whisper-base", "qwen2.5-coder-1.5b", "piper-en_US-joe-medium"]
    assert manifest.resolve(small=True)[1] == "qwen2.5-coder-0.5b"
    for spec in manifest.models.values():
        assert spec.kind in {"stt", "llm", "tts"} and spec.licence
        assert all("==" in requirement for requirement in spec.requirements)
        for file in spec.files:
            assert sum(part.size for part in file.parts) == file.size and len(file.sha256) == 64


def test_voxtutor_home_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VOXTUTOR_HOME", str(tmp_path))
    assert voxtutor_home() == tmp_path
    monkeypatch.delenv("VOXTUTOR_HOME")
    assert voxtutor_home().name == "voxtutor"


def test_locate_installed_part_goes_through_importlib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "voxtutor_fake_part_pkg"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "part01.bin").write_bytes(b"abc")
    monkeypatch.syspath_prepend(str(tmp_path))

    found = locate_installed_part(PartSpec("voxtutor_fake_part_pkg", "data/part01.bin", 3))

    assert found == package / "data" / "part01.bin"
    with pytest.raises(ModelSourceError, match="lacks data/part02.bin"):
        locate_installed_part(PartSpec("voxtutor_fake_part_pkg", "data/part02.bin", 3))
    with pytest.raises(ModelSourceError, match="not installed"):
        locate_installed_part(PartSpec("voxtutor_no_such_pkg", "data/x", 1))


def test_missing_packages_are_pip_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifest = Manifest.from_dict(
        {
            "default": ["m"],
            "models": [
                {
                    "id": "m",
                    "kind": "tts",
                    "licence": "MIT",
                    "layout": "file",
                    "requirements": ["voxtutor-fake-voice==2.0"],
                    "files": [
                        {
                            "name": "v.onnx",
                            "size": 2,
                            "sha256": sha(b"hi"),
                            "parts": [
                                {"package": "voxtutor_fake_voice", "path": "v.onnx", "size": 2}
                            ],
                        }
                    ],
                },
            ],
        }
    )
    commands: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        commands.append(command)
        (tmp_path / "voxtutor_fake_voice").mkdir()
        (tmp_path / "voxtutor_fake_voice" / "__init__.py").write_text("")
        (tmp_path / "voxtutor_fake_voice" / "v.onnx").write_bytes(b"hi")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(install_module.subprocess, "run", fake_pip)
    with pytest.raises(ModelSourceError, match="pip install .*voxtutor-fake-voice==2.0"):
        install_models(home=tmp_path / "h", pip_install=False, progress=False, manifest=manifest)
    assert commands == []

    [path] = install_models(home=tmp_path / "h", progress=False, manifest=manifest)

    assert commands[0][:4] == [sys.executable, "-m", "pip", "install"]
    assert commands[0][-1] == "voxtutor-fake-voice==2.0"
    assert path.read_bytes() == b"hi"


def test_installed_packages_cost_no_pip_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install_module.subprocess, "run", pytest.fail)
    install_module.ensure_packages(load_manifest().models.values())


def test_real_packages_install_and_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whisper base (145 MB), the Piper voice (63 MB) and the 0.5B GGUF (491 MB): about 3 s here.
    # The 1.5B GGUF is left out (1.1 GB); the installer code path is the same.
    monkeypatch.setenv("VOXTUTOR_HOME", str(tmp_path))
    ids = ["whisper-base", "piper-en_US-joe-medium", "qwen2.5-coder-0.5b"]
    try:
        paths = install_models(ids, pip_install=False, progress=False)
        manifest = load_manifest()
        for model_id, path in zip(ids, paths, strict=True):
            assert path == model_path(model_id)
            for file in manifest.get(model_id).files:
                with open(reg.model_dir(model_id) / file.name, "rb") as handle:
                    assert hashlib.file_digest(handle, "sha256").hexdigest() == file.sha256
        assert sorted(p.name for p in paths[0].iterdir() if p.suffix != ".sha256") == [
            "config.json",
            "model.bin",
            "tokenizer.json",
            "vocabulary.json",
        ]
        assert paths[2].suffix == ".gguf"
        assert verify_models(ids) == paths
    finally:
        shutil.rmtree(tmp_path / "models", ignore_errors=True)  # pytest keeps tmp dirs around
