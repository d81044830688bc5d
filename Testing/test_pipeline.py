from __future__ import annotations

import numpy as np
import pytest
from factories import make_analysis

from VertebralFractureLib import pipeline
from VertebralFractureLib.errors import CancelledError, InputError, ModelNotAvailableError
from VertebralFractureLib.volume import Volume


@pytest.fixture()
def no_models(tmp_path, monkeypatch):
    (tmp_path / "models.json").write_text('{"models": []}')
    monkeypatch.setenv("VF_MODELS_DIR", str(tmp_path))


def test_analyze_refuses_without_models(no_models):
    ref = make_analysis()
    with pytest.raises(ModelNotAvailableError, match="model not available"):
        pipeline.analyze(ref.image)


def test_given_segmentation_finds_centroids_and_fov_cuts():
    ref = make_analysis(labels=(19, 20, 21))
    lab = ref.labelmap.array.copy()
    # cut L2 (the caudal one) by the field of view: move it to the bottom edge
    lab[lab == 21] = 0
    lab[0:6, 14:34, 10:30] = 21
    lab[10, 0:3, 0:3] = 99  # not a vertebra
    events = []
    result = pipeline.analyze(ref.image, stages=[pipeline.GivenSegmentation(ref.labelmap.with_array(lab))],
                              progress=lambda s, f, m: events.append((s, f)))
    names = [v.name for v in result.vertebrae]
    assert names == ["T12", "L1", "L2"]
    for v in result.vertebrae[:2]:
        truth = ref.vertebra(v.label).centroid_lps_mm
        assert np.allclose(v.centroid_lps_mm, truth, atol=1e-6) and v.complete
    assert result.vertebra("L2").complete is False
    assert any("99" in w for w in result.warnings)
    assert "given-segmentation" in result.timings_s
    assert events[0] == ("given-segmentation", 0.0) and events[-1] == ("given-segmentation", 1.0)
    assert set(np.unique(result.labelmap.array)) == {0, 19, 20, 21}


def test_given_segmentation_rejects_bad_input():
    ref = make_analysis()
    other = Volume(ref.labelmap.array, spacing=(2, 2, 2))
    with pytest.raises(InputError, match="geometry"):
        pipeline.analyze(ref.image, stages=[pipeline.GivenSegmentation(other)])
    empty = ref.labelmap.with_array(np.zeros_like(ref.labelmap.array))
    with pytest.raises(InputError, match="no vertebra label"):
        pipeline.analyze(ref.image, stages=[pipeline.GivenSegmentation(empty)])


def test_cancel_stops_the_run():
    ref = make_analysis()
    with pytest.raises(CancelledError):
        pipeline.analyze(ref.image, stages=[pipeline.GivenSegmentation(ref.labelmap)], cancel=lambda: True)


def test_config_validation():
    with pytest.raises(ValueError, match="fracture_threshold"):
        pipeline.AnalysisConfig(fracture_threshold=1.5)
    with pytest.raises(ValueError):
        pipeline.AnalysisConfig(device="tpu")
    assert pipeline.AnalysisConfig(device="cpu").device is pipeline.Device.CPU
    assert pipeline.required_models(pipeline.default_stages()) == ["localization", "segmentation"]


def test_stage1_centroids_are_reported_at_their_outline_and_given_ones_stay():
    import numpy as np

    from VertebralFractureLib.analysis import VertebraResult
    from VertebralFractureLib.pipeline import analyze
    from VertebralFractureLib.volume import Volume

    ct = Volume(np.zeros((40, 40, 40), np.int16), (1.0, 1.0, 1.0))
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[10:30, 10:30, 10:30] = 20  # outline centre (LPS) = (19.5, 19.5, 19.5)
    seen = {}

    class Found:  # stands in for stage 1 (or for the user's centroids) and stage 2
        name, models = "found", ()

        def __init__(self, from_stage1):
            self.from_stage1 = from_stage1

        def run(self, context):
            context.vertebrae[20] = VertebraResult(label=20, centroid_lps_mm=(19.5, 31.5, 19.5))
            context.centroids_from_stage1 = self.from_stage1
            context.labelmap = ct.with_array(lab)
            seen["during"] = context.vertebrae[20].centroid_lps_mm

    moved = analyze(ct, stages=[Found(True)])
    assert seen["during"] == (19.5, 31.5, 19.5)  # the stages work from stage 1's centroid
    assert moved.vertebrae[0].centroid_lps_mm == pytest.approx((19.5, 19.5, 19.5))
    kept = analyze(ct, stages=[Found(False)])
    assert kept.vertebrae[0].centroid_lps_mm == (19.5, 31.5, 19.5)
