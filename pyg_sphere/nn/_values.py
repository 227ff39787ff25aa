"""The check that features hold no UNSEEN or non-finite values, shared by the layers and the
models."""

import torch
from torch import Tensor

# healpy.UNSEEN is -1.6375e30; no physical map value comes near -1e30.
UNSEEN_BELOW = -1e30


def check_map_values(x: Tensor, hint: str) -> None:
    """Raises if :obj:`x` holds UNSEEN (:data:`healpy.UNSEEN`), NaN or infinite values, with
    their counts and :obj:`hint` (the fix). One pass over :obj:`x` when it is clean."""
    if x.numel() == 0:
        return
    low, high = torch.aminmax(x.detach())
    # NaN fails both comparisons; UNSEEN and -inf fail the first, +inf the second.
    if bool((low > UNSEEN_BELOW) & (high < float("inf"))):
        return
    unseen = int((x <= UNSEEN_BELOW).sum())
    non_finite = int((~torch.isfinite(x)).sum())
    raise ValueError(
        f"x holds {unseen} UNSEEN (healpy.UNSEEN, -1.6375e30) and {non_finite} NaN or infinite "
        f"values (x of shape {tuple(x.shape)}): set unobserved pixels to a value (e.g. 0 after "
        f"removing the mean, as ConvergenceMaps does) and flag them in a second input channel, "
        f"or restrict the region to observed pixels{hint}"
    )


INPUT_CHECKS = ("train", "always", "never")


def check_input(module: torch.nn.Module, x: Tensor, hint: str, force: bool = False) -> None:
    """:func:`check_map_values` as :obj:`module.input_check` asks: ``"train"`` (in training
    mode only, where one bad value would corrupt batch-norm statistics and weights for good),
    ``"always"`` or ``"never"``; :obj:`force` checks whatever it says."""
    mode = module.input_check
    if mode not in INPUT_CHECKS:
        raise ValueError(f"input_check must be 'train', 'always' or 'never', got {mode!r}")
    if not force and (mode == "never" or (mode == "train" and not module.training)):
        return
    check_map_values(x, hint)
