"""Configurations and checkpoints of pyg_sphere's models: rebuild a model from its
constructor arguments, say how a checkpoint differs from a model, load weights only when
they fit.

Every model of :mod:`pyg_sphere.nn.models` exposes these as :attr:`config`,
:meth:`from_config`, :meth:`config_differences` and :meth:`load_checkpoint_state`.

Example:
    >>> from pyg_sphere.nn import DeepSphere
    >>> from pyg_sphere import checkpoint
    >>> model = DeepSphere(1, 2, nside=8, channels=(8, 16))
    >>> config = checkpoint.model_config(model)
    >>> clone = checkpoint.model_from_config(DeepSphere, config)
    >>> checkpoint.config_differences(clone, config)
    []
"""

import inspect
from typing import Any, Dict, List, Optional, Sequence

from torch import Tensor

# Constructor arguments that do not change the parameters nor the outputs of a trained model.
_TRAINING_ONLY = ("dropout",)


def describe_region(pixels: Optional[List[int]], nside) -> str:
    """Names a model's region in messages: the full sphere, or a region of N pixels."""
    if pixels is None:
        return (
            f"the full sphere ({12 * nside**2} pixels)"
            if isinstance(nside, int)
            else "the full sphere"
        )
    if len(pixels) and pixels[-1] - pixels[0] == len(pixels) - 1:
        return f"a region of {len(pixels)} pixels (nested ids {pixels[0]}..{pixels[-1]})"
    return f"a region of {len(pixels)} pixels"


def _normalise_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A config as read back from JSON (lists) in the form :attr:`config` returns."""
    out = dict(config)
    if isinstance(out.get("channels"), (list, tuple)):
        out["channels"] = tuple(int(c) for c in out["channels"])
    if out.get("pixels") is not None:
        pixels = out["pixels"]
        if isinstance(pixels, Tensor):
            pixels = pixels.tolist()
        out["pixels"] = [int(p) for p in pixels]
    return out


def _architecture_problem(config: Dict[str, Any], arguments: Sequence[str], name: str) -> str:
    """Says how a config's argument names differ from a class's ('' if they match)."""
    unknown = sorted(set(config) - set(arguments))
    missing = [key for key in arguments if key not in config]
    if not unknown and not missing:
        return ""
    parts = ([f"has arguments {unknown} that {name} does not take"] if unknown else []) + (
        [f"lacks arguments {missing} of {name}"] if missing else []
    )
    return (
        f"the checkpoint's config {' and '.join(parts)}: it was saved from another "
        f"architecture (config arguments: {sorted(config)})"
    )


def model_config(model) -> Dict[str, Any]:
    """The constructor arguments of :obj:`model`, JSON-serialisable (:obj:`pixels` as a list
    or None)."""
    cfg = dict(model._config)
    cfg["channels"] = list(cfg["channels"])
    cfg["pixels"] = None if cfg["pixels"] is None else list(cfg["pixels"])
    return cfg


def model_from_config(cls, config: Dict[str, Any]):
    """Builds a :obj:`cls` model from a config (e.g. read back from a checkpoint or JSON)."""
    if not isinstance(config, dict):
        raise TypeError(
            f"config must be a dict of constructor arguments, got {type(config).__name__}"
        )
    problem = _architecture_problem(config, _argument_names(cls), cls.__name__)
    if problem:
        raise ValueError(problem)
    return cls(**_normalise_config(config))


def _argument_names(cls) -> List[str]:
    return list(inspect.signature(cls.__init__).parameters)[1:]


def config_differences(model, config: Dict[str, Any]) -> List[str]:
    """Lists how a checkpoint's config differs from :obj:`model`'s (empty if it matches).

    :obj:`dropout` is ignored: it changes training, not the weights or the outputs.
    """
    theirs = _normalise_config(config)
    mine = model._config
    name = type(model).__name__
    problem = _architecture_problem(theirs, list(mine), name)
    if problem:
        return [problem]
    diffs = []
    for key, value in mine.items():
        if key in _TRAINING_ONLY:
            continue
        if key == "pixels":
            if theirs[key] != value:
                diffs.append(_region_difference(model, theirs))
        elif theirs[key] != value:
            diffs.append(f"checkpoint has {key} {theirs[key]!r} but model has {value!r}")
    return diffs


def _region_difference(model, theirs: Dict[str, Any]) -> str:
    a, b = theirs["pixels"], model._config["pixels"]
    text = (
        f"checkpoint was trained on {describe_region(a, theirs.get('nside'))} but model "
        f"has {describe_region(b, model.nside)}"
    )
    if a is not None and b is not None and len(a) == len(b):
        text += " (same size, other pixels)"
    return text


def load_checkpoint_state(
    model, state_dict: Dict[str, Tensor], config: Optional[Dict[str, Any]] = None
):
    """Loads trained weights into :obj:`model` after checking that they fit it.

    Raises a :class:`ValueError` that says what differs, e.g. ``checkpoint has channels
    (16, 32) but model has (16, 32, 64)``, another nside or region, or missing,
    unexpected or differently shaped tensors. A state dict saved from a
    :class:`~torch.nn.parallel.DistributedDataParallel` wrapper (keys prefixed with
    ``module.``) is accepted.

    Args:
        model (torch.nn.Module): A model of :mod:`pyg_sphere.nn.models`.
        state_dict (dict): The checkpoint's :meth:`state_dict`.
        config (dict, optional): The checkpoint's :attr:`config`; compared first, for the
            clearest message.

    Returns:
        The model itself.
    """
    name = type(model).__name__
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError(
                f"config must be the checkpoint's config dict, got {type(config).__name__}"
            )
        problem = _architecture_problem(config, list(model._config), name)
        if problem:
            raise ValueError(f"the checkpoint does not fit this {name}: {problem}")
        diffs = config_differences(model, config)
        if diffs:
            raise ValueError(
                f"the checkpoint does not fit this {name}: "
                + "; ".join(diffs)
                + f". Rebuild the model with {name}.from_config(checkpoint "
                f"config) to use it"
            )
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    own = model.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    shapes = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state_dict and tuple(state_dict[key].shape) != tuple(own[key].shape)
    ]
    problems = []
    for what, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("with other shapes (checkpoint vs model)", shapes),
    ):
        if items:
            problems.append(
                f"{len(items)} tensor(s) {what}: "
                + ", ".join(items[:4])
                + (", ..." if len(items) > 4 else "")
            )
    if problems:
        raise ValueError(
            f"the checkpoint's weights do not fit this {name} "
            f"({model._describe_architecture()}): "
            + "; ".join(problems)
            + ". Was it saved from another architecture or configuration?"
        )
    model.load_state_dict(state_dict)
    return model
