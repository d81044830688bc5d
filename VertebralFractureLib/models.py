"""The weights registry: ``Resources/Models/models.json``, integrity checks, safe loading, devices.

Every model of this product is trained by the project itself (``vertebral-fracture train``) and
shipped as a ``state_dict`` file of at most 25 MB with its sha256 and model card in
``models.json``::

    {"models": [{"name": "localization", "file": "localization.pt", "sha256": "…",
                 "architecture": {…}, "spacing_mm": [2, 2, 2], "patch_size": [96, 96, 128],
                 "classes": […], "training_data": "…", "metrics": {…}, "version": "…"}]}

Weights are loaded with ``torch.load(weights_only=True)`` only after the sha256 matched, so a
tampered or truncated file is refused before any byte of it is unpickled.
The radiomics classifier is a JSON parameter file instead, read by
:func:`VertebralFractureLib.radiomics.load_classifier` after the same check (:func:`require`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from VertebralFractureLib.errors import ModelIntegrityError, ModelNotAvailableError

#: Environment variable that points to another models folder (e.g. a site-wide install).
MODELS_DIR_ENV = "VF_MODELS_DIR"


class Device(str, Enum):
    """Where inference runs. ``auto`` picks CUDA, then Apple MPS, then the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class ModelCard:
    """One entry of ``models.json``."""

    name: str
    file: str
    sha256: str
    version: str = "0"
    architecture: dict[str, Any] = field(default_factory=dict)
    spacing_mm: tuple[float, ...] | None = None
    patch_size: tuple[int, ...] | None = None
    classes: tuple[str, ...] = ()
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    #: the measured accuracy in plain words, for the reader (report, Slicer panel, warnings)
    accuracy: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        try:
            return cls(
                name=str(d["name"]),
                file=str(d["file"]),
                sha256=str(d["sha256"]).lower(),
                version=str(d.get("version", "0")),
                architecture=dict(d.get("architecture", {})),
                spacing_mm=None if d.get("spacing_mm") is None else tuple(float(x) for x in d["spacing_mm"]),
                patch_size=None if d.get("patch_size") is None else tuple(int(x) for x in d["patch_size"]),
                classes=tuple(d.get("classes", ())),
                training_data=str(d.get("training_data", "")),
                metrics=dict(d.get("metrics", {})),
                postprocess=dict(d.get("postprocess", {})),
                accuracy=str(d.get("accuracy", "")),
            )
        except KeyError as err:
            raise ValueError(f"models.json entry misses the key {err}: {d!r}") from err


def resources_dir() -> Path:
    """``Resources/`` of this source tree or of the installed extension."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "Resources", here / "Resources"):
        if candidate.is_dir():
            return candidate
    return here.parent / "Resources"


def models_dir() -> Path:
    """``$VF_MODELS_DIR`` if set, else ``Resources/Models`` of this source tree or extension."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else resources_dir() / "Models"


def registry(directory: str | Path | None = None) -> dict[str, ModelCard]:
    """All model cards of ``models.json`` (empty when the file does not exist)."""
    d = Path(directory) if directory is not None else models_dir()
    path = d / "models.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    cards = [ModelCard.from_dict(m) for m in data.get("models", [])]
    return {c.name: c for c in cards}


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (remembered per path, size and modification time, so
    checking a model and then loading it hashes the file once)."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_status(name: str, directory: str | Path | None = None) -> str:
    """"ok", "missing" (not in the registry or file absent) or "corrupt" (sha256 mismatch)."""
    d = Path(directory) if directory is not None else models_dir()
    card = registry(d).get(name)
    if card is None or not (d / card.file).exists():
        return "missing"
    return "ok" if sha256_of(d / card.file) == card.sha256 else "corrupt"


def require(name: str, directory: str | Path | None = None) -> ModelCard:
    """The card of an installed, intact model.

    Raises:
        ModelNotAvailableError: the model is not registered or its file is missing.
        ModelIntegrityError: the file's sha256 differs from the registry.
    """
    d = Path(directory) if directory is not None else models_dir()
    card = registry(d).get(name)
    if card is None or not (d / card.file).exists():
        raise ModelNotAvailableError(
            f"model not available: the '{name}' weights are not installed in {d} "
            f"(train them with 'vertebral-fracture train' or install a release that ships them)"
        )
    actual = sha256_of(d / card.file)
    if actual != card.sha256:
        raise ModelIntegrityError(
            f"model '{name}': {card.file} has sha256 {actual[:12]}…, expected {card.sha256[:12]}… "
            "(file damaged or replaced; refusing to load it)"
        )
    return card


def load_state_dict(name: str, directory: str | Path | None = None) -> tuple[ModelCard, dict[str, Any]]:
    """Check a model's sha256, then load its ``state_dict`` safely (``weights_only=True``)."""
    import torch

    card = require(name, directory)
    d = Path(directory) if directory is not None else models_dir()
    state = torch.load(d / card.file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ModelIntegrityError(f"model '{name}': {card.file} does not hold a state_dict")
    return card, state


#: Networks kept by :func:`load_network` with ``cached=True``: (name, folder, sha256, builder, architecture) → net.
_NETWORKS: dict[tuple[str, str, str, str, str], Any] = {}


def load_network(name: str, build: Any, directory: str | Path | None = None,
                 cached: bool = False) -> tuple[ModelCard, Any]:
    """The installed model ``name``: its card and ``build(card.architecture)`` with the checked weights.

    With ``cached``, the network is built once per process and model file (keyed by its sha256, which
    is checked on every call): a batch worker analysing many studies loads each model once. The card
    is read anew each time (its thresholds may change without the weights). Only for inference — the
    cached network is shared.
    """
    if cached:
        card = require(name, directory)
        d = Path(directory) if directory is not None else models_dir()
        key = (name, str(d.resolve()), card.sha256, f"{getattr(build, '__module__', '')}.{getattr(build, '__qualname__', build)}",
               json.dumps(card.architecture, sort_keys=True, default=str))
        if key not in _NETWORKS:
            _NETWORKS[key] = load_network(name, build, directory)[1]
        return card, _NETWORKS[key]
    card, state = load_state_dict(name, directory)
    net = build(card.architecture)
    net.load_state_dict(state)
    return card, net


def select_device(preference: Device | str = Device.AUTO) -> str:
    """The torch device string for a preference.

    Raises:
        ValueError: for an unknown preference, or ``cuda`` when no CUDA device is present.
    """
    try:
        pref = Device(preference)
    except ValueError as err:
        raise ValueError(f"device must be one of auto, cpu, cuda; got {preference!r}") from err
    if pref is Device.CPU:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if pref is Device.CUDA:
        raise ValueError("device 'cuda' requested but no CUDA GPU is available (use --device cpu or auto)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
