"""End-to-end time per object with a REAL-SIZE Grounding DINO (random weights) as the detector.

No weights can be downloaded here, so the model is built from the published architecture of
IDEA-Research/grounding-dino-tiny (Swin-T backbone: embed 96, depths 2-2-6-2, window 7) or
grounding-dino-base (Swin-B: embed 128, depths 2-2-18-2, window 12), both with a BERT-base text
encoder (12 layers, 768 wide, vocab 30522), d_model 256, 6 encoder + 6 decoder layers, 900 queries,
initialized randomly (seeded) and saved with save_pretrained. The tokenizer is a STAND-IN: a
WordPiece vocabulary written here that holds the part names and puts [CLS]/[SEP]/"."/"?" at
bert-base-uncased's ids (Grounding DINO hard-codes those ids); token counts for our prompts are
the same as with the real vocabulary because every part name is one token in both.

The detector is partslip_core.detect.hf.GroundingDinoDetector loaded from that folder (the same
code path as a real checkpoint). Random weights give random boxes: the timing
of the lifting stages then reflects up to ``max_detections_per_view`` boxes per view.

    python bench/bench_end_to_end.py                          # tiny arch, 10 views, 800 px, cpu, 2 runs
    python bench/bench_end_to_end.py --views 4 --image-size 400 --runs 1
    python bench/bench_end_to_end.py --device cuda --runs 5   # fp16 autocast on CUDA (detector.half_precision)
    python bench/bench_end_to_end.py --device cuda --arch base --runs 5   # Grounding DINO-B size (the issue's target)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_end_to_end.py`

from bench.common import Row, environment, format_table, write_json  # noqa: E402
from partslip_core import PipelineConfig, PointCloud, segment  # noqa: E402
from partslip_core.config import DetectorConfig  # noqa: E402
from partslip_core.synthetic import CATEGORY_PARTS, make_object  # noqa: E402

SWIN = {
    "tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, image_size=224),
    "base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, image_size=384),
}
EXTRA_WORDS = ["a", "photo", "of", "the", "part", "object"]


def stand_in_vocab() -> list[str]:
    """WordPiece vocab with bert-base-uncased's special and punctuation ids, plus every synthetic part name."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"[unused{i}]" for i in range(100, 100 + 1012 - len(tokens))] + ["."]
    tokens += [f"[unusedb{i}]" for i in range(1029 - len(tokens))] + ["?"]
    words = sorted({name for names in CATEGORY_PARTS.values() for name in names} | set(EXTRA_WORDS))
    return tokens + words + ["##s"]


def build_model_dir(arch: str, out: Path, seed: int) -> Path:
    """Random-weight Grounding DINO of the published size, saved with its processor (skipped if present)."""
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import transformers
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)
    torch.manual_seed(seed)
    backbone = SwinConfig(out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4], **SWIN[arch])
    config = GroundingDinoConfig(backbone_config=backbone, text_config=BertConfig(), use_pretrained_backbone=False)
    model = GroundingDinoForObjectDetection(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out.parent / f"{out.name}_vocab.txt"
    vocab_file.write_text("\n".join(stand_in_vocab()) + "\n")
    major = int(transformers.__version__.split(".")[0])
    vocab = {"vocab": str(vocab_file)} if major >= 5 else {"vocab_file": str(vocab_file)}  # renamed in 5.x
    tokenizer = BertTokenizerFast(**vocab)
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def load_detector(model_dir: Path, args: argparse.Namespace) -> tuple[Any, str]:
    """(detector, what it is): the product's GroundingDinoDetector, loaded like a real checkpoint folder."""
    from partslip_core.detect.hf import GroundingDinoDetector
    config = DetectorConfig(backend="grounding_dino", weights=str(model_dir), batch_size=args.batch_size,
                            half_precision=not args.fp32)
    return GroundingDinoDetector.from_config(config, args.device), "partslip_core.detect.hf.GroundingDinoDetector"


def run(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(args.model_dir or f"/tmp/partslip_bench_models/grounding_dino_{args.arch}_random")
    start = time.perf_counter()
    build_model_dir(args.arch, model_dir, args.seed)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    detector, how = load_detector(model_dir, args)
    load_s = time.perf_counter() - start
    params = sum(p.numel() for p in detector.model.parameters())
    obj = make_object(args.category, args.points, seed=args.seed)
    cloud = PointCloud.from_arrays(obj.xyz, obj.rgb)
    config = PipelineConfig(device=args.device)
    if args.threads is not None:
        config.cpu_threads = args.threads
    config.render.image_size = args.image_size
    config.render.views = config.render.views[:args.views]
    config.render.backend = args.render_backend
    config.superpoints.backend = args.superpoints
    print(f"model: {args.arch} arch, {params / 1e6:.1f} M parameters, build/save {build_s:.1f} s, load {load_s:.1f} s; "
          f"detector: {how}", flush=True)
    results = []
    for index in range(args.runs + 1):  # index 0 = warm-up
        start = time.perf_counter()
        result = segment(cloud, obj.part_names, config, detector)
        total = (time.perf_counter() - start) * 1000.0
        print(f"  {'warm-up' if index == 0 else f'run {index}'}: {total:.0f} ms end to end, {result.num_boxes} kept "
              f"boxes, stages {{{', '.join(f'{k}: {v:.0f}' for k, v in result.timings_ms.items())}}}", flush=True)
        if index > 0:
            results.append((total, result.timings_ms, result.num_boxes))
    return {"model_dir": str(model_dir), "detector": how, "parameters": params, "build_s": build_s, "load_s": load_s,
            "results": results}


def rows_from(report: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    stages = [k for k in report["results"][0][1] if k != "total"]
    rows = [Row.from_samples(stage, args.points, args.device, [r[1][stage] for r in report["results"]])
            for stage in stages]
    boxes = int(np.median([r[2] for r in report["results"]]))
    rows.append(Row.from_samples("end to end per object", args.points, args.device, [r[0] for r in report["results"]],
                                 f"{args.views} views @ {args.image_size} px, GD-{args.arch} random weights, "
                                 f"{boxes} kept boxes"))
    return rows


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(SWIN), default="tiny")
    parser.add_argument("--views", type=int, default=10, help="first N of the 10 reference views")
    parser.add_argument("--image-size", type=int, default=800)
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--category", default="chair")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=2, help="timed runs after one warm-up")
    parser.add_argument("--batch-size", type=int, default=10, help="views per detector forward pass")
    parser.add_argument("--fp32", action="store_true", help="no fp16 autocast on CUDA")
    parser.add_argument("--model-dir", default="", help="where the random-weight model is saved (reused if present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="PipelineConfig.cpu_threads: CPU thread budget of a run (default: the pipeline's "
                             "default; 0 = library defaults, all cores)")
    parser.add_argument("--superpoints", default="auto", help="superpoints.backend (auto: cut pursuit on CPU, "
                                                                  "torch on CUDA)")
    parser.add_argument("--render-backend", default="auto", help="render.backend (auto: torch on CPU, pytorch3d on "
                                                                 "CUDA when importable)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    if not 1 <= args.views <= 10:
        parser.error("--views must be in 1..10")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    env = environment()
    print(f"bench_end_to_end: {args.category} ({args.points} points), {args.views} views @ {args.image_size} px, "
          f"{args.device}, {args.runs} run(s) + warm-up, batch {args.batch_size}, cpu_threads "
          f"{PipelineConfig().cpu_threads if args.threads is None else args.threads}; environment {env}", flush=True)
    report = run(args)
    rows = rows_from(report, args)
    print()
    print(format_table(rows))
    write_json(args.json, {"args": vars(args), "environment": env, "report": report, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
