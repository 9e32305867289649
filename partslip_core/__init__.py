"""partslip_core: the PartSLIP part-segmentation pipeline as a pure Python library (no ROS imports).

Entry point: ``segment(cloud, part_names, config, detector)``; see ``partslip_core.pipeline`` for the stages.
"""

from partslip_core.config import ConfigError, PipelineConfig, config_from_dict, load_config
from partslip_core.pipeline import segment
from partslip_core.types import InputError, PartInstance, PartSegmentationResult, PointCloud

__all__ = [
    "ConfigError", "InputError", "PartInstance", "PartSegmentationResult", "PipelineConfig", "PointCloud",
    "config_from_dict", "load_config", "segment",
]
__version__ = "0.1.0"
