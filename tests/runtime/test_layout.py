"""The resume rule of facelearn.runtime.layout: another split of the same global batch continues, another global
batch (or accumulation) is refused with the data.batch_size that keeps it; the world size a config will run as."""

import pytest

from facelearn.runtime.layout import (Layout, checkpoint_layout, describe_change, planned_world_size,
                                      resume_error)


@pytest.mark.parametrize("old, new", [((2, 16), (1, 32)), ((1, 32), (2, 16)), ((2, 16), (4, 8)), ((8, 64), (8, 64))])
def test_the_same_global_batch_on_another_split_continues(old, new):
    assert resume_error(Layout(*old), Layout(*new)) is None


@pytest.mark.parametrize("old, new, expected", [
    ((2, 16), (1, 16), "with 1 process(es), data.batch_size=32 keeps the global batch of 32"),
    ((1, 32), (2, 32), "with 2 process(es), data.batch_size=16 keeps the global batch of 32"),
    ((2, 16), (3, 16), "no data.batch_size gives the global batch of 32 on 3 process(es)"),
    ((2, 1), (4, 1), "no data.batch_size gives the global batch of 2 on 4 process(es)"),
])
def test_another_global_batch_is_refused_naming_the_batch_size_that_keeps_it(old, new, expected):
    message = resume_error(Layout(*old), Layout(*new))
    assert expected in message
    assert f"trained with {old[0]} process(es) x data.batch_size={old[1]} (global batch {old[0] * old[1]})" in message


def test_a_changed_accumulation_is_refused():
    message = resume_error(Layout(2, 16, 2), Layout(4, 16, 1))
    assert "keep trainer.accumulate_grad_batches=2" in message and "product stays 32" in message


@pytest.mark.parametrize("trainer, env, expected", [
    ({"accelerator": "cpu", "devices": 1}, {}, 1),
    ({"strategy": "ddp", "devices": 2, "num_nodes": 1}, {}, 2),
    ({"strategy": "ddp", "devices": 8, "num_nodes": 4}, {}, 32),
    ({"strategy": "ddp", "devices": [0, 1, 2], "num_nodes": 1}, {}, 3),
    ({"strategy": "ddp", "devices": "auto"}, {}, None),
    ({"strategy": "auto", "devices": 2}, {}, None),  # Lightning's choice
    ({"strategy": "ddp", "devices": 1}, {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4"}, 4),  # torchrun
    ({"strategy": "ddp", "devices": 2}, {"WORLD_SIZE": "4"}, 2),  # not a torchrun launch
])
def test_planned_world_size(trainer, env, expected):
    assert planned_world_size(trainer, env) == expected


def test_the_layout_is_read_from_the_resume_callback_state():
    ckpt = {"callbacks": {"ModelCheckpoint{...}": {}, "ResumeStateCallback": {
        "layout": {"world_size": 2, "batch_size": 16, "accumulate": 1}}}}
    assert checkpoint_layout(ckpt) == Layout(2, 16)
    assert checkpoint_layout({"callbacks": {}}) is None
    # checkpoints of runs whose datamodule had no batch size say nothing
    assert checkpoint_layout({"callbacks": {"ResumeStateCallback": {"layout": {"world_size": 1,
                                                                               "batch_size": -1}}}}) is None


def test_the_resume_line_names_what_differs_with_the_split():
    old, new = Layout(2, 16), Layout(1, 32)
    exact = describe_change(old, new, batchnorm_images=(32, 32), pair_losses=False, dropout=False,
                            sampled_partial_fc=False)
    assert "global batch of 32 is kept" in exact and "nothing else depends on the split" in exact
    line = describe_change(old, new, batchnorm_images=(16, 32), pair_losses=True, dropout=True,
                           sampled_partial_fc=True)
    for part in ("BatchNorm statistics over 32 instead of 16 images", "pair losses over 32-image instead of "
                 "16-image batches", "dropout masks", "Partial FC's sampled negatives"):
        assert part in line
