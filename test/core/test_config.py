"""Config: reference defaults, YAML loading, validation errors that name the field."""

from pathlib import Path

import pytest

from partslip_core.config import REFERENCE_VIEWS, ConfigError, PipelineConfig, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_reference_preset():
    config = PipelineConfig()
    assert config.render.views == [tuple(v) for v in REFERENCE_VIEWS] and len(config.render.views) == 10
    assert (config.render.image_size, config.render.point_radius, config.render.camera_distance) == (800, 0.005, 2.2)
    assert config.detector.score_threshold == 0.5 and config.detector.nms_iou == 0.6
    assert (config.superpoints.knn, config.superpoints.regularization, config.superpoints.min_size) == (10, 0.05, 10)
    assert config.vote.whole_object_fraction == 0.98 and "handle" in config.vote.small_part_names
    assert (config.instances.adjacency_distance, config.instances.box_profile_distance) == (0.02, 0.2)


def test_reference_yaml_matches_defaults():
    assert load_config(REPO / "config" / "partslip_reference.yaml") == PipelineConfig()


def test_overrides_merge_into_sections():
    config = config_from_dict({"render": {"image_size": 256}, "device": "cpu"})
    assert config.render.image_size == 256 and config.render.point_radius == 0.005


@pytest.mark.parametrize("values, fragment", [
    ({"render": {"image_size": 2}}, "render.image_size"),
    ({"render": {"imagesize": 200}}, "unknown key(s) in 'render': imagesize"),
    ({"renderer": {}}, "unknown top-level key(s): renderer"),
    ({"vote": {"score_threshold": 1.5}}, "vote.score_threshold"),
    ({"superpoints": {"backend": "magic"}}, "superpoints.backend"),
    ({"device": "tpu"}, "device must be"),
    ({"render": {"views": [[10, 0, 5]]}}, "render.views"),
    ({"normalize": {"up_axis": "w"}}, "normalize.up_axis"),
])
def test_bad_values_name_the_field(values, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(values)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)
