"""facelearn.runtime.checkpointing.AtomicCheckpointIO: a save that fails part-way (a full disk, a folder that cannot be
written) leaves the previous checkpoint loadable (weights_only) and no temporary file, with an error that says so."""

import errno
import os

import pytest
import torch

from facelearn.runtime import checkpointing
from facelearn.runtime.checkpointing import AtomicCheckpointIO


def test_a_failing_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def disk_full(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpointing.torch, "save", disk_full)
    with pytest.raises(OSError, match=r"cannot write checkpoint .*last.ckpt: No space left on device \(the previous "
                                      r"last.ckpt is unchanged; free space or make .*checkpoints writable"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.undo()
    kept = torch.load(path, map_location="cpu", weights_only=True)
    assert kept["global_step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert os.listdir(path.parent) == ["last.ckpt"]  # no .tmp-<pid> left behind


def test_an_unwritable_folder_is_named(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(checkpointing, "open", read_only, raising=False)  # root ignores chmod: simulate it
    with pytest.raises(OSError, match=r"cannot write checkpoint .*best.ckpt: Permission denied \(nothing saved"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 0}, tmp_path / "best.ckpt")

