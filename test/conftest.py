"""Shared fixtures: small synthetic objects and a tiny PartNet-E style dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from partslip_core.synthetic import CATEGORY_PARTS, SyntheticObject, make_object, write_dataset


def flatten_keys(tree: dict, prefix: str = "") -> dict:
    """A nested YAML mapping -> {"a.b.c": value} (the dotted names the schema and ROS parameters use)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture(scope="session")
def synthetic_objects() -> dict[str, SyntheticObject]:
    """category -> a 4000-point object (seed 0). Shared: tests must not modify the arrays."""
    return {category: make_object(category, num_points=4000, seed=0) for category in CATEGORY_PARTS}


@pytest.fixture
def tmp_dataset(tmp_path: Path) -> Path:
    """A dataset root with 2 shapes of 3000 points per category (PartNet-E layout)."""
    root = tmp_path / "dataset"
    write_dataset(root, shapes_per_category=2, num_points=3000, seed=0)
    return root


@pytest.fixture(scope="session")
def rendered_objects(synthetic_objects):
    """category -> (canonical cloud, views at 200 px, noisy ground-truth boxes (jitter 0.1, drop 0.2, one
    false positive per view), torch superpoints, part names) for the 4000-point objects. Shared: read only."""
    from partslip_core.config import NormalizeConfig, RenderConfig, SuperpointConfig
    from partslip_core.detect import GroundTruthNoise, ProjectedGroundTruthDetector
    from partslip_core.normalize import normalize
    from partslip_core.render import render_views
    from partslip_core.superpoints import compute_superpoints
    from partslip_core.types import PointCloud
    cache = {}

    def get(category: str):
        if category not in cache:
            obj = synthetic_objects[category]
            canonical = normalize(PointCloud.from_arrays(obj.xyz, obj.rgb), NormalizeConfig())
            views = render_views(canonical.xyz, canonical.rgb, RenderConfig(image_size=200))
            noise = GroundTruthNoise(jitter=0.1, drop_probability=0.2, false_positives_per_view=1)
            detections = list(ProjectedGroundTruthDetector(obj.point_label, obj.point_instance, noise).detect(
                views, obj.part_names))
            superpoints = compute_superpoints(canonical.xyz, canonical.rgb, None, SuperpointConfig(backend="torch"))
            cache[category] = canonical, views, detections, superpoints, list(obj.part_names)
        return cache[category]
    return get
