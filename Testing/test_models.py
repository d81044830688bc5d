from __future__ import annotations

import json

import pytest

from VertebralFractureLib import models
from VertebralFractureLib.errors import ModelIntegrityError, ModelNotAvailableError


def _install(tmp_path, name="tiny", tamper=False):
    torch = pytest.importorskip("torch")
    net = torch.nn.Conv3d(1, 2, 3)
    f = tmp_path / f"{name}.pt"
    torch.save(net.state_dict(), f)
    digest = models.sha256_of(f)
    if tamper:
        f.write_bytes(f.read_bytes() + b"x")
    (tmp_path / "models.json").write_text(json.dumps({"models": [
        {"name": name, "file": f.name, "sha256": digest, "version": "1", "spacing_mm": [2, 2, 2],
         "patch_size": [32, 32, 32], "classes": ["a", "b"], "training_data": "test"}]}))
    return net


def test_shipped_registry_is_valid_and_intact():
    for name, card in models.registry().items():
        assert models.model_status(name) == "ok", f"{name}: {card.file} missing or sha256 mismatch"


def test_missing_model_is_refused_clearly(tmp_path):
    (tmp_path / "models.json").write_text('{"models": []}')
    with pytest.raises(ModelNotAvailableError, match="model not available: the 'localization' weights"):
        models.require("localization", tmp_path)
    assert models.model_status("localization", tmp_path) == "missing"


def test_load_checks_sha256_then_loads_weights_only(tmp_path):
    net = _install(tmp_path)
    card, state = models.load_state_dict("tiny", tmp_path)
    assert card.patch_size == (32, 32, 32) and card.spacing_mm == (2.0, 2.0, 2.0)
    assert set(state) == set(net.state_dict())
    assert models.model_status("tiny", tmp_path) == "ok"


def test_tampered_weights_are_refused(tmp_path):
    _install(tmp_path, tamper=True)
    assert models.model_status("tiny", tmp_path) == "corrupt"
    with pytest.raises(ModelIntegrityError, match="sha256"):
        models.load_state_dict("tiny", tmp_path)


def test_env_var_and_device_choice(tmp_path, monkeypatch):
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path))
    assert models.models_dir() == tmp_path
    assert models.select_device("cpu") == "cpu"
    assert models.select_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device must be"):
        models.select_device("tpu")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            models.select_device("cuda")


def test_cached_networks_are_built_once_per_weights_and_read_the_card_anew(tmp_path):
    torch = pytest.importorskip("torch")
    _install(tmp_path)

    def build(architecture):
        return torch.nn.Conv3d(1, 2, 3)

    card, net = models.load_network("tiny", build, tmp_path, cached=True)
    card2, net2 = models.load_network("tiny", build, tmp_path, cached=True)
    assert net2 is net and models.load_network("tiny", build, tmp_path)[1] is not net  # uncached: a new one
    registry = json.loads((tmp_path / "models.json").read_text())
    registry["models"][0]["postprocess"] = {"threshold": 0.3}  # a new card, the same weights
    (tmp_path / "models.json").write_text(json.dumps(registry))
    card3, net3 = models.load_network("tiny", build, tmp_path, cached=True)
    assert net3 is net and card3.postprocess == {"threshold": 0.3}
    _install(tmp_path)  # new weights (a new random net): built again, and still checked
    assert models.load_network("tiny", build, tmp_path, cached=True)[1] is not net
    _install(tmp_path, tamper=True)
    with pytest.raises(ModelIntegrityError):
        models.load_network("tiny", build, tmp_path, cached=True)
