"""Shared fixtures: a few small synthetic shapes, a fast pipeline config, and untuned random-weight detectors.

The untuned models come from ``partslip_core.finetune.scratch`` (the "tiny" preset: a config with random
weights and a tokenizer built from the part names) and are saved as ordinary save_pretrained folders, so
fine-tuning starts from a local folder exactly as it would from downloaded weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from partslip_core.config import config_from_dict
from partslip_core.finetune.data import from_synthetic
from partslip_core.synthetic import make_object

CATEGORY = "table"  # leg + tabletop: several instances per shape, two classes
NUM_POINTS = 2000
# Seed 3 gives a table whose top and legs differ in colour (part colour distance 0.47; seeds 0, 2, 4 are
# near-grey both): a few dozen steps of a tiny random-weight model can learn that, while shape cues alone
# need minutes of training (bench/bench_finetune.py measures that case).
SEEDS = (3,)


def fast_pipeline(threshold: float = 0.1):
    """128 px renders with a larger point radius (fewer pixels, no holes), the reference otherwise."""
    return config_from_dict({"render": {"image_size": 128, "point_radius": 0.012},
                             "detector": {"score_threshold": threshold}, "cpu_threads": 2})


@pytest.fixture(scope="session")
def table_shapes():
    return [from_synthetic(make_object(CATEGORY, NUM_POINTS, seed), f"{CATEGORY}_{seed}") for seed in SEEDS]


def save_untuned(backend: str, part_names: list[str], folder: Path, scratch_dir: Path) -> Path:
    from partslip_core.finetune import scratch
    from partslip_core.finetune.backends import words_for
    builder = scratch.build_scratch_grounding_dino if backend == "grounding_dino" else scratch.build_scratch_owlv2
    model, processor = builder(words_for([part_names], "a photo of a {part}"), scratch.preset("tiny"), scratch_dir)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def untuned_gd(tmp_path_factory, table_shapes) -> Path:
    root = tmp_path_factory.mktemp("untuned_gd")
    return save_untuned("grounding_dino", table_shapes[0].part_names, root / "model", root / "scratch")


@pytest.fixture(scope="session")
def untuned_owl(tmp_path_factory, table_shapes) -> Path:
    root = tmp_path_factory.mktemp("untuned_owl")
    return save_untuned("owlv2", table_shapes[0].part_names, root / "model", root / "scratch")
