"""The configs ship inside the package: a non-editable install composes configs and runs a multirun from outside
the repo."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_non_editable_install_finds_configs(tmp_path):
    import shutil

    # Build from a copy: setuptools writes build/ next to the sources, which must not land in the repository.
    src = tmp_path / "src_copy"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", "import facelearn; print(facelearn.__file__)"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.startswith(str(target))
    out = subprocess.run([sys.executable, "-m", "facelearn.train", "+experiment=conventional_lfw", "--cfg", "job"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "facelearn.protocols.pairs.LFWPairs" in out.stdout
    # A multirun from the installed wheel, typed from a directory outside the repository, no paths override.
    from conftest import TINY
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-m", "facelearn.train", "-m", "+experiment=conventional_shallow",
                          "head=arcface,cosface", *TINY, "trainer.max_epochs=1"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    (sweep,) = list((work / "logs" / "multiruns").iterdir())
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert all((sweep / j / "benchmark_metrics.json").is_file() for j in ("0", "1"))
