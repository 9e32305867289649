"""segment() with real (tiny, random-weight) detector backends: selection by config and the full path."""

from __future__ import annotations

import numpy as np
import pytest

from partslip_core import PipelineConfig, config_from_dict, segment
from partslip_core.detect import DetectorError
from partslip_core.types import PointCloud


def small_config(backend: str, weights: str) -> PipelineConfig:
    return config_from_dict({
        "render": {"image_size": 64, "views": [[10, 0], [10, 120], [40, 240]]},
        "detector": {"backend": backend, "weights": weights, "score_threshold": 0.0, "max_detections_per_view": 10},
    })


@pytest.mark.parametrize("backend", ["grounding_dino", "owlv2"])
def test_segment_runs_with_backend_selected_in_config(backend, synthetic_objects, tiny_gd_dir, tiny_owl_dir):
    obj = synthetic_objects["chair"]
    weights = tiny_gd_dir if backend == "grounding_dino" else tiny_owl_dir
    cloud = PointCloud.from_arrays(obj.xyz[:3000], obj.rgb[:3000])
    result = segment(cloud, obj.part_names, small_config(backend, str(weights)), keep_views=True)
    assert result.point_label.shape == (3000,) and result.point_label.dtype == np.int64
    assert result.point_label.min() >= -1 and result.point_label.max() < len(obj.part_names)
    assert result.point_instance.shape == (3000,)
    assert len(result.detections) == 3 and result.views.images.shape == (3, 64, 64, 3)
    assert all(d.num_boxes <= 10 for d in result.detections)
    assert "detect" in result.timings_ms and "load_detector" in result.timings_ms


def test_segment_with_glip_selected_fails_clearly_without_maskrcnn(synthetic_objects):
    from partslip_core.detect.glip import glip_available
    if glip_available():
        pytest.skip("GLIP is installed here")
    obj = synthetic_objects["mug"]
    with pytest.raises(DetectorError, match="grounding_dino or owlv2"):
        segment(PointCloud.from_arrays(obj.xyz, obj.rgb), obj.part_names, small_config("glip", ""))
