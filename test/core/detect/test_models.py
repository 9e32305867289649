"""`partslip models` list / verify / download and the model registry (no network here)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from partslip_core.config import DetectorConfig
from partslip_core.detect import build_detector
from partslip_core.models import (KNOWN_MODELS, ModelError, ModelSpec, fewshot_part_names, get_spec,
                                  local_model_path, models_dir, models_main, verify_model)


def test_registry_covers_the_expected_models_and_invents_no_checksums():
    for name in ("glip_large", "glip_tiny", "grounding_dino_tiny", "grounding_dino_base", "owlv2_base", "owlv2_large",
                 "glip_fewshot_chair", "glip_fewshot_storagefurniture"):
        assert name in KNOWN_MODELS
    recorded = {n for n, s in KNOWN_MODELS.items() if s.sha256}
    assert recorded == {"glip_large", "glip_tiny"}  # the only ones with a public LFS pointer we could read
    assert all(len(KNOWN_MODELS[n].sha256) == 64 and KNOWN_MODELS[n].size for n in recorded)
    assert fewshot_part_names("/x/Chair.pth") == ("arm", "back", "leg", "seat", "wheel")
    assert fewshot_part_names("glip_large_model.pth") is None


def test_models_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("PARTSLIP_MODELS_DIR", raising=False)
    assert models_dir() == Path("models")
    monkeypatch.setenv("PARTSLIP_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path and models_dir("other") == Path("other")


def test_list_shows_missing_and_present(tmp_path, tiny_gd_dir, capsys):
    shutil.copytree(tiny_gd_dir, tmp_path / "grounding_dino_tiny")
    assert models_main(["list", "--models-dir", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == set(KNOWN_MODELS)
    assert " present" in lines["grounding_dino_tiny"] and "missing" in lines["grounding_dino_base"]
    assert "unverified" in lines["owlv2_base"] and "sha256 recorded" in lines["glip_large"]


def test_verify_snapshot_ok_and_corrupt(tmp_path, tiny_gd_dir, capsys):
    target = Path(shutil.copytree(tiny_gd_dir, tmp_path / "grounding_dino_tiny"))
    assert models_main(["verify", "grounding_dino_tiny", "--models-dir", str(tmp_path)]) == 0
    assert "OK   grounding_dino_tiny" in capsys.readouterr().out
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    assert models_main(["--models-dir", str(tmp_path), "verify"]) == 1  # default: every present model
    out = capsys.readouterr().out
    assert "FAIL grounding_dino_tiny" in out and "not a readable safetensors file" in out


def test_verify_rejects_snapshot_of_the_wrong_model(tmp_path, tiny_owl_dir):
    shutil.copytree(tiny_owl_dir, tmp_path / "grounding_dino_base")
    report = verify_model(get_spec("grounding_dino_base"), tmp_path)
    assert not report.ok and "expected 'grounding-dino'" in report.lines[-1]


def test_verify_file_size_and_torch_safety(tmp_path):
    (tmp_path / "glip_large_model.pth").write_bytes(b"0" * 10)
    report = verify_model(get_spec("glip_large"), tmp_path)
    assert not report.ok and "expected 6896153761" in report.lines[-1]
    fewshot = tmp_path / "glip_fewshot" / "Chair.pth"
    fewshot.parent.mkdir()
    torch.save({"model": {"w": torch.zeros(3), "b": torch.ones(2)}}, fewshot)
    report = verify_model(get_spec("glip_fewshot_chair"), tmp_path)
    assert report.ok and "sha256 unverified" in report.lines[0] and "2 tensors" in report.lines[1]
    fewshot.write_bytes(fewshot.read_bytes()[:50])
    report = verify_model(get_spec("glip_fewshot_chair"), tmp_path)
    assert not report.ok and "weights_only=True" in report.lines[-1]


def test_verify_sha256(tmp_path):
    payload = tmp_path / "w.pth"
    torch.save({"w": torch.arange(4)}, payload)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    good = ModelSpec(name="t", backend="glip", kind="file", repo_id="x/y", local_path="w.pth", description="",
                     size=payload.stat().st_size, sha256=digest)
    assert verify_model(good, tmp_path).lines[0] == "sha256 ok"
    bad = ModelSpec(**{**good.__dict__, "sha256": "0" * 64})
    report = verify_model(bad, tmp_path)
    assert not report.ok and "does not match" in report.lines[-1]
    assert verify_model(bad, tmp_path, hash_files=False).ok  # --no-hash skips the digest, still opens the file


def test_verify_nothing_present_and_missing_named(tmp_path, capsys):
    assert models_main(["verify", "--models-dir", str(tmp_path)]) == 1
    assert "no known model is present" in capsys.readouterr().out
    assert models_main(["verify", "owlv2_base", "--models-dir", str(tmp_path)]) == 1
    assert "partslip models download owlv2_base" in capsys.readouterr().out


def test_download_without_network_is_a_clear_message(tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert models_main(["download", "owlv2_base", "glip_large", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("error: HF_HUB_OFFLINE is set") == 2 and "Traceback" not in err
    assert not (tmp_path / "owlv2_base").exists()


def test_usage_errors_exit_2(capsys):
    assert models_main(["download", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert models_main(["frobnicate"]) == 2
    with pytest.raises(ModelError):
        get_spec("nope")


def test_backends_load_their_default_model_from_the_models_dir(tmp_path, tiny_gd_dir, monkeypatch):
    """weights unset -> the models-dir copy of the default model, without touching the network."""
    shutil.copytree(tiny_gd_dir, tmp_path / "grounding_dino_base")
    monkeypatch.setenv("PARTSLIP_MODELS_DIR", str(tmp_path))
    assert local_model_path("grounding_dino_base") == tmp_path / "grounding_dino_base"
    detector = build_detector(DetectorConfig(backend="grounding_dino"))
    assert detector.model.config.num_queries == 30  # the tiny model, not the hub's
    by_name = build_detector(DetectorConfig(backend="grounding_dino", weights="grounding_dino_base"))
    assert by_name.model.config.d_model == 32
    from partslip_core.detect import DetectorError
    with pytest.raises(DetectorError, match="is a owlv2 model"):
        build_detector(DetectorConfig(backend="grounding_dino", weights="owlv2_base"))
