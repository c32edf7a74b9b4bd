"""The dataset x backbone recipes (+experiment=ms1mv3_r50, ...) on a tiny insightface-layout folder the test builds:
train.rec / train.idx and lfw.bin / cfp_fp.bin / agedb_30.bin (synthetic faces), run as typed plus only what a CPU
needs (trainer=cpu) and +debug=tiny; benchmark=insightface_val reports each .bin under its own name."""

import io
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

RECIPES = ["ms1mv3_r50", "ms1mv3_r100", "glint360k_r100", "webface4m_r50", "webface42m_r50"]


def jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.transpose(1, 2, 0)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """12 people x 4 images packed as train.rec, and three 20-pair .bin sets of 6 other people."""
    from facelearn.data.recordio import pack
    from facelearn.data.records import FaceRecords
    from facelearn.data.synthetic import SyntheticFaces

    root = tmp_path_factory.mktemp("ms1m-like")
    faces = SyntheticFaces(num_identities=18, images_per_identity=4, seed=3).load(112)
    paths, names = [], []
    for i, (image, name) in enumerate(zip(faces.images[:48], faces.identities[:48])):
        path = root / "images" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(jpeg(image))
        paths.append(str(path))
        names.append(name)
    pack(FaceRecords(np.array(names, dtype=object), paths=paths, source="fixture"), root / "train.rec")
    held = faces.images[48:]  # 6 people x 4 images, not trained on
    for k, target in enumerate(["lfw", "cfp_fp", "agedb_30"]):
        rng = np.random.default_rng(k)
        bins, issame = [], []
        for j in range(20):
            p = rng.integers(6)
            a, b = rng.choice(4, 2, replace=False)
            q = p if j % 2 == 0 else (p + 1 + rng.integers(5)) % 6
            bins += [jpeg(held[4 * p + a]), jpeg(held[4 * q + b])]
            issame.append(bool(j % 2 == 0))
        with open(root / f"{target}.bin", "wb") as fh:
            pickle.dump((bins, issame), fh, protocol=4)
    return root


def train(args, tmp_path, timeout=900):
    return subprocess.run([sys.executable, "-m", "facelearn.train", *args, f"paths.log_dir={tmp_path / 'logs'}",
                           f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)


def test_ms1mv3_r50_runs_as_typed_on_cpu(dataset_dir, tmp_path):
    """The whole recipe (iresnet50, ArcFace s 64, Partial FC, polynomial schedule, streamed .rec, every .bin there)
    for a few steps; only the trainer is the CPU's."""
    proc = train(["+experiment=ms1mv3_r50", f"paths.dataset_dir={dataset_dir}", "trainer=cpu", "+debug=tiny",
                  "data.batch_size=4"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = next((tmp_path / "logs" / "ms1mv3_r50" / "runs").iterdir())
    metrics = json.loads((run / "benchmark_metrics.json").read_text())
    assert set(metrics["metrics"]) == {"lfw", "cfp_fp", "agedb_30"}, metrics  # each .bin under its own name
    assert 0.0 <= metrics["metrics"]["agedb_30"]["accuracy"] <= 1.0
    assert (run / "checkpoints").is_dir()
    cfg = (run / "config.yaml").read_text()
    assert "_target_: facelearn.optim.polynomial" in cfg and "sample_rate: 1.0" in cfg and "scale: 64.0" in cfg
    log = proc.stdout + proc.stderr
    for name in ("lfw", "cfp_fp", "agedb_30"):
        assert f"benchmark {name}: 20 pairs over 40 images" in log, log[-3000:]


def compose_recipe(recipe, tmp_path, overrides):
    from test_inprocess import compose_run
    return compose_run(tmp_path, [f"+experiment={recipe}", *overrides], tiny=None)


@pytest.mark.parametrize("recipe", RECIPES[1:])
def test_every_recipe_runs_its_data_head_classifier_and_schedule(recipe, dataset_dir, tmp_path):
    """The other recipes with a small backbone (their iresnet100 / iresnet50 are the one above or tested in
    tests/nn): data, head, Partial FC rate, schedule and benchmarks as the recipe sets them (in process)."""
    from facelearn.train import train as train_in_process
    cfg = compose_recipe(recipe, tmp_path, [f"paths.dataset_dir={dataset_dir}", "trainer=cpu", "+debug=tiny",
                                            "backbone=small", "backbone.embedding_size=512", "data.batch_size=8"])
    metrics = train_in_process(cfg)
    assert {"bench/lfw/accuracy", "bench/cfp_fp/accuracy", "bench/agedb_30/accuracy"} <= set(metrics), metrics


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_stop_before_any_data_without_a_gpu_or_a_folder(recipe, tmp_path):
    """As the recipe's comment prints it: on a CPU machine the GPU trainer is refused up front; a folder that does
    not exist, or none given, is named before anything is read."""
    import torch
    from facelearn.cli.validate import validate_train_config
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        validate_train_config(compose_recipe(recipe, tmp_path, [f"paths.dataset_dir={tmp_path / 'no'}", "trainer=cpu"]))
    with pytest.raises(ValueError, match=r"data.train.path needs paths.dataset_dir, which is not set"):
        validate_train_config(compose_recipe(recipe, tmp_path, ["trainer=cpu"]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="trainer.accelerator=gpu: no CUDA GPU is visible"):
            validate_train_config(compose_recipe(recipe, tmp_path, [f"paths.dataset_dir={tmp_path}"]))


def test_a_recipe_typed_without_its_folder_is_one_line(tmp_path):
    proc = train(["+experiment=glint360k_r100", "trainer=cpu"], tmp_path, timeout=300)
    last = proc.stderr.splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("facelearn.train: error: data.train.path needs paths.dataset_dir")
    assert not list((tmp_path / "logs").rglob("config.yaml")), "no run directory is left behind"


def test_recipe_sources_are_cited():
    for recipe in RECIPES:
        text = (ROOT / "src" / "facelearn" / "conf" / "experiment" / f"{recipe}.yaml").read_text()
        assert "arcface_torch's configs/" in text and "deepinsight/insightface, commit" in text, recipe


def test_the_readmes_recipe_lines_compose_as_printed():
    """Every README line that trains a recipe composes as printed (its /data folders are placeholders)."""
    import shlex
    from test_configs import compose_train
    lines = [li.split("#")[0] for li in (ROOT / "README.md").read_text().splitlines()
             if li.startswith("python -m facelearn.train") and any(f"+experiment={r}" in li for r in RECIPES)]
    assert len(lines) >= 2
    for line in lines:
        cfg = compose_train(shlex.split(line)[3:])
        assert cfg.task_name in RECIPES and cfg.paths.dataset_dir.startswith("/data/")
