"""Known detector weights: where they come from, where they go, and whether the local copies are sound.

    partslip models list      [--models-dir DIR]
    partslip models verify    [NAME ...] [--models-dir DIR] [--no-hash]
    partslip models download  NAME ... [--models-dir DIR]

The models directory is ``--models-dir``, else ``$PARTSLIP_MODELS_DIR``, else ``./models``. Checksums
are recorded only where a public source states them (the hub's git-LFS pointers); everything else
is reported as "unverified" rather than guessed. Verification also opens each weight file the safe
way (safetensors header / ``torch.load(weights_only=True, mmap=True)``) so a truncated, corrupt or
wrong file is reported here, not as a crash deep inside a model. See models/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence


class ModelError(RuntimeError):
    """A model file is missing, corrupt, of the wrong kind, or cannot be downloaded."""


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model.

    kind "file": a single checkpoint ``repo_file`` stored at ``<models_dir>/<local_path>``.
    kind "hf_snapshot": a HuggingFace model folder (save_pretrained layout) at ``<models_dir>/<local_path>``.
    size / sha256 are exact values from the source's LFS pointer, or None when no source states them.
    """

    name: str
    backend: str
    kind: str
    repo_id: str
    local_path: str
    description: str
    repo_type: str = "model"
    revision: Optional[str] = None  # pinned commit where known; None = the repo's main branch
    repo_file: str = ""
    size: Optional[int] = None
    sha256: Optional[str] = None
    approx_size: str = ""
    allow_patterns: tuple[str, ...] = ("*.json", "*.txt", "*.safetensors")
    glip_config: str = ""  # GLIP: config file inside the GLIP source tree
    part_names: tuple[str, ...] = ()  # few-shot GLIP: the prompt the checkpoint was tuned on
    source_note: str = ""


# PartNet-Ensembled categories and their part lists in prompt order (PartNetE_meta.json of the PartSLIP
# reference code, as used by its few-shot checkpoints; transcribed from a public copy of that file:
# treat as unverified until checked against the original).
PARTNETE_PARTS: dict[str, tuple[str, ...]] = {
    "Bottle": ("lid",), "Box": ("lid",), "Bucket": ("handle",), "Camera": ("button", "lens"), "Cart": ("wheel",),
    "Chair": ("arm", "back", "leg", "seat", "wheel"), "Clock": ("hand",),
    "CoffeeMachine": ("button", "container", "knob", "lid"), "Dishwasher": ("door", "handle"),
    "Dispenser": ("head", "lid"), "Display": ("base", "screen", "support"), "Door": ("frame", "door", "handle"),
    "Eyeglasses": ("body", "leg"), "Faucet": ("spout", "switch"), "FoldingChair": ("seat",), "Globe": ("sphere",),
    "Kettle": ("lid", "handle", "spout"), "Keyboard": ("cord", "key"), "KitchenPot": ("lid", "handle"),
    "Knife": ("blade",), "Lamp": ("base", "body", "bulb", "shade"),
    "Laptop": ("keyboard", "screen", "shaft", "touchpad", "camera"), "Lighter": ("lid", "wheel", "button"),
    "Microwave": ("display", "door", "handle", "button"), "Mouse": ("button", "cord", "wheel"),
    "Oven": ("door", "knob"), "Pen": ("cap", "button"), "Phone": ("lid", "button"), "Pliers": ("leg",),
    "Printer": ("button",), "Refrigerator": ("door", "handle"), "Remote": ("button",),
    "Safe": ("door", "switch", "button"), "Scissors": ("blade", "handle", "screw"), "Stapler": ("body", "lid"),
    "StorageFurniture": ("door", "drawer", "handle"), "Suitcase": ("handle", "wheel"), "Switch": ("switch",),
    "Table": ("door", "drawer", "leg", "tabletop", "wheel", "handle"), "Toaster": ("button", "slider"),
    "Toilet": ("lid", "seat", "button"), "TrashCan": ("footpedal", "lid", "door"), "USB": ("cap", "rotation"),
    "WashingMachine": ("door", "button"), "Window": ("window",),
}

_PARTSLIP_REPO = "minghua/PartSLIP"  # hub *dataset* holding PartSLIP's GLIP-L copy and few-shot checkpoints
_FEWSHOT_REVISION = "ffd9f24d40833c79753ca4f4e95cdad526a2b297"  # last upload of models/ (2023-06-18)


def _fewshot_spec(category: str) -> ModelSpec:
    return ModelSpec(
        name=f"glip_fewshot_{category.lower()}", backend="glip", kind="file", repo_id=_PARTSLIP_REPO,
        repo_type="dataset", revision=_FEWSHOT_REVISION, repo_file=f"models/{category}.pth",
        local_path=f"glip_fewshot/{category}.pth", approx_size="1.74 GB", glip_config="configs/glip_Swin_L_pt.yaml",
        part_names=PARTNETE_PARTS[category],
        description=f"PartSLIP 8-shot prompt-tuned GLIP-L for {category} (prompt: {' . '.join(PARTNETE_PARTS[category])} .)",
        source_note="checksum unverified (not recorded)")


KNOWN_MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in [
    ModelSpec(
        name="glip_large", backend="glip", kind="file", repo_id=_PARTSLIP_REPO, repo_type="dataset",
        revision="69b15ef88d8a55833ef42cf3be6eff23b6daa0f6", repo_file="models/glip_large_model.pth",
        local_path="glip_large_model.pth", size=6896153761,
        sha256="dcb0178264b3193901a11560aa7f31b05821a5bf15225eeb0eeebbedaaa27791", approx_size="6.9 GB",
        glip_config="configs/glip_Swin_L_pt.yaml",
        description="GLIP-L (Swin-L), the paper's zero-shot detector (PartSLIP's copy of glip_large_model.pth)",
        source_note="size/sha256 from the LFS pointer of hub commit 69b15ef"),
    ModelSpec(
        name="glip_tiny", backend="glip", kind="file", repo_id="harold/GLIP",
        repo_file="glip_tiny_model_o365_goldg_cc_sbu.pth", local_path="glip_tiny_model_o365_goldg_cc_sbu.pth",
        size=3710104213, sha256="3bec0a3dea804fcb278d7106c5438de5116ee888e49dfae46270e7ad7bc4ccbf",
        approx_size="3.7 GB", glip_config="configs/pretrain/glip_Swin_T_O365_GoldG.yaml",
        description="GLIP-T (Swin-T, O365+GoldG+CC+SBU): smaller, weaker zero-shot GLIP",
        source_note="size/sha256 from the LFS pointer shown in the harold/GLIP hub repo"),
    ModelSpec(
        name="grounding_dino_tiny", backend="grounding_dino", kind="hf_snapshot",
        repo_id="IDEA-Research/grounding-dino-tiny", revision="a2bb814dd30d776dcf7e30523b00659f4f141c71",
        local_path="grounding_dino_tiny", approx_size="689 MB",
        description="Grounding DINO Swin-T (HuggingFace transformers format)", source_note="checksum unverified"),
    ModelSpec(
        name="grounding_dino_base", backend="grounding_dino", kind="hf_snapshot",
        repo_id="IDEA-Research/grounding-dino-base", revision="d5d2765ea97a4777a75d177831827bf9f5917c3f",
        local_path="grounding_dino_base", approx_size="936 MB",
        description="Grounding DINO Swin-B (default grounding_dino weights)", source_note="checksum unverified"),
    ModelSpec(
        name="owlv2_base", backend="owlv2", kind="hf_snapshot", repo_id="google/owlv2-base-patch16-ensemble",
        revision="f03e4288ca7a255ad020cc91f66a1d6b01e5a04d", local_path="owlv2_base", approx_size="?",
        description="OWLv2 ViT-B/16 ensemble (default owlv2 weights)", source_note="checksum unverified"),
    ModelSpec(
        name="owlv2_large", backend="owlv2", kind="hf_snapshot", repo_id="google/owlv2-large-patch14-ensemble",
        local_path="owlv2_large", approx_size="1.75 GB",
        allow_patterns=("*.json", "*.txt", "*.safetensors", "pytorch_model.bin"),
        description="OWLv2 ViT-L/14 ensemble", source_note="checksum unverified; revision not pinned"),
] + [ModelSpec(  # SAM mask refinement (masks.backend: sam); sizes approximate, from the hub's file listing
    name=f"sam_vit_{size}", backend="sam", kind="hf_snapshot", repo_id=f"facebook/sam-vit-{size}",
    local_path=f"sam_vit_{size}", approx_size=approx,
    description=f"Segment Anything ViT-{size[0].upper()}{' (default masks.weights)' if size == 'base' else ''}",
    source_note="checksum unverified; revision not pinned")
    for size, approx in (("base", "375 MB"), ("large", "1.25 GB"), ("huge", "2.56 GB"))
] + [_fewshot_spec(category) for category in PARTNETE_PARTS]}


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else $PARTSLIP_MODELS_DIR, else ./models."""
    return Path(override or os.environ.get("PARTSLIP_MODELS_DIR") or "models").expanduser()


def get_spec(name: str) -> ModelSpec:
    if name not in KNOWN_MODELS:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[name]


def model_path(spec: ModelSpec, directory: str | os.PathLike | None = None) -> Path:
    return models_dir(directory) / spec.local_path


def local_model_path(name: str, directory: str | os.PathLike | None = None) -> Optional[Path]:
    """The local copy of a known model if it is present (folder with config.json, or the file)."""
    path = model_path(get_spec(name), directory)
    present = (path / "config.json").is_file() if get_spec(name).kind == "hf_snapshot" else path.is_file()
    return path if present else None


WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def looks_like_path(weights: str) -> bool:
    """A file-system path rather than a hub id ("org/name") or a known model name: such a path that does
    not exist is an error at once, never a hub lookup (the node's set-time check and the loaders agree)."""
    return weights.startswith(("/", ".", "~")) or weights.count("/") > 1 or weights.endswith(WEIGHT_FILE_SUFFIXES)


def fewshot_part_names(checkpoint: str | os.PathLike) -> Optional[tuple[str, ...]]:
    """The recorded prompt of a known few-shot checkpoint, matched by file name (e.g. Chair.pth)."""
    for spec in KNOWN_MODELS.values():
        if spec.part_names and Path(spec.repo_file).name == Path(checkpoint).name:
            return spec.part_names
    return None


# ----------------------------------------------------------------------------------------------- verify

def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def open_weights(path: Path) -> int:
    """Open a weight file without executing code; returns its tensor count or raises ModelError."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as handle:
                return len(list(handle.keys()))
        except Exception as error:
            raise ModelError(f"{path}: not a readable safetensors file ({error}); truncated or corrupt: download it again") from error
    import torch
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # zip/pickle errors, unsupported globals, EOF ...
        raise ModelError(f"{path}: cannot be loaded as a PyTorch checkpoint with weights_only=True "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}); "
                         "it is truncated, corrupt or not a weights file: download it again") from error
    return _count_tensors(state)


def _count_tensors(state: object) -> int:
    import torch
    if isinstance(state, torch.Tensor):
        return 1
    if isinstance(state, dict):
        return sum(_count_tensors(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_count_tensors(v) for v in state)
    return 0


@dataclass
class VerifyReport:
    name: str
    path: Path
    ok: bool
    lines: list[str] = field(default_factory=list)


def _weight_files(spec: ModelSpec, path: Path) -> list[Path]:
    if spec.kind == "file":
        return [path]
    found = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not found:
        raise ModelError(f"{path}: no model.safetensors or pytorch_model.bin in the folder")
    return found


def _check_snapshot_folder(spec: ModelSpec, path: Path) -> str:
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path}: config.json missing (not a save_pretrained folder)")
    try:
        model_type = json.loads(config.read_text()).get("model_type", "?")
    except (json.JSONDecodeError, OSError) as error:
        raise ModelError(f"{config}: unreadable ({error})") from error
    expected = {"grounding_dino": "grounding-dino", "owlv2": "owlv2", "sam": "sam"}[spec.backend]
    if model_type != expected:
        raise ModelError(f"{path}: config.json says model_type {model_type!r}, expected {expected!r}")
    return f"config ok ({model_type})"


def _check_file_identity(spec: ModelSpec, path: Path, hash_files: bool) -> list[str]:
    lines = []
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise ModelError(f"{path}: size {size} bytes, expected {spec.size} (partial download or wrong file)")
    if spec.sha256 is None:
        lines.append("sha256 unverified (no reference checksum recorded)")
    elif hash_files:
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise ModelError(f"{path}: sha256 {digest} does not match the recorded {spec.sha256}")
        lines.append("sha256 ok")
    else:
        lines.append("sha256 skipped (--no-hash)")
    return lines


def verify_model(spec: ModelSpec, directory: str | os.PathLike | None = None, hash_files: bool = True) -> VerifyReport:
    """Presence, size, checksum (where recorded) and a safe open of every weight file."""
    path = model_path(spec, directory)
    report = VerifyReport(spec.name, path, ok=False)
    if not path.exists():
        report.lines.append(f"missing: {path} (run `partslip models download {spec.name}`)")
        return report
    try:
        if spec.kind == "hf_snapshot":
            report.lines.append(_check_snapshot_folder(spec, path))
        else:
            report.lines.extend(_check_file_identity(spec, path, hash_files))
        for weights in _weight_files(spec, path):
            report.lines.append(f"{weights.name}: opens safely, {open_weights(weights)} tensors")
    except ModelError as error:
        report.lines.append(f"FAILED: {error}")
        return report
    report.ok = True
    return report


# ----------------------------------------------------------------------------------------------- download

def download_model(spec: ModelSpec, directory: str | os.PathLike | None = None) -> Path:
    """Fetch from the HuggingFace hub into the models dir; every failure is a ModelError with the reason."""
    try:
        from huggingface_hub import constants, hf_hub_download, snapshot_download
    except ImportError as error:
        raise ModelError("huggingface_hub is not installed (pip install huggingface_hub)") from error
    target = model_path(spec, directory)
    if constants.HF_HUB_OFFLINE:
        raise ModelError(f"HF_HUB_OFFLINE is set: cannot download {spec.repo_id}. Download on a machine with "
                         f"network and copy it to {target}")
    try:
        if spec.kind == "hf_snapshot":
            snapshot_download(spec.repo_id, repo_type=spec.repo_type, revision=spec.revision, local_dir=target,
                              allow_patterns=list(spec.allow_patterns))
        else:
            staging = target.parent / f".download-{spec.name}"
            fetched = hf_hub_download(spec.repo_id, spec.repo_file, repo_type=spec.repo_type,
                                      revision=spec.revision, local_dir=staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fetched, target)
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as error:  # network, auth, disk full, missing revision ...
        reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ModelError(f"download of {spec.name} from {spec.repo_id} failed ({type(error).__name__}: {reason}). "
                         f"Without network, download it elsewhere and copy it to {target}") from error
    return target


# ----------------------------------------------------------------------------------------------- CLI

def _status(spec: ModelSpec, directory: Path) -> str:
    path = model_path(spec, directory)
    if not path.exists():
        return "missing"
    if spec.kind == "file":
        return f"present ({path.stat().st_size / 1e9:.2f} GB)"
    return "present" if (path / "config.json").is_file() else "incomplete"


def cmd_list(directory: Path) -> int:
    print(f"models directory: {directory.resolve()}")
    for spec in KNOWN_MODELS.values():
        checksum = "sha256 recorded" if spec.sha256 else "unverified"
        print(f"  {spec.name:28s} {spec.backend:15s} {_status(spec, directory):22s} {spec.approx_size:>8s}  "
              f"{checksum:15s} {spec.repo_id}{'/' + spec.repo_file if spec.repo_file else ''}")
    return 0


def cmd_verify(names: Sequence[str], directory: Path, hash_files: bool) -> int:
    specs = [get_spec(n) for n in names] if names else [
        s for s in KNOWN_MODELS.values() if model_path(s, directory).exists()]
    if not specs:
        print(f"no known model is present under {directory.resolve()}; `partslip models list` shows what to download")
        return 1
    failed = 0
    for spec in specs:
        report = verify_model(spec, directory, hash_files)
        failed += not report.ok
        print(f"{'OK  ' if report.ok else 'FAIL'} {spec.name} ({report.path})")
        for line in report.lines:
            print(f"       {line}")
    return 1 if failed else 0


def cmd_download(names: Sequence[str], directory: Path) -> int:
    failed = 0
    for name in names:
        spec = get_spec(name)
        try:
            path = download_model(spec, directory)
        except ModelError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"downloaded {name} -> {path}")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partslip models", description="list, verify or download detector weights")
    parser.add_argument("--models-dir", default=None, help="default: $PARTSLIP_MODELS_DIR or ./models")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="known models and which are present")
    verify = sub.add_parser("verify", help="check sizes, checksums and that weight files open safely")
    verify.add_argument("names", nargs="*", help="default: every known model that is present")
    verify.add_argument("--no-hash", action="store_true", help="skip sha256 (slow for multi-GB files)")
    download = sub.add_parser("download", help="download from the HuggingFace hub (needs network)")
    download.add_argument("names", nargs="+")
    return parser


def models_main(argv: list[str]) -> int:
    """Entry point of ``partslip models``: 0 = ok, 1 = missing/failed, 2 = usage error."""
    argv = list(argv)
    # allow --models-dir after the subcommand as well
    if "--models-dir" in argv[1:] and argv and argv[0] != "--models-dir":
        i = argv.index("--models-dir")
        argv = argv[i:i + 2] + argv[:i] + argv[i + 2:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:
        return 0 if stop.code == 0 else 2
    directory = models_dir(args.models_dir)
    try:
        if args.command == "list":
            return cmd_list(directory)
        if args.command == "verify":
            return cmd_verify(args.names, directory, not args.no_hash)
        return cmd_download(args.names, directory)
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
