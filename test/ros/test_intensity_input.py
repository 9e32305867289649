"""Lidar XYZI input: the node decodes the ``intensity`` field and keeps it through fusion, so a cloud without rgb
is rendered with it as albedo (pipeline.render.intensity_albedo; the rendering itself: test/core/test_render.py)."""

import numpy as np
from std_msgs.msg import Header

from partslip_core.fusion_config import FusionConfig
from partslip_core.types import PointCloud
from partslip_ros.fusion import Frame, fuse
from partslip_ros.intake import INTENSITY_FIELD, OPTIONAL_FIELDS
from partslip_ros.pointcloud import build_cloud, decode_cloud


def test_intensity_is_decoded_fused_and_reaches_the_point_cloud():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-0.2, 0.2, size=(500, 3)).astype(np.float32)
    xyz[7] = np.nan  # dropped with its intensity
    intensity = np.arange(500, dtype=np.uint16)
    msg = build_cloud(Header(frame_id="lidar"), [("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2]),
                                                 ("intensity", intensity)])
    decoded = decode_cloud(msg, require_rgb=False, optional_fields=OPTIONAL_FIELDS)
    assert decoded.rgb is None and INTENSITY_FIELD in decoded.extras
    np.testing.assert_array_equal(decoded.extras[INTENSITY_FIELD], np.delete(intensity, 7))
    config = FusionConfig(voxel_size=0.0, outlier_neighbors=0, isolate_object=False)
    fused = fuse([Frame(1, "lidar", decoded.xyz, None, decoded.extras)], config)
    cloud = PointCloud.from_arrays(fused.xyz, fused.rgb, intensity=fused.extras.get(INTENSITY_FIELD))
    assert cloud.intensity is not None and cloud.intensity.dtype == np.float32
    assert cloud.intensity.shape == (cloud.num_points,) and cloud.num_points > 400
    without = decode_cloud(build_cloud(Header(), [("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2])]),
                           require_rgb=False, optional_fields=OPTIONAL_FIELDS)
    assert INTENSITY_FIELD not in without.extras  # optional: clouds without it decode as before
