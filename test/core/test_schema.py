"""The parameter schema: every config field declares a doc (and a range where it is a number), validation and
messages come from the declarations, and the YAML presets, the CLI listing and flat parameter names agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from partslip_core import cli
from partslip_core.config import PipelineConfig, RenderConfig, config_from_dict, load_config
from partslip_core.fusion_config import FusionConfig
from partslip_core.scene import IsolationConfig
from partslip_core.schema import ConfigError, ParamSpec, check, from_flat, param, walk
from partslip_core.schema_listing import describe
from test.conftest import flatten_keys as flatten

REPO = Path(__file__).resolve().parents[2]
CONFIG_TREES = {"pipeline": PipelineConfig, "fusion": FusionConfig}
# Numbers with no natural bound (coordinates, logits): every OTHER numeric field must declare a range.
UNBOUNDED_NUMBERS = {"masks.mask_threshold", "target_point", "crop_min", "crop_max",
                     "render.views"}  # views: elevation and azimuth bounds differ, checked in RenderConfig's own code


def all_fields():
    return [(tree, info) for tree, cls in CONFIG_TREES.items() for info in walk(cls)]


@pytest.mark.parametrize("tree, info", all_fields(), ids=lambda v: getattr(v, "name", v))
def test_every_field_has_a_doc_and_every_number_a_range(tree, info):
    assert isinstance(info.spec, ParamSpec)
    assert len(info.spec.doc) >= 15, f"{tree}: {info.name} has no real doc"
    numeric = info.type in (int, float) or "float" in str(info.type) or "int" in str(info.type)
    if numeric and info.type is not bool and info.name not in UNBOUNDED_NUMBERS:
        assert info.spec.bounds_text(), f"{tree}: {info.name} is a number without a declared range"
    if info.spec.choices:
        assert info.default in info.spec.choices


def test_a_field_declared_without_param_still_works_but_has_no_doc():
    """A plain field (``size: int = 3``) is type-checked and listed with an empty doc, which the test above
    refuses for the real configs: a new field added without ``param`` fails CI, not the running node."""
    @dataclasses.dataclass
    class Undocumented:
        size: int = 3

        def __post_init__(self) -> None:
            check(self)

    [info] = walk(Undocumented)
    assert (info.name, info.default, info.spec.doc) == ("size", 3, "")
    with pytest.raises(ConfigError, match="size must be an integer"):
        Undocumented(size="3")


@dataclasses.dataclass
class Probe:
    schema_prefix = "probe."
    count: int = param(3, ge=1, le=10, doc="A bounded integer.")
    ratio: float = param(0.5, gt=0.0, lt=1.0, doc="An open interval.")
    mode: str = param("a", choices=("a", "b"), doc="A choice.")
    corner: tuple[float, float, float] = param((0.0, 0.0, 0.0), ge=-1.0, le=1.0, doc="Three bounded numbers.")
    names: list[str] = param(["x"], min_length=1, doc="At least one name.")
    pairs: list[tuple[float, float]] = param([(1.0, 2.0)], doc="Pairs of numbers.")
    label: str = param("p{n}", pattern=r".*\{n\}.*", pattern_doc="a text containing '{n}'", doc="A pattern.")
    anything: Any = param("", dynamic=True, doc="Not checked here.")

    def __post_init__(self) -> None:
        check(self)


@pytest.mark.parametrize("changes, message", [
    ({"count": 0}, "probe.count must be in [1, 10]; got 0"),
    ({"count": 2.0}, "probe.count must be an integer; got 2.0 (a number)"),
    ({"count": True}, "probe.count must be an integer; got True (a boolean)"),
    ({"ratio": 1.0}, "probe.ratio must be in (0, 1); got 1.0"),
    ({"ratio": float("nan")}, "probe.ratio must be finite; got nan"),
    ({"ratio": "big"}, "probe.ratio must be a number; got 'big' (a string)"),
    ({"mode": "c"}, "probe.mode must be one of a, b; got 'c'"),
    ({"corner": (0.0, 2.0, 0.0)}, "probe.corner values must be in [-1, 1]; got [0.0, 2.0, 0.0]"),
    ({"corner": (0.0, 0.0)}, "probe.corner must be 3 numbers; got 2 value(s): [0.0, 0.0]"),
    ({"names": []}, "probe.names must hold at least 1 entry; got []"),
    ({"names": "x"}, "probe.names must be a list of strings; got 'x' (a string)"),
    ({"pairs": [(1.0, 2.0, 3.0)]}, "probe.pairs entries must be 2 numbers; got [1.0, 2.0, 3.0]"),
    ({"label": "plain"}, "probe.label must be a text containing '{n}'; got 'plain'"),
])
def test_messages_name_the_field_and_say_what_is_allowed(changes, message):
    with pytest.raises(ConfigError) as info:
        Probe(**changes)
    assert str(info.value) == message


def test_values_are_normalized_to_the_declared_types():
    probe = Probe(corner=[1, 0, -1], pairs=[[1, 2]], anything=[1, "a"])
    assert probe.corner == (1.0, 0.0, -1.0) and all(isinstance(v, float) for v in probe.corner)
    assert probe.pairs == [(1.0, 2.0)] and isinstance(probe.pairs[0], tuple)
    assert RenderConfig(fov_degrees=60).fov_degrees == 60.0 and isinstance(RenderConfig(fov_degrees=60).fov_degrees,
                                                                          float)
    assert Probe().names is not Probe().names  # a list default is copied per instance


def test_pipeline_yaml_errors_come_from_the_declarations():
    for values, message in [
        ({"render": {"point_radius": 0.5}}, "render.point_radius must be in (0, 0.5); got 0.5"),
        ({"render": {"znear": 0.0}}, "render.znear must be > 0; got 0.0"),
        ({"superpoints": {"knn": 65}}, "superpoints.knn must be in [1, 64]; got 65"),
        ({"masks": {"backend": "sam2"}}, "masks.backend must be one of none, sam; got 'sam2'"),
        ({"seed": -1}, "seed must be >= 0; got -1"),
        ({"detector": {"query_template": "a photo"}}, "detector.query_template must be a text containing '{part}'"),
        ({"render": {"views": [[90.0, 0.0]]}}, "render.views: elevation must be in (-90, 90)"),  # relational code
    ]:
        with pytest.raises(ConfigError) as info:
            config_from_dict(values)
        assert str(info.value).startswith(message), str(info.value)


def test_fusion_names_flatten_the_composed_isolation_config():
    names = [info.name for info in walk(FusionConfig)]
    isolation = [f.metadata["partslip"].name or f.name for f in dataclasses.fields(IsolationConfig)]
    assert set(isolation) <= set(names) and "cluster_select" in names and "select" not in names
    assert not any(name.startswith("isolation") for name in names)
    config = FusionConfig.from_parameters(cluster_select="crop", crop_min=[0, 0, 0], voxel_size=0)
    assert config.isolation.select == "crop" and config.isolation.crop_min == (0.0, 0.0, 0.0)
    assert config.voxel_size == 0.0 and config.isolation == IsolationConfig(select="crop", crop_min=(0, 0, 0))
    with pytest.raises(ConfigError, match=r"^fusion.cluster_select must be one of largest, nearest, crop"):
        FusionConfig.from_parameters(cluster_select="biggest")
    with pytest.raises(ConfigError, match="unknown parameter.*fusion.select"):
        FusionConfig.from_parameters(select="crop")
    with pytest.raises(ConfigError, match="fusion.crop_max .* must exceed crop_min"):  # relational: explicit code
        FusionConfig.from_parameters(crop_enabled=True, crop_max=(1.0, 1.0, -2.0))


def test_from_flat_builds_nested_sections():
    config = from_flat(PipelineConfig, {"render.image_size": 64, "vote.score_threshold": 0.25, "seed": 3})
    assert (config.render.image_size, config.vote.score_threshold, config.seed) == (64, 0.25, 3)
    with pytest.raises(ConfigError, match="^render.image_size must be in"):
        from_flat(PipelineConfig, {"render.image_size": 1}, prefix="pipeline.")


def test_reference_yaml_lists_every_pipeline_field_with_its_default():
    """config/partslip_reference.yaml keeps its comments (hand-written), so check it against the schema: every key
    is a field, its value is the field's default, and every field is in the file (masks: the PartSLIP++ step is
    not part of the paper's preset and is shown commented out)."""
    path = REPO / "config" / "partslip_reference.yaml"
    keys = flatten(yaml.safe_load(path.read_text()))
    defaults = {info.name: info.default for info in walk(PipelineConfig)}
    assert set(keys) <= set(defaults), f"unknown keys: {sorted(set(keys) - set(defaults))}"
    missing = sorted(n for n in set(defaults) - set(keys) if not n.startswith("masks."))
    assert not missing, f"config/partslip_reference.yaml does not list: {missing}"
    assert "# masks:" in path.read_text()
    assert load_config(path) == PipelineConfig()


def test_config_describe_lists_every_field_and_the_cli_help_uses_the_docs(capsys):
    assert cli.main(["config", "--describe"]) == 0
    text = capsys.readouterr().out
    for info in walk(PipelineConfig):
        assert f"\n{info.name}  (" in "\n" + text, info.name
    assert "render.point_radius  (float; default 0.005; in (0, 0.5); unit NDC)" in text
    assert text == describe(PipelineConfig()) + "\n\n# The node's parameters (these as pipeline.*, plus fusion.* " \
                                                 "and its own): python -m partslip_ros.params\n"
    with pytest.raises(SystemExit):
        cli.main(["segment", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "in [16, 4096]; unit px; default 800; config: render.image_size" in help_text


def test_config_prints_the_resolved_yaml_and_rejects_a_bad_file(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("render:\n  image_size: 256\n")
    assert cli.main(["config", "--config", str(good)]) == 0
    assert load_config(None, yaml.safe_load(capsys.readouterr().out)) == load_config(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("render:\n  image_size: 2\n")
    assert cli.main(["config", "--config", str(bad)]) == 2
    assert "render.image_size must be in [16, 4096]; got 2" in capsys.readouterr().err
