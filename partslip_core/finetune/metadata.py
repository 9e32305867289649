"""What a fine-tuned model folder records about its training, and the part-list check at load time.

``partslip finetune`` writes ``partslip_finetune.json`` next to the save_pretrained files. The detector
reads it when it loads the folder and refuses a part list the model was not tuned on: a fine-tuned
detector (like PartSLIP's prompt-tuned GLIP checkpoints) learned its classes through the exact caption /
queries it was trained with, so another list, or the same parts in another order, gives meaningless
labels. Light module (no torch), imported by the detectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from partslip_core.detect.base import DetectorError
from partslip_core.detect.prompts import normalize_part_names

METADATA_FILE = "partslip_finetune.json"
FORMAT_VERSION = 1


def write_metadata(folder: Path, backend: str, part_lists: Mapping[str, Sequence[str]], extra: Mapping[str, Any]) -> Path:
    """Record the backend and the part list of every category the model was tuned on (plus ``extra``)."""
    lists = {category: normalize_part_names(list(names)) for category, names in part_lists.items()}
    data = {"format": FORMAT_VERSION, "backend": backend, "part_lists": lists, **dict(extra)}
    if len(lists) == 1:
        data["part_names"] = next(iter(lists.values()))
    path = Path(folder) / METADATA_FILE
    path.write_text(json.dumps(data, indent=2))
    return path


def read_metadata(folder: str | Path) -> Optional[dict[str, Any]]:
    """The folder's fine-tuning record, or None for a model that was not tuned here (any other folder or hub id)."""
    path = Path(folder).expanduser() / METADATA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DetectorError(f"fine-tuning record {path} is unreadable: {error}") from error
    lists = data.get("part_lists") if isinstance(data, dict) else None
    if not isinstance(lists, dict) or not lists or not all(
            isinstance(v, list) and v and all(isinstance(n, str) for n in v) for v in lists.values()):
        raise DetectorError(f"{path}: expected {{'part_lists': {{category: [part, ...]}}}}; the file is damaged")
    return data


def tuned_part_lists(folder: str | Path) -> Optional[dict[str, tuple[str, ...]]]:
    """{category: part names in prompt order} the model in ``folder`` was tuned on; None if not tuned here."""
    data = read_metadata(folder)
    if data is None:
        return None
    return {str(c): tuple(normalize_part_names(v)) for c, v in data["part_lists"].items()}


def check_tuned_parts(part_lists: Optional[Mapping[str, tuple[str, ...]]], part_names: Sequence[str], source: str) -> None:
    """Raise a DetectorError unless ``part_names`` (normalized) equal one tuned list, in order."""
    if part_lists is None:
        return
    names = tuple(normalize_part_names(part_names))
    if names in part_lists.values():
        return
    known = "; ".join(f"{c}: {', '.join(v)}" for c, v in part_lists.items())
    same_set = [c for c, v in part_lists.items() if sorted(v) == sorted(names)]
    hint = (f" The parts of {same_set[0]!r} match but in another order: labels follow the tuned order."
            if same_set else "")
    raise DetectorError(f"the detector in {source} was fine-tuned on the part list(s) [{known}] and was asked for "
                        f"[{', '.join(names)}]: a fine-tuned detector only knows the exact list (and order) it was "
                        f"trained with.{hint} Ask for a tuned list, or fine-tune on this one "
                        f"(partslip finetune DATA --parts \"{','.join(names)}\" ...).")
