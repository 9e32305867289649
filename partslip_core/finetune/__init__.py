"""Few-shot adaptation: fine-tune Grounding DINO / OWLv2 on a handful of labelled shapes (``partslip finetune``).

    from partslip_core.finetune import FinetuneConfig, finetune
    result = finetune("data/my_shapes", "models/my_category", FinetuneConfig(backend="grounding_dino", init="models/grounding_dino_tiny"))

Modules: ``data`` (labelled shapes, held-out split), ``views`` (training renders + boxes), ``scratch``
(random-weight models and tokenizers), ``losses`` (OWLv2 matching loss), ``backends`` (per-detector
training), ``trainer`` (loop, evaluation, save), ``metadata`` (part lists recorded / checked at load).
Only ``metadata`` is imported eagerly (the detectors read it); the rest loads on first use.
"""

from __future__ import annotations

from typing import Any

from partslip_core.finetune.metadata import METADATA_FILE, check_tuned_parts, tuned_part_lists

__all__ = ["METADATA_FILE", "AugmentConfig", "FinetuneConfig", "FinetuneResult", "LabeledShape", "check_tuned_parts",
           "finetune", "load_shapes", "tuned_part_lists"]

_LAZY = {"AugmentConfig": "views", "FinetuneConfig": "trainer", "FinetuneResult": "trainer", "finetune": "trainer",
         "LabeledShape": "data", "load_shapes": "data"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"partslip_core.finetune.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'partslip_core.finetune' has no attribute {name!r}")
