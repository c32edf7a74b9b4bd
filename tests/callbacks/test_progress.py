"""Progress lines print the head accuracy in percent, like the benchmark tables."""

from facelearn.callbacks.progress import _shown


def test_accuracy_in_percent_loss_as_is():
    assert _shown("acc", 0.71875) == "acc 71.88%"
    assert _shown("loss", 1.51149) == "loss 1.511"
