"""facelearn.align and the pretrained SFace through facelearn.evaluate, as typed, in subprocesses run from a
directory outside the repository (real faces and models from ../shared; skipped without them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
LFW = SHARED / "data" / "lfw"
MODELS = SHARED / "models"
needs_shared = pytest.mark.skipif(not (LFW / "lfw-deepfunneled").is_dir()
                                  or not (MODELS / "face_detection_yunet_2023mar_int8bq.onnx").is_file(),
                                  reason="../shared (LFW and the models) absent")


def typed(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACELEARN_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def photo_folder(tmp_path):
    """Two LFW people (links to the shared files) and one image without a face."""
    src = tmp_path / "photos"
    for person in ("Aaron_Peirsol", "Abdullah_Gul"):
        (src / person).mkdir(parents=True)
        for f in sorted((LFW / "lfw-deepfunneled" / person).glob("*.jpg"))[:3]:
            (src / person / f.name).symlink_to(f)
    (src / "Nobody").mkdir()
    # a smooth gradient: nothing a detector could take for a face (random noise yields low-score false positives)
    ramp = np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None].repeat(120, 0).repeat(3, 2)
    Image.fromarray(ramp).save(src / "Nobody" / "noise.png")
    return src


@needs_shared
def test_align_cli_writes_crops_landmarks_failures_summary_and_rec(photo_folder, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = typed(["facelearn.align", str(photo_folder), "aligned", "--rec", "aligned.rec", "--workers", "2"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "aligned"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 7 and summary["written"] == 7 and summary["no_face"] == 1
    assert summary["stages"]["fallback"] == 1 and sum(summary["stages"].values()) == 7
    assert "noise.png\tcentre crop" in (out / "failures.txt").read_text()
    rows = (out / "landmarks.tsv").read_text().splitlines()
    assert len(rows) == 8 and rows[0].startswith("source\tcrop\tstage")
    crops = sorted(out.glob("*/*.png"))
    assert len(crops) == 7
    for c in crops:
        with Image.open(c) as im:
            assert im.size == (112, 112)
    assert summary["rec"]["images"] == 7 and summary["rec"]["identities"] == 3
    assert (work / "aligned.idx").is_file() and (work / "aligned.names").read_text().split() == [
        "Aaron_Peirsol", "Abdullah_Gul", "Nobody"]
    assert "1 without a face -> fallback" in proc.stdout


@needs_shared
def test_align_cli_refuses_or_skips_faceless_images(photo_folder, tmp_path):
    proc = typed(["facelearn.align", str(photo_folder), "strict", "--on-failure", "error"], tmp_path)
    assert proc.returncode != 0 and "noise.png" in proc.stderr and "nothing written" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "strict").exists()
    proc = typed(["facelearn.align", str(photo_folder), "skipped", "--on-failure", "skip"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "skipped" / "Nobody").exists()
    assert "noise.png\tskipped" in (tmp_path / "skipped" / "failures.txt").read_text()


def test_align_cli_names_a_missing_detector_in_one_line(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "src" / "a" / "x.png")
    proc = typed(["facelearn.align", str(tmp_path / "src"), "out", "--detector", str(tmp_path / "no.onnx")],
                 tmp_path)
    assert proc.returncode != 0 and "no.onnx does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@needs_shared
def test_align_cli_reads_the_cfp_layout(tmp_path):
    cfp = SHARED / "data" / "cfp"
    if not (cfp / "Data" / "list_name.txt").is_file():
        pytest.skip("CFP absent")
    mini = tmp_path / "cfp"
    (mini / "Data").mkdir(parents=True)
    (mini / "Data" / "list_name.txt").write_text((cfp / "Data" / "list_name.txt").read_text())
    for pose in ("frontal", "profile"):
        (mini / "Data" / "Images" / "001" / pose).mkdir(parents=True)
        for f in sorted((cfp / "Data" / "Images" / "001" / pose).glob("*.jpg"))[:2]:
            (mini / "Data" / "Images" / "001" / pose / f.name).symlink_to(f)
    proc = typed(["facelearn.align", str(mini), "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name = (cfp / "Data" / "list_name.txt").read_text().splitlines()[0].strip()
    assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == [
        "frontal_01.png", "frontal_02.png", "profile_01.png", "profile_02.png"]


@needs_shared
def test_pretrained_sface_evaluates_on_aligned_pairs_as_typed(tmp_path):
    """The README's command on a 40-pair slice of pairsDevTest (the full View-2 / CFP run is the slow test below
    and experiments/results/sface_pretrained)."""
    pytest.importorskip("onnx")
    lines = (LFW / "pairsDevTest.txt").read_text().splitlines()[1:]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("20\n" + "\n".join(lines[:20] + lines[500:520]) + "\n")
    proc = typed(["facelearn.evaluate", "backbone=sface", "alignment=five_point", "benchmark=lfw_devtest",
                  f"benchmark.lfw_devtest.pairs_file={pairs}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next((tmp_path / "logs" / "evaluate" / "runs").glob("*/evaluation.json")).read_text())
    assert result["metrics"]["lfw_devtest"]["accuracy"] >= 0.95
    assert "five landmarks of" in proc.stdout + proc.stderr and "SFaceNet" in proc.stdout


@needs_shared
def test_ida_on_a_pretrained_backbone_with_aligned_folder_anchors_as_typed(tmp_path):
    """The README's IDA command for a backbone without a training run: anchors aligned by facelearn.align (one image
    of 12 LFW people not in pairsDevTest), IDA-R and IDA-L on a 40-pair slice of pairsDevTest (README: CFP-FP)."""
    pytest.importorskip("onnx")
    lines = (LFW / "pairsDevTest.txt").read_text().splitlines()[1:]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("20\n" + "\n".join(lines[:20] + lines[500:520]) + "\n")
    test_people = {f.split()[0] for f in lines} | {f.split()[2] for f in lines if len(f.split()) == 4}
    others = [p for p in sorted(os.listdir(LFW / "lfw-deepfunneled")) if p not in test_people][:12]
    (tmp_path / "anchors.txt").write_text("".join(f"{p}/{p}_0001.jpg {p}\n" for p in others))
    proc = typed(["facelearn.align", str(LFW / "lfw-deepfunneled"), "aligned_anchors", "--list", "anchors.txt"],
                 tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = typed(["facelearn.evaluate", "backbone=sface", "alignment=five_point", "benchmark=lfw_devtest",
                  f"benchmark.lfw_devtest.pairs_file={pairs}", "ida=both", "ida.ida_r.anchors=folder",
                  "ida.ida_r.folder=aligned_anchors/", "ida.ida_l.anchors=folder", "ida.ida_l.folder=aligned_anchors/"],
                 tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(next((tmp_path / "logs" / "evaluate" / "runs").glob("*/evaluation.json")).read_text())["metrics"]
    assert {"accuracy", "ida_r/accuracy", "ida_l/accuracy"} <= set(m["lfw_devtest"])
    log = proc.stdout + proc.stderr
    assert "IDA-R: 12 anchors (folder)" in log and "IDA-L regressor: 12 training embeddings" in log


def test_a_missing_detector_stops_training_before_the_data(tmp_path):
    proc = typed(["facelearn.train", "+debug=tiny_synthetic", "alignment=five_point",
                  f"alignment.detector={tmp_path / 'gone.onnx'}", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert proc.returncode != 0 and "alignment.detector" in proc.stderr and "gone.onnx does not exist" in proc.stderr


@pytest.mark.slow
@needs_shared
def test_readme_sface_command_reaches_the_published_accuracy(tmp_path):
    proc = typed(["facelearn.evaluate", "backbone=sface", "alignment=five_point", "benchmark=[lfw_view2,cfp_fp]"],
                 tmp_path, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(next((tmp_path / "logs" / "evaluate" / "runs").glob("*/evaluation.json")).read_text())["metrics"]
    assert m["lfw_view2"]["accuracy"] >= 0.993 and m["cfp_fp"]["accuracy"] >= 0.94, m
