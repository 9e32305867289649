"""Training data: reading labelled shapes in every accepted layout, the held-out split, training renders
and their boxes, and the part-list record / check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partslip_core.detect import DetectorError
from partslip_core.finetune.data import load_shapes, split_holdout
from partslip_core.finetune.metadata import check_tuned_parts, tuned_part_lists, write_metadata
from partslip_core.finetune.views import AugmentConfig, render_training_images
from partslip_core.io import write_ply
from partslip_core.synthetic import write_dataset
from partslip_core.types import InputError

from .conftest import fast_pipeline


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_dataset(root, categories=["mug", "table"], shapes_per_category=3, num_points=800, seed=1)
    return root


def test_load_dataset_root_category_folder_and_labelled_plys(dataset, tmp_path, table_shapes):
    shapes = load_shapes(dataset)
    assert [(s.category, s.part_names) for s in shapes] == [("mug", ["body", "handle"])] * 3 + [("table", ["leg", "tabletop"])] * 3
    assert [s.shape_id for s in load_shapes(dataset / "table")] == ["table_0000", "table_0001", "table_0002"]
    assert {s.category for s in load_shapes(dataset, categories=["mug"])} == {"mug"}
    shape = table_shapes[0]
    folder = tmp_path / "my_tables"
    write_ply(folder / "a.ply", shape.cloud.xyz, shape.cloud.rgb,
              extra={"label": shape.point_label.astype(np.int32), "instance": shape.point_instance.astype(np.int32)})
    with pytest.raises(InputError, match="--parts"):
        load_shapes(folder)
    loaded = load_shapes(folder, part_names=["Leg", "tabletop"])
    assert loaded[0].category == "my_tables" and loaded[0].part_names == ["leg", "tabletop"]
    assert np.array_equal(loaded[0].point_instance, shape.point_instance)
    with pytest.raises(InputError, match="out of range"):
        load_shapes(folder, part_names=["leg"])
    write_ply(folder / "b.ply", shape.cloud.xyz, shape.cloud.rgb)
    with pytest.raises(InputError, match="'label' and 'instance'"):
        load_shapes(folder, part_names=["leg", "tabletop"])
    with pytest.raises(InputError, match="not found"):
        load_shapes(tmp_path / "missing")


def test_holdout_split_per_category(dataset):
    shapes = load_shapes(dataset)
    train, held = split_holdout(shapes, 1.0, seed=0)
    assert sorted(s.category for s in held) == ["mug", "table"] and len(train) == 4
    train, held = split_holdout(shapes, 0.0)
    assert not held and len(train) == 6
    train, held = split_holdout(shapes, 10.0)  # every category keeps a training shape
    assert len(train) == 2 and len(held) == 4
    assert {s.shape_id for s in split_holdout(shapes, 1.0, seed=3)[1]} == {s.shape_id for s in split_holdout(shapes, 1.0, seed=3)[1]}


def test_training_renders_have_one_box_per_visible_instance(table_shapes):
    shape = table_shapes[0]
    config = fast_pipeline()
    augment = AugmentConfig(extra_views=3, partial_variants=1)
    images = render_training_images(shape, config, augment, np.random.default_rng(0))
    num_views = len(config.render.views) + augment.extra_views
    assert num_views < len(images) <= 2 * num_views  # complete shape + one partial scan
    num_instances = len(np.unique(shape.point_instance[shape.point_instance >= 0]))
    for image in images:
        assert image.image.shape == (128, 128, 3) and image.image.dtype == np.uint8
        assert 1 <= len(image.boxes) <= num_instances and set(image.labels.tolist()) <= {0, 1}
        assert (image.boxes[:, 2] > image.boxes[:, 0]).all() and (image.boxes[:, :2] >= 0).all()
        assert (image.boxes[:, 2:] <= 128).all()
    # the reference front view of a table shows its top and at least two legs
    assert {0, 1} <= set(images[0].labels.tolist()) and (images[0].labels == 0).sum() >= 2
    again = render_training_images(shape, config, augment, np.random.default_rng(0))
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes) for a, b in zip(images, again))


def test_part_list_record_and_check(tmp_path):
    write_metadata(tmp_path, "grounding_dino", {"chair": ["Arm", "back"], "table": ["leg", "tabletop"]}, {"steps": 3})
    lists = tuned_part_lists(tmp_path)
    assert lists == {"chair": ("arm", "back"), "table": ("leg", "tabletop")}
    check_tuned_parts(lists, ["ARM", "back"], "m")
    check_tuned_parts(lists, ["leg", "tabletop"], "m")
    check_tuned_parts(None, ["anything"], "m")  # not a fine-tuned folder: no restriction
    with pytest.raises(DetectorError, match=r"chair: arm, back; table: leg, tabletop.*\[arm\]"):
        check_tuned_parts(lists, ["arm"], "m")
    assert tuned_part_lists(tmp_path / "other") is None
    (tmp_path / "partslip_finetune.json").write_text(json.dumps({"part_lists": []}))
    with pytest.raises(DetectorError, match="damaged"):
        tuned_part_lists(tmp_path)
