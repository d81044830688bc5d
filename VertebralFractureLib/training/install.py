"""Installing trained weights into ``Resources/Models`` with their sha256 and model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from VertebralFractureLib.models import models_dir, sha256_of

MAX_BYTES = 25 * 1024 * 1024


def install_model(name: str, weights: str | Path, card: dict[str, Any], directory: str | Path | None = None) -> Path:
    """Copy a ``state_dict`` file to ``<models>/<name>.pt`` and record it in ``models.json``.

    Args:
        name: registry name ("localization", ...).
        weights: a file saved with ``torch.save(model.state_dict(), …)``.
        card: model-card fields (architecture, spacing_mm, patch_size, classes, training_data,
            metrics, version); ``name``, ``file`` and ``sha256`` are filled in here.
        directory: the models folder (default: :func:`models_dir`).

    Raises:
        ValueError: when the file is larger than 25 MB or does not hold a plain state_dict.
    """
    import torch

    d = Path(directory) if directory is not None else models_dir()
    weights = Path(weights)
    if weights.stat().st_size > MAX_BYTES:
        raise ValueError(f"{weights} is {weights.stat().st_size / 2**20:.1f} MB; model files must be ≤ 25 MB")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ValueError(f"{weights} does not hold a plain state_dict")
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{name}.pt"
    shutil.copyfile(weights, target)
    entry = {**card, "name": name, "file": target.name, "sha256": sha256_of(target)}
    registry_path = d / "models.json"
    data = json.loads(registry_path.read_text()) if registry_path.exists() else {"models": []}
    data["models"] = [m for m in data.get("models", []) if m.get("name") != name] + [entry]
    registry_path.write_text(json.dumps(data, indent=2) + "\n")
    return target


def installed_entry(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The installed registry entry (card) of ``name``; empty when none is installed."""
    index = (Path(directory) if directory is not None else models_dir()) / "models.json"
    if not index.is_file():
        return {}
    return next((m for m in json.loads(index.read_text(encoding="utf-8")).get("models", []) if m.get("name") == name),
                {})


def installed_ledger(name: str, directory: str | Path | None = None) -> list[dict[str, Any]]:
    """The training ledger on the installed card of ``name`` (empty when none is installed): the runs
    a resumed run continues."""
    return list(installed_entry(name, directory).get("ledger", []))


def half_precision_copy(weights: str | Path) -> Path:
    """A copy of a ``state_dict`` file with its floating-point tensors in half precision
    (``<stem>-fp16.pt`` beside it), to install small; networks load it back in single precision."""
    import torch

    weights = Path(weights)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    out = weights.with_name(weights.stem + "-fp16.pt")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out)
    return out
