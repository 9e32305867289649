"""Time the SAM mask stage (masks.backend: sam) on rendered views with ground-truth boxes as prompts.

No weights can be downloaded here, so SAM is built from its published configuration with random
weights and saved with save_pretrained: ``--arch base`` is SAM ViT-B (transformers' SamConfig()
defaults: 768 wide, 12 layers, 1024 px input, as facebook/sam-vit-base), ``--arch tiny`` a 64 px,
2-layer model for CPU smoke timings. It is then loaded through partslip_core's real loading path
(SamMaskRefiner.from_config) and ``refine`` runs on K views of a synthetic object, every ground-truth
box a prompt. Random weights do not change the amount of work.

    python bench/bench_sam.py --arch tiny --runs 3                      # CPU, 10 views at 800 px
    python bench/bench_sam.py --arch base --device cuda --runs 5        # ViT-B, fp16 autocast
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/bench_sam.py`

from bench.common import Row, environment, format_table, timed, write_json  # noqa: E402
from partslip_core import config_from_dict  # noqa: E402
from partslip_core.config import MaskConfig  # noqa: E402
from partslip_core.detect import ProjectedGroundTruthDetector  # noqa: E402
from partslip_core.detect.sam import SamMaskRefiner  # noqa: E402
from partslip_core.normalize import normalize  # noqa: E402
from partslip_core.render import render_views  # noqa: E402
from partslip_core.synthetic import make_object  # noqa: E402
from partslip_core.types import PointCloud  # noqa: E402

TINY = dict(vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                               image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=16,
                               mlp_dim=64),
            prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
            mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                     iou_head_hidden_dim=32))


def build_model_dir(arch: str, out: Path) -> Path:
    """Random-weight SAM of the given size with its processor, saved with save_pretrained (kept if present)."""
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    torch.manual_seed(0)
    config = SamConfig(**TINY) if arch == "tiny" else SamConfig()
    side = config.vision_config.image_size
    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": side}, pad_size={"height": side, "width": side},
        mask_size={"longest_edge": side // 4}, mask_pad_size={"height": side // 4, "width": side // 4}))
    SamModel(config).eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=800)
    parser.add_argument("--category", default="chair")
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10, help="masks.batch_size (views per encoder pass)")
    parser.add_argument("--model-dir", default="", help="default: /tmp/partslip_sam_<arch>_random")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    model_dir = build_model_dir(args.arch, Path(args.model_dir or f"/tmp/partslip_sam_{args.arch}_random"))
    device = torch.device(args.device)
    config = config_from_dict({"render": {"image_size": args.image_size,
                                          "views": [list(v) for v in config_from_dict({}).render.views[:args.views]]}})
    obj = make_object(args.category, num_points=args.points, seed=0)
    canonical = normalize(PointCloud.from_arrays(obj.xyz, obj.rgb), config.normalize)
    views = render_views(canonical.xyz, canonical.rgb, config.render, device)
    detections = ProjectedGroundTruthDetector(obj.point_label, obj.point_instance).detect(views, obj.part_names)
    boxes = sum(d.num_boxes for d in detections)
    refiner, load_ms = timed(lambda: SamMaskRefiner.from_config(
        MaskConfig(backend="sam", weights=str(model_dir), batch_size=args.batch_size), str(device)), device)
    refiner.refine(views, detections)  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    samples = [timed(lambda: refiner.refine(views, detections), device)[1] for _ in range(args.runs)]
    note = f"{args.views} views, {boxes} boxes, {args.image_size} px, {'fp16' if refiner.half else 'fp32'}"
    rows = [Row.from_samples(f"sam_{args.arch}.refine", args.points, str(device), samples, note)]
    if device.type == "cuda":
        rows.append(Row("cuda_peak_memory", args.points, str(device),
                        text=f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"))
    rows.append(Row("load (from_config)", args.points, str(device), text=f"{load_ms:.0f} ms"))
    print(format_table(rows))
    print(f"fallbacks to the box: {refiner.stats.box_fallbacks} of {refiner.stats.boxes} masks")
    write_json(args.json, {"environment": environment(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
