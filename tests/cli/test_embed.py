"""python -m facelearn.embed and facelearn.load_model, as typed: a checkpoint or its ONNX export, a folder / list
file / .rec in, embeddings + index (+ FAISS) out, equal to the module's own embedding of the same pixels."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import TINY


def typed(args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny synthetic run's last.ckpt and 7 PNG faces in two sub-folders."""
    work = tmp_path_factory.mktemp("embed")
    proc = typed(["facelearn.train", "+experiment=conventional_shallow", *TINY, "trainer.max_epochs=1",
                  f"paths.log_dir={work / 'logs'}"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rng = np.random.default_rng(0)
    for i in range(7):
        (work / "faces" / f"p{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(work / "faces" / f"p{i % 2}" / f"{i}.png")
    return next((work / "logs").rglob("last.ckpt")), work / "faces"


def reference(ckpt, paths, center_crop=None):
    import torch
    from facelearn.data.images import FaceCrop, decode_images
    from facelearn.evaluate import load_checkpoint_module
    module, cfg = load_checkpoint_module(str(ckpt))
    images = decode_images([str(p) for p in paths], FaceCrop(cfg.data.image_size, center_crop))
    with torch.no_grad():
        return module.embed(torch.from_numpy(images)).numpy()


def test_embed_a_folder_as_typed(trained, tmp_path):
    ckpt, faces = trained
    proc = typed(["facelearn.embed", str(ckpt), str(faces), "out/emb", "--center-crop", "36", "--faiss"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "7 embeddings of dimension 64" in proc.stdout
    emb = np.load(tmp_path / "out" / "emb.npy")
    names = (tmp_path / "out" / "emb.txt").read_text().split()
    assert names == sorted(names) and names[0] == "p0/0.png" and len(names) == 7
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, reference(ckpt, [faces / n for n in names], 36), atol=1e-5)
    import faiss
    index = faiss.read_index(str(tmp_path / "out" / "emb.faiss"))
    scores, ids = index.search(emb[:1], 1)
    assert index.ntotal == 7 and ids[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_embed_a_list_file_and_a_rec(trained, tmp_path):
    from facelearn.data.recordio import pack
    from facelearn.data.records import IdentityFolder
    ckpt, faces = trained
    from facelearn.embed import main  # the same arguments in process (the folder test above runs the command)
    (tmp_path / "list.txt").write_text("# two of them\np1/1.png 1\np0/2.png\n")
    main([str(ckpt), str(tmp_path / "list.txt"), str(tmp_path / "l"), "--root", str(faces)])
    assert (tmp_path / "l.txt").read_text().split() == ["p1/1.png", "p0/2.png"]
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), reference(ckpt, [faces / "p1/1.png", faces / "p0/2.png"]),
                               atol=1e-5)
    pack(IdentityFolder(str(faces)).load(0), tmp_path / "f.rec")
    main([str(ckpt), str(tmp_path / "f.rec"), str(tmp_path / "r")])
    assert np.load(tmp_path / "r.npy").shape == (7, 64)


def test_a_list_entry_outside_the_root_and_a_missing_model_are_one_line_errors(trained, tmp_path):
    ckpt, faces = trained
    from facelearn.embed import main
    (tmp_path / "bad.txt").write_text("../../etc/passwd\n")
    with pytest.raises(SystemExit, match=r"bad.txt:1: '../../etc/passwd' is not a path inside"):
        main([str(ckpt), str(tmp_path / "bad.txt"), str(tmp_path / "x"), "--root", str(faces)])
    with pytest.raises(SystemExit, match=r"facelearn.embed: error: model .*none.ckpt does not exist"):
        main([str(tmp_path / "none.ckpt"), str(faces), str(tmp_path / "x")])
    assert not (tmp_path / "x.npy").exists()


def test_load_model_in_python_and_onnx_agree(trained, tmp_path):
    """The README's Python lines; the exported ONNX model gives the checkpoint's embeddings."""
    import facelearn
    ckpt, faces = trained
    files = sorted(str(p) for p in faces.rglob("*.png"))[:3]
    model = facelearn.load_model(ckpt)
    emb = model.embed_files(files)
    assert emb.shape == (3, 64) and abs(float(emb[0] @ emb[0]) - 1) < 1e-5
    from facelearn.evaluate import load_checkpoint_module
    from facelearn.onnx_model import export_onnx
    module, cfg = load_checkpoint_module(str(ckpt))
    export_onnx(module, str(tmp_path / "m.onnx"), int(cfg.data.image_size))  # facelearn.export's own call
    np.testing.assert_allclose(facelearn.load_model(tmp_path / "m.onnx").embed_files(files), emb, atol=1e-4)
