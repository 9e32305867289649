"""How a window of clouds is fused into one object cloud (the node's ``fusion.*`` parameters).

``FusionConfig`` holds the fusion stages' own settings and composes the object isolation settings
(``partslip_core.scene.IsolationConfig``) without repeating them; the schema flattens the two into
one parameter namespace, so the ROS names stay ``fusion.voxel_size``, ``fusion.cluster_select``,
``fusion.crop_min`` ... Distances are metres of the fixed frame.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from partslip_core.schema import ConfigError, check, from_flat, param
from partslip_core.scene import IsolationConfig

OUTLIER_METHODS = ("grid", "knn")


@dataclass
class FusionConfig:
    """Fusion stages: ICP (optional), crop, voxel grid, outlier removal, object isolation, subsampling."""

    schema_prefix: ClassVar[str] = "fusion."
    voxel_size: float = param(0.005, ge=0.0, unit="m", doc="Voxel edge of the fused cloud; 0 = no downsampling.")
    outlier_neighbors: int = param(20, ge=0, doc="Statistical outlier removal neighbours; 0 = off.")
    outlier_std_ratio: float = param(2.0, gt=0.0, doc="Points farther than mean + ratio * std of the neighbour "
                                                      "distance are outliers.")
    outlier_method: str = param("grid", choices=OUTLIER_METHODS,
                                doc="grid: outlier statistics on the voxel grid (no kNN, default); knn: k-NN over "
                                    "the voxel centroids.")
    crop_enabled: bool = param(False, doc="Keep only points inside [crop_min, crop_max] (fixed frame).")
    isolate_object: bool = param(True, doc="Scene inputs: remove support planes (table, floor) and keep one object "
                                           "cluster (see partslip_core.scene); an object-only scan is kept whole.")
    isolation: IsolationConfig = param(default_factory=IsolationConfig, flatten=True,
                                       doc="Object isolation and the crop box (partslip_core.scene.IsolationConfig).")
    icp: bool = param(False, doc="Refine the window's alignment with ICP (open3d) onto the newest cloud.")
    icp_max_distance: float = param(0.02, gt=0.0, unit="m", doc="ICP correspondence distance.")
    max_points: int = param(100_000, ge=1, doc="Fused clouds above this are randomly subsampled (seeded).")

    def __post_init__(self) -> None:
        check(self)
        if self.icp and importlib.util.find_spec("open3d") is None:
            raise ConfigError("fusion.icp needs open3d, which is not importable")
        crop_used = self.crop_enabled or self.isolation.select == "crop"
        low, high = self.isolation.crop_min, self.isolation.crop_max
        if crop_used and not np.all(np.asarray(high) > np.asarray(low)):
            raise ConfigError(f"fusion.crop_max {list(high)} must exceed crop_min {list(low)} on every axis")

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any] | None = None, **more: Any) -> "FusionConfig":
        """From flat parameter names without the ``fusion.`` prefix (``cluster_select``, ``crop_min`` ...)."""
        return from_flat(cls, {**(values or {}), **more}, prefix=cls.schema_prefix)
