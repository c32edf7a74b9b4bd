"""The signature check of ``_target_`` nodes (facelearn.cli.schema): keys, types, required values, by hand."""

from typing import Literal, Optional, Union

import pytest
from omegaconf import OmegaConf

from facelearn.cli.schema import _fits, check_config


def target(a: int, b: float = 1.0, c: Optional[str] = None, d: bool = False, e: list[int] | None = None,
           mode: Literal["x", "y"] = "x") -> None:
    """A target with one parameter of each checked kind."""


def takes_kwargs(a: int = 0, **rest) -> None:
    """A target whose extra keys go elsewhere."""


T = f"{__name__}.target"


@pytest.mark.parametrize("value,hint,ok", [
    (3, int, True), (3.0, int, False), (True, int, False), ("3", int, False),
    (3, float, True), (2.5, float, True), (False, float, False),
    (None, Optional[int], True), ("a", Optional[int], False),
    ("a", str, True), (2024, str, True), (True, str, False),
    ([1, 2], list[int], True), ([1, "a"], list[int], False), ("1", list[int], False),
    ("y", Literal["x", "y"], True), ("z", Literal["x", "y"], False),
    ("bf16", Union[Literal[32, 16], Literal["bf16"], None], True), (8, Union[Literal[32, 16], None], False),
])
def test_fits(value, hint, ok):
    assert _fits(value, hint)[0] is ok


def test_unchecked_annotations_are_left_alone():
    assert _fits(object(), object) is None and _fits(1, Union[int, OmegaConf]) is None


def check(**node):
    check_config(OmegaConf.create({"grp": {"_target_": T, **node}}))


def test_a_valid_node_passes():
    check(a=1, b=2, c="s", d=True, e=[1, 2], mode="y")


@pytest.mark.parametrize("node,message", [
    ({"a": 1, "bb": 2.0}, r"grp.bb: target has no option 'bb' \(did you mean grp.b\?\); its options: a, b, c, d, e, mode"),
    ({"a": "one"}, r"grp.a='one': expected an integer \(target's a\)"),
    ({"a": 1, "b": "abc"}, r"grp.b='abc': expected a number"),
    ({"a": 1, "d": "yes"}, r"grp.d='yes': expected true or false"),
    ({"a": 1, "e": [1, "x"]}, r"grp.e=\[1, 'x'\]: expected a list of an integer or null"),
    ({"a": 1, "mode": "z"}, r"grp.mode='z': expected one of 'x', 'y'"),
    ({"a": "???"}, r"grp.a is required \(target's a\) and not set: add grp.a=\.\.\."),
])
def test_bad_nodes_are_refused_naming_the_key(node, message):
    with pytest.raises(ValueError, match=message):
        check(**node)


def test_partial_kwargs_interpolation_and_runtime_filled_values_pass():
    check(a="???", _partial_=True)  # given at call time
    check_config(OmegaConf.create({"grp": {"_target_": f"{__name__}.takes_kwargs", "anything": 1}}))
    check_config(OmegaConf.create({"n": 3, "grp": {"_target_": T, "a": "${n}"}}))
    cfg = OmegaConf.create({"grp": {"_target_": T, "a": "${missing_key}"}})
    check_config(cfg)  # unresolvable here: left to the run (which names it)


def test_nested_nodes_and_lists_are_checked():
    cfg = OmegaConf.create({"outer": {"_target_": f"{__name__}.takes_kwargs",
                                      "inner": [{"_target_": T, "a": 1, "zz": 0}]}})
    with pytest.raises(ValueError, match=r"outer.inner\[0\].zz: target has no option 'zz'"):
        check_config(cfg)


def test_an_unimportable_target_is_named():
    with pytest.raises(ValueError, match=r"grp._target_=facelearn.nope.Missing: cannot be imported"):
        check_config(OmegaConf.create({"grp": {"_target_": "facelearn.nope.Missing"}}))
