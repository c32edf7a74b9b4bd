"""Every ``_target_`` node of a composed config checked against the signature it will be called with, before any
data is read: an unknown key, a wrong type or a required value left at ``???`` is refused naming the key, the value
and what was expected.

Why signatures and not a second copy of every option in dataclasses (Hydra's structured configs): the classes and
factories the configs instantiate *are* the schema (their parameters, defaults and annotations), so one source of
truth covers every group, every ``+experiment`` preset and every plugin's target, and a new option of a class is
checked the moment it exists. What a signature cannot say (ranges, cross-option rules, files) is in ``validate``.

Rules per node: keys must be parameters of the target (unless it takes ``**kwargs``); a value must fit the
parameter's annotation when that is a plain type (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, an
``Optional`` / union / list of those); other annotations (tensors, modules, callables, ``Any``) are not checked.
Parameters the code fills in at instantiation (``num_classes`` from the data, ...) may stay ``???``.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import re
import typing
from typing import Any, Iterator

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError

#: parameters the code passes itself when it instantiates a node (so ``???`` there is expected)
FILLED_AT_RUNTIME = frozenset({"num_classes"})
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
_NOT_GIVEN = object()


def _nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every dict node with a ``_target_`` under ``node`` (depth first), with its dotted key."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node._iter_ex(resolve=False)):
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _nodes(child, f"{path}[{i}]")


def _signature(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool] | None:
    """(parameters, resolved annotations, takes **kwargs), or None when the target has no usable signature."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # builtins such as datetime.timedelta
        return None
    params = {n: p for n, p in sig.parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation naming something not importable: check keys only
        hints = {}
    return params, hints, var_kw


def _scalar_ok(value: Any, kind: Any) -> bool | None:
    """True / False when ``kind`` is a type we check, None when it is not."""
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:  # a number typed on the command line (name=2024) is parsed as one by Hydra: take it
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return None


def _fits(value: Any, hint: Any) -> tuple[bool, str] | None:
    """(fits, what was expected) for a checkable annotation; None when the annotation is not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args, "one of " + ", ".join(repr(a) for a in args)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literals:  # Union[Literal[64, 32], Literal["bf16-mixed", ...], None]: one list of the allowed values
            allowed = [v for a in literals for v in typing.get_args(a)]
            rest = tuple(a for a in args if a not in literals)
            args = (typing.Literal[tuple(allowed)], *rest)
        verdicts = [_fits(value, a) for a in args]
        if any(v is None for v in verdicts):  # a member we do not check (e.g. a class): anything may be valid
            return None
        return any(ok for ok, _ in verdicts), " or ".join(dict.fromkeys(w for _, w in verdicts))
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, "a list"
        # list[X], tuple[X, ...], Sequence[X]: every element an X (a fixed tuple[X, Y] is not checked)
        inner = args[0] if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis) else None
        if inner is None:
            return True, "a list"
        checks = [_fits(v, inner) for v in value]
        if any(c is None for c in checks):
            return True, "a list"
        return all(ok for ok, _ in checks), f"a list of {checks[0][1] if checks else inner}"
    if hint is typing.Any:
        return None
    ok = _scalar_ok(value, hint)
    if ok is None:
        return None
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return ok, names[hint]


def _value(node: DictConfig, key: str) -> Any:
    """The resolved plain value of ``node[key]``, ``_NOT_GIVEN`` when it cannot be resolved here (an interpolation
    of something only the run knows) or is a node that will be instantiated."""
    child = node._get_node(key)
    if OmegaConf.is_missing(node, key):
        return "???"
    try:
        if isinstance(child, DictConfig):
            return _NOT_GIVEN if "_target_" in child else OmegaConf.to_container(child, resolve=True)
        if isinstance(child, ListConfig):
            return OmegaConf.to_container(child, resolve=True)
        return node[key]
    except InterpolationToMissingValueError as e:  # e.g. ${paths.dataset_dir}/train.rec with no dataset_dir
        missing = re.search(r"Missing mandatory value: ([\w.]+)", str(e))
        return _MissingVia(missing.group(1) if missing else str(e).splitlines()[0])
    except Exception:  # noqa: BLE001 - unresolvable interpolation: validate() or the run itself reports it
        return _NOT_GIVEN


class _MissingVia(str):
    """The value interpolates a key that is ``???`` (the key's name)."""


def check_node(path: str, node: DictConfig) -> None:
    """Check one ``_target_`` node; raises ``ValueError`` naming the key."""
    target_name = str(node._get_node("_target_")._value())
    try:
        target = get_object(target_name)
    except Exception as e:  # noqa: BLE001 - ImportError, AttributeError
        raise ValueError(f"{path}._target_={target_name}: cannot be imported ({type(e).__name__}: {e})") from None
    sig = _signature(target)
    if sig is None:
        return
    params, hints, var_kw = sig
    short = target_name.rsplit(".", 1)[-1]
    partial = bool(node.get("_partial_", False))
    for key in node.keys():
        key = str(key)
        if key in _HYDRA_KEYS:
            continue
        where = f"{path}.{key}" if path else key
        if key not in params:
            if var_kw:
                continue
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean {path}.{close[0]}?)" if close else ""
            raise ValueError(f"{where}: {short} has no option {key!r}{hint}; its options: {', '.join(params)}")
        value = _value(node, key)
        if value is _NOT_GIVEN:
            continue
        if isinstance(value, _MissingVia):
            raise ValueError(f"{where} needs {value}, which is not set: add {value}=...")
        if value == "???":
            if key in FILLED_AT_RUNTIME or partial:
                continue
            raise ValueError(f"{where} is required ({short}'s {key}) and not set: add {where}=...")
        hint = hints.get(key)
        if hint is None:
            continue
        verdict = _fits(value, hint)
        if verdict is not None and not verdict[0]:
            raise ValueError(f"{where}={value!r}: expected {verdict[1]} ({short}'s {key})")


def check_config(cfg: DictConfig, roots: tuple[str, ...] | None = None) -> None:
    """Check every ``_target_`` node of ``cfg`` (or of the top-level keys ``roots``) against its target's
    signature. Raises ``ValueError`` on the first problem."""
    for root in roots if roots is not None else tuple(str(k) for k in cfg.keys()):
        if root == "hydra" or root not in cfg:
            continue
        child = cfg._get_node(root)
        if isinstance(child, (DictConfig, ListConfig)):
            for path, node in _nodes(child, root):
                check_node(path, node)
