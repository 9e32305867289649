"""Regenerate the bundled sample clouds in data/samples/ (deterministic).

    .venv/bin/python scripts/make_samples.py

chair.ply: a synthetic 20k-point chair (Z up, metres) with its ground-truth part labels as vertex
properties `label` (index into arm, back, leg, seat; -1 none) and `instance`. Those properties are what the
demo's ground_truth detector projects; a real detector ignores them.
"""

from pathlib import Path

from partslip_core.io import write_ply
from partslip_core.synthetic import make_object

OUT = Path(__file__).resolve().parents[1] / "data" / "samples"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    chair = make_object("chair", num_points=20000, seed=7)
    write_ply(OUT / "chair.ply", chair.xyz, chair.rgb,
              extra={"label": chair.point_label.astype("int32"), "instance": chair.point_instance.astype("int32")})
    (OUT / "chair.parts.txt").write_text(",".join(chair.part_names) + "\n")
    print(f"wrote {OUT / 'chair.ply'} ({chair.num_points} points, parts {chair.part_names})")


if __name__ == "__main__":
    main()
