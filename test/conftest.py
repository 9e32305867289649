"""Shared fixtures: small synthetic objects and a tiny PartNet-E style dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from partslip_core.synthetic import CATEGORY_PARTS, SyntheticObject, make_object, write_dataset


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
