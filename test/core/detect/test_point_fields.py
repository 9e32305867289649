"""Per-point fields reach the detector: PointCloud.fields -> segment() -> Detector.detect(point_fields=), and the
registry's BackendInfo says which fields a backend reads (the ground_truth backend is an ordinary one)."""

from __future__ import annotations

import numpy as np
import pytest

from partslip_core import InputError, PointCloud, config_from_dict, segment
from partslip_core.detect import DetectorError, ProjectedGroundTruthDetector, backend_info, registry
from partslip_core.types import ViewDetections

CONFIG = {"render": {"image_size": 200}}


class _RecordingDetector:
    """Records the point fields it is given; finds nothing."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list = []

    def detect(self, views, part_names, point_fields=None):
        self.seen.append((views.point_visible.shape[1], dict(point_fields or {})))
        return [ViewDetections.empty() for _ in range(views.num_views)]


@pytest.fixture
def recording_backend(monkeypatch):
    """A backend registered for this test only that reads the per-point field ``reflectivity``."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_INFO", dict(registry._INFO))
    built = []

    @registry.register("test_recording", point_fields=(("reflectivity",),), loads_weights=False, warning="test only")
    def _build(config, device):
        built.append(_RecordingDetector())
        return built[-1]

    return built


def test_a_registered_backend_gets_its_point_fields_through_segment(recording_backend, synthetic_objects):
    obj = synthetic_objects["chair"]
    marker = np.random.default_rng(0).permutation(obj.xyz.shape[0]).astype(np.float32)
    cloud = PointCloud.from_arrays(obj.xyz, obj.rgb, fields={"reflectivity": marker})
    segment(cloud, obj.part_names, config_from_dict({**CONFIG, "detector": {"backend": "test_recording"}}))
    num_points, fields = recording_backend[0].seen[0]
    assert num_points == obj.xyz.shape[0] and set(fields) == {"reflectivity"}
    np.testing.assert_array_equal(fields["reflectivity"], marker)  # the views' point order = the input's
    info = backend_info("test_recording")
    assert info.field_names == ("reflectivity",) and info.missing_fields({"x"}) == "reflectivity"
    assert not info.loads_weights and info.warning == "test only"


def test_the_ground_truth_backend_reads_the_cloud_fields_like_the_explicit_detector(synthetic_objects):
    obj = synthetic_objects["chair"]
    config = config_from_dict({**CONFIG, "detector": {"backend": "ground_truth"}})
    fields = {"gt_label": obj.point_label.astype(np.int32), "gt_instance": obj.point_instance.astype(np.int32)}
    from_fields = segment(PointCloud.from_arrays(obj.xyz, obj.rgb, fields=fields), obj.part_names, config)
    explicit = segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, config,
                       ProjectedGroundTruthDetector(obj.point_label, obj.point_instance))
    assert from_fields.num_boxes == explicit.num_boxes > 0
    np.testing.assert_array_equal(from_fields.point_label, explicit.point_label)
    with pytest.raises(DetectorError, match="gt_label/gt_instance or label/instance"):
        segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, config)


@pytest.mark.parametrize("fields, message", [
    ({"f": np.zeros(3)}, r"shape \(4,\)"),
    ({"f": np.array([0.0, 1.0, np.nan, 2.0])}, "non-finite"),
    ({"f": np.array(["a", "b", "c", "d"])}, "numeric"),
])
def test_bad_point_fields_are_input_errors(fields, message):
    with pytest.raises(InputError, match=message):
        PointCloud.from_arrays(np.random.default_rng(0).random((4, 3)), fields=fields)


def test_point_fields_keep_their_dtype():
    xyz = np.random.default_rng(0).random((4, 3))
    cloud = PointCloud.from_arrays(xyz, fields={"label": np.arange(4).reshape(4, 1)})
    assert cloud.fields["label"].shape == (4,) and np.issubdtype(cloud.fields["label"].dtype, np.integer)


class _TwoArgumentDetector:
    """A detector written before point_fields existed: detect(views, part_names) only."""

    name = "two_argument"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, views, part_names):
        self.calls += 1
        return [ViewDetections.empty() for _ in range(views.num_views)]


def test_a_detector_without_the_point_fields_keyword_still_runs(synthetic_objects):
    """segment(detector=...) with an older custom detector: called without the keyword, not a TypeError."""
    obj = synthetic_objects["chair"]
    detector = _TwoArgumentDetector()
    cloud = PointCloud.from_arrays(obj.xyz, obj.rgb, fields={"reflectivity": np.ones(obj.xyz.shape[0], np.float32)})
    result = segment(cloud, obj.part_names, config_from_dict(CONFIG), detector=detector)
    assert detector.calls == 1 and result.point_label.shape == (obj.xyz.shape[0],)
