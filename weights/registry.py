"""Where voxtutor's offline models live, what they should contain, and whether they are intact.

``weights/manifest.json`` lists every model: kind, licence, the pinned pip packages carrying its
bytes and, per output file, the ordered parts, the size in bytes and the SHA-256. Models are
installed under ``<home>/models/<id>/`` (``<home>`` is ``$VOXTUTOR_HOME`` or the platform cache
directory); each file gets a ``<file>.sha256`` stamp (``sha256sum`` format) only after it was
verified, so :func:`model_path` answers from a stat and the stamp while :func:`verify_models`
re-hashes everything. Nothing here ever downloads from a model hub.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FIX_COMMAND = "voxtutor models install"
CHUNK_BYTES = 8 * 1024 * 1024
STAMP_SUFFIX, PARTIAL_SUFFIX = ".sha256", ".partial"
MANIFEST_PATH = Path(__file__).with_name("manifest.json")

WHISPER_MODEL = "whisper-base"
"""The local tier's STT model (faster-whisper base, CTranslate2 int8)."""
PIPER_MODEL = "piper-en_US-joe-medium"
"""The local tier's English voices (Piper; the directory holds every packaged voice)."""
FileState = Literal["current", "missing", "wrong-size", "unstamped"]
_LAYOUTS = {("directory", True), ("directory", False), ("file", True)}


class ModelError(RuntimeError):
    """Base class of every model installation or lookup error."""


class ModelNotInstalledError(ModelError):
    """A model, one of its files or its verification stamp is missing from the cache."""

    def __init__(self, model_id: str, location: Path, fix: str = FIX_COMMAND) -> None:
        self.model_id, self.location, self.fix = model_id, location, fix
        super().__init__(f"Model '{model_id}' is not installed in {location}. Run: {fix}")


class ModelChecksumError(ModelError):
    """A model file's size (bytes) or SHA-256 differs from the manifest."""

    def __init__(
        self,
        path: Path,
        *,
        expected_sha256: str,
        actual_sha256: str | None = None,
        expected_size: int | None = None,
        actual_size: int | None = None,
        fix: str = FIX_COMMAND,
    ) -> None:
        self.path, self.expected_sha256, self.actual_sha256 = path, expected_sha256, actual_sha256
        self.expected_size, self.actual_size, self.fix = expected_size, actual_size, fix
        details = []
        if actual_size is not None and actual_size != expected_size:
            details.append(f"size {actual_size} bytes, expected {expected_size} bytes")
        if actual_sha256 is not None:
            details.append(f"sha256 {actual_sha256}, expected {expected_sha256}")
        super().__init__(f"Model file {path} is corrupt: {'; '.join(details)}. Run: {fix}")


class ModelSourceError(ModelError):
    """The pip packages that carry a model's parts are missing, damaged or failed to install."""


@dataclass(frozen=True)
class PartSpec:
    """A piece of an output file: ``path`` inside the package ``package``, ``size`` bytes."""

    package: str
    path: str
    size: int


@dataclass(frozen=True)
class FileSpec:
    """An output file (``size`` bytes, hex ``sha256``): the concatenation of ``parts`` in order."""

    name: str
    size: int
    sha256: str
    parts: tuple[PartSpec, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A model: ``kind`` stt/llm/tts, ``requirements`` exact pip pins of its part packages.

    ``layout`` "directory": :func:`model_path` is the model directory; "file": its only file.
    """

    id: str
    kind: str
    licence: str
    requirements: tuple[str, ...]
    layout: Literal["directory", "file"]
    files: tuple[FileSpec, ...]
    description: str = ""
    licence_note: str = ""
    upstream: str = ""

    def path_in(self, directory: Path) -> Path:
        """Return what :func:`model_path` returns for this model installed in ``directory``."""
        return directory / self.files[0].name if self.layout == "file" else directory


@dataclass(frozen=True)
class Manifest:
    """All known ``models`` by id, the ``default`` set and the ``small`` substitutions."""

    models: Mapping[str, ModelSpec]
    default: tuple[str, ...]
    small: Mapping[str, str]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Build a manifest from its JSON form, checking that part sizes add up.

        Raises:
            ModelError: If the data is malformed or inconsistent.
        """
        models: dict[str, ModelSpec] = {}
        try:
            for entry in data["models"]:
                files = tuple(
                    FileSpec(**{**f, "parts": tuple(PartSpec(**p) for p in f["parts"])})
                    for f in entry["files"]
                )
                requirements = tuple(entry["requirements"])
                spec = ModelSpec(**{**entry, "requirements": requirements, "files": files})
                bad = [f.name for f in files if sum(p.size for p in f.parts) != f.size]
                if bad or not files or (spec.layout, len(files) == 1) not in _LAYOUTS:
                    raise ModelError(f"Manifest: inconsistent entry {spec.id} (parts of {bad})")
                models[spec.id] = spec
            manifest = cls(models, tuple(data["default"]), dict(data.get("small", {})))
        except (KeyError, TypeError) as exc:
            raise ModelError(f"Manifest: malformed ({exc!r})") from exc
        manifest.resolve([*manifest.default, *manifest.small, *manifest.small.values()])
        return manifest

    def get(self, model_id: str) -> ModelSpec:
        """Return the model with this id.

        Raises:
            ModelError: If the id is unknown (the message lists the known ids).
        """
        if model_id not in self.models:
            raise ModelError(f"Unknown model '{model_id}'. Known: {', '.join(self.models)}")
        return self.models[model_id]

    def resolve(self, ids: Sequence[str] | None = None, *, small: bool = False) -> list[str]:
        """Turn a CLI selection into ids: the default set if none; ``small`` swaps 1.5B for 0.5B.

        Raises:
            ModelError: If an id is unknown.
        """
        chosen = list(ids) if ids else list(self.default)
        if small:
            chosen = [self.small.get(model_id, model_id) for model_id in chosen]
        return [self.get(model_id).id for model_id in dict.fromkeys(chosen)]

    def fix_command(self, model_id: str) -> str:
        """Return the install command that provides ``model_id``."""
        return FIX_COMMAND if model_id in self.default else f"{FIX_COMMAND} --model {model_id}"


@functools.cache
def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    """Load (and cache) a manifest file; the packaged ``weights/manifest.json`` by default.

    Raises:
        ModelError: If the manifest is malformed or inconsistent.
    """
    return Manifest.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def voxtutor_home() -> Path:
    """Return the voxtutor cache root, ``Settings().home``, read afresh on each call.

    That is ``$VOXTUTOR_HOME``, or ``user_cache_dir("voxtutor")`` when it is unset.
    """
    from config.settings import Settings

    return Settings().home


def model_dir(model_id: str, home: Path | str | None = None) -> Path:
    """Return ``<home>/models/<model_id>`` (whether or not it exists)."""
    return (Path(home).expanduser() if home is not None else voxtutor_home()) / "models" / model_id


def stamp_path(path: Path) -> Path:
    """Return the stamp file that records the verified SHA-256 of ``path``."""
    return path.with_name(path.name + STAMP_SUFFIX)


def read_stamp(path: Path) -> str | None:
    """Return the digest recorded in ``path``'s stamp, or None if there is none."""
    try:
        words = stamp_path(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return words[0].lower() if words else None


def file_state(path: Path, spec: FileSpec) -> FileState:
    """Classify an installed file from its size and stamp alone (no hashing)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != spec.size:
        return "wrong-size"
    return "current" if read_stamp(path) == spec.sha256 else "unstamped"


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Return the SHA-256 hex digest of ``path`` (8 MiB reads; ``on_bytes(n)`` after each)."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(CHUNK_BYTES))
    with open(path, "rb") as handle:
        while n := handle.readinto(view):
            digest.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return digest.hexdigest()


def model_path(
    model_id: str, home: Path | str | None = None, *, manifest: Manifest | None = None
) -> Path:
    """Return the installed model's directory (Whisper, Piper) or file (GGUF); no hashing.

    Args:
        model_id: Manifest id, e.g. ``qwen2.5-coder-1.5b``.
        home: Cache root; defaults to :func:`voxtutor_home`.
        manifest: Manifest to use; defaults to the packaged one.

    Raises:
        ModelError: If the id is unknown.
        ModelNotInstalledError: If a file or its verification stamp is missing.
        ModelChecksumError: If a file has the wrong size in bytes (corrupt or truncated).
    """
    manifest = manifest or load_manifest()
    spec, directory = manifest.get(model_id), model_dir(model_id, home)
    fix = manifest.fix_command(model_id)
    for file in spec.files:
        path = directory / file.name
        state = file_state(path, file)
        if state == "wrong-size":
            size = path.stat().st_size
            raise ModelChecksumError(
                path,
                expected_sha256=file.sha256,
                expected_size=file.size,
                actual_size=size,
                fix=fix,
            )
        if state != "current":
            raise ModelNotInstalledError(model_id, directory, fix)
    return spec.path_in(directory)


def verify_models(
    ids: Sequence[str] | None = None,
    home: Path | str | None = None,
    *,
    small: bool = False,
    manifest: Manifest | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> list[Path]:
    """Fully re-hash every file of the given models and return their :func:`model_path` values.

    Args:
        ids: Model ids; None or empty means the default set.
        home: Cache root; defaults to :func:`voxtutor_home`.
        small: Apply the ``--small`` substitutions to the selection.
        manifest: Manifest to use; defaults to the packaged one.
        on_bytes: Progress callback, called with the byte count of each hashed chunk.

    Raises:
        ModelNotInstalledError: If a file or its stamp is missing.
        ModelChecksumError: If a file's size or SHA-256 differs from the manifest (its stamp is
            then removed, so the next install re-checks and rebuilds it).
    """
    manifest = manifest or load_manifest()
    paths = []
    for model_id in manifest.resolve(ids, small=small):
        paths.append(model_path(model_id, home, manifest=manifest))  # cheap checks first
        for file in manifest.get(model_id).files:
            path = model_dir(model_id, home) / file.name
            if (actual := hash_file(path, on_bytes)) != file.sha256:
                stamp_path(path).unlink(missing_ok=True)  # so that the fix command redoes it
                fix = manifest.fix_command(model_id)
                raise ModelChecksumError(
                    path, expected_sha256=file.sha256, actual_sha256=actual, fix=fix
                )
    return paths
