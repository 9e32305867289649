"""The offline CLI as an outside user found it (issue 12): negative up axes, a missing model failing before
any hub access, and library warnings printed once."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from partslip_core import cli


def test_negative_up_axis_is_accepted_with_a_space(tmp_path):
    args = cli.build_parser().parse_args(cli.attach_negative_axes(["segment", "x.ply", "--parts", "a", "--up-axis",
                                                                    "-y"]))
    assert args.up_axis == "-y"
    assert cli.attach_negative_axes(["--up-axis", "-y", "-v"]) == ["--up-axis=-y", "-v"]
    assert cli.attach_negative_axes(["--up-axis=-z"]) == ["--up-axis=-z"]


def test_segment_with_up_axis_minus_y_runs_end_to_end(tmp_path, capsys):
    from partslip_core.io import write_ply
    from partslip_core.synthetic import make_object
    obj = make_object("mug", 3000, seed=1)
    ply = tmp_path / "mug.ply"
    xyz = obj.xyz[:, [0, 2, 1]] * np.array([1.0, -1.0, 1.0], np.float32)  # z-up -> an optical-like -y-up frame
    write_ply(ply, xyz, obj.rgb, extra={"label": obj.point_label, "instance": obj.point_instance})
    status = cli.main(["segment", str(ply), "--parts", "body,handle", "--detector", "ground_truth",
                       "--image-size", "96", "--up-axis", "-y", "--out", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "labeled.ply").is_file()


def test_a_bad_up_axis_is_a_usage_error():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["segment", "x.ply", "--parts", "a", "--up-axis=w"])


def test_missing_weights_fail_before_any_hub_access(monkeypatch, tmp_path, capsys):
    """Without local weights the default model is looked up in the local cache only (no ~27 s of hub
    retries): every transformers load call must be local_files_only unless PARTSLIP_ALLOW_DOWNLOAD=1."""
    transformers = pytest.importorskip("transformers")
    monkeypatch.delenv("PARTSLIP_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))  # nothing cached
    monkeypatch.setenv("PARTSLIP_MODELS_DIR", str(tmp_path / "no_models"))
    calls = []
    original = transformers.AutoConfig.from_pretrained

    def recording(source, *args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        if not kwargs.get("local_files_only", False):
            raise AssertionError("went to the hub without being asked")
        return original(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", recording)
    from partslip_core.io import write_ply
    ply = tmp_path / "cube.ply"
    write_ply(ply, np.random.default_rng(0).random((500, 3)).astype(np.float32), None)
    status = cli.main(["segment", str(ply), "--parts", "a,b", "--detector", "grounding_dino", "--image-size", "64",
                       "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == cli.EXIT_DETECTOR, err
    assert calls == [True]
    assert "partslip models download" in err and "PARTSLIP_ALLOW_DOWNLOAD" in err


def test_downloads_happen_only_when_asked(monkeypatch):
    from partslip_core.detect import hf
    monkeypatch.delenv("PARTSLIP_ALLOW_DOWNLOAD", raising=False)
    assert not hf.hub_downloads_allowed()
    monkeypatch.setenv("PARTSLIP_ALLOW_DOWNLOAD", "1")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert hf.hub_downloads_allowed()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # offline wins over the request
    assert not hf.hub_downloads_allowed()


def test_a_library_warning_is_printed_once(capsys, monkeypatch):
    """huggingface_hub/transformers give their loggers their own stderr handler; the CLI's root handler
    must not print the same record a second time (with a "WARNING" prefix)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a fresh CLI process: no root handlers yet
    library = logging.getLogger("some_library_with_a_handler")
    own = logging.StreamHandler(sys.stderr)
    library.addHandler(own)
    try:
        cli.setup_logging(verbose=False)
        cli.setup_logging(verbose=False)  # idempotent: still one CLI handler
        library.warning("retrying in 1s")
        logging.getLogger("partslip").warning("our own warning")
        logging.getLogger("some_library_with_a_handler.child").warning("from a child logger")
    finally:
        library.removeHandler(own)
    err = capsys.readouterr().err
    assert err.count("retrying in 1s") == 1 and "WARNING retrying" not in err
    assert err.count("from a child logger") == 1
    assert err.count("WARNING our own warning") == 1
