"""`partslip finetune`: the subcommand end to end on a generated dataset (2 steps: wiring, not accuracy)."""

from __future__ import annotations

import json

import pytest

from partslip_core.cli import EXIT_INPUT, main
from partslip_core.finetune import METADATA_FILE
from partslip_core.synthetic import write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_ds")
    write_dataset(root, categories=["mug", "table"], shapes_per_category=2, num_points=600, seed=2)
    return root


def test_finetune_command_writes_a_loadable_folder_and_prints_the_table(dataset, tmp_path, capsys):
    out = tmp_path / "my_model"
    status = main(["finetune", str(dataset), "--out", str(out), "--backend", "owlv2", "--scratch", "tiny",
                   "--steps", "2", "--batch-size", "2", "--holdout", "1", "--extra-views", "0",
                   "--partial-variants", "0", "--image-size", "64", "--threshold", "0.2", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "mIoU before" in captured.out and "mug" in captured.out and "table" in captured.out
    assert "over 2 steps" in captured.out and f"--weights {out}" in captured.err
    record = json.loads((out / METADATA_FILE).read_text())
    assert record["backend"] == "owlv2"
    assert record["part_lists"] == {"mug": ["body", "handle"], "table": ["leg", "tabletop"]}
    assert len(record["held_out_shapes"]) == 2 and len(record["train_shapes"]) == 2
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def test_finetune_command_errors(dataset, tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "missing"), "--out", str(tmp_path / "m"), "--scratch", "tiny"]) == EXIT_INPUT
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --init and --scratch exclude each other
        main(["finetune", str(dataset), "--out", str(tmp_path / "m"), "--init", "x", "--scratch", "tiny"])
    with pytest.raises(SystemExit):  # only the trainable backends
        main(["finetune", str(dataset), "--out", str(tmp_path / "m"), "--backend", "glip"])
