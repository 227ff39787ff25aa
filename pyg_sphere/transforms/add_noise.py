"""Additive Gaussian noise at a level relative to the maps' standard deviation."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .._validate import check_int, check_positive


class AddGaussianNoise(BaseTransform):
    r"""Adds white Gaussian noise of standard deviation ``level * std`` to ``data.x``.

    DeepSphere (Perraudin et al. 2019) measured classification accuracy against a *relative*
    noise level: :math:`\sigma_\mathrm{noise} = \mathrm{level} \times \mathrm{std}`, with ``std``
    the standard deviation of the noiseless maps (:attr:`ConvergenceMaps.map_std
    <pyg_sphere.datasets.ConvergenceMaps.map_std>`) and levels 0, 0.5, 1, 1.5, 2, 3.5.

    Maps of several channels (e.g. tomographic bins) take a ``std`` per channel, such as
    :attr:`ConvergenceMaps.channel_std <pyg_sphere.datasets.ConvergenceMaps.channel_std>`: the
    noise of channel ``c`` has standard deviation ``level * std[c]``, and a channel of ``std``
    0 (the observed flags of ``observed_channel=True``) is left unchanged.

    - ``seed=None`` (training): fresh noise at every access, drawn from torch's global RNG, so
      ``torch.manual_seed`` makes runs reproducible and each ``DataLoader`` worker draws its own.
    - ``seed=int`` (evaluation): the noise of a sample depends only on ``(seed, map_id,
      patch_id)``, so every access, every run and every transform instance with that seed see
      the same noisy sample.

    Args:
        level (float): Noise level relative to ``std`` (``0`` leaves the data unchanged).
        std (float or sequence of float): Standard deviation of the noiseless maps, or one
            per channel of ``x`` (0 leaves a channel without noise). (default: 1.0)
        seed (int, optional): Seed of fixed per-sample noise; ``None`` for fresh noise.

    Shapes:
        - **input:** x [N, F] (``map_id`` and ``patch_id`` needed when ``seed`` is set; F
          entries in ``std`` when it is a sequence)
        - **output:** x [N, F], same dtype and device

    Example::

        >>> import torch
        >>> from torch_geometric.data import Data
        >>> data = Data(x=torch.zeros(1000, 1), map_id=torch.tensor([3]),
        ...             patch_id=torch.tensor([5]))
        >>> noisy = AddGaussianNoise(level=2.0, std=0.5, seed=0)(data)
        >>> round(noisy.x.std().item(), 1)
        1.0
        >>> torch.equal(noisy.x, AddGaussianNoise(2.0, 0.5, seed=0)(data).x)
        True
        >>> bool(data.x.abs().max() == 0)  # the input is left untouched
        True
        >>> two = Data(x=torch.zeros(1000, 2), map_id=torch.tensor([3]), patch_id=torch.tensor([5]))
        >>> AddGaussianNoise(1.0, std=[0.5, 0.0], seed=0)(two).x.std(0).round(decimals=1)
        tensor([0.5000, 0.0000])
    """

    def __init__(
        self,
        level: float,
        std: Union[float, Sequence[float]] = 1.0,
        *,
        seed: Optional[int] = None,
    ) -> None:
        if not float(level) >= 0:
            raise ValueError(f"level must be a non-negative number, got {level!r}")
        self.std = _check_std(std)
        self.level = float(level)
        self.seed = None if seed is None else check_int("seed", seed, 0)

    @property
    def sigma(self) -> Union[float, tuple]:
        """Absolute standard deviation of the added noise, ``level * std`` (per channel when
        ``std`` is a sequence)."""
        if isinstance(self.std, tuple):
            return tuple(self.level * s for s in self.std)
        return self.level * self.std

    def forward(self, data: Data) -> Data:
        x = data.x
        sigma = self.sigma
        if isinstance(sigma, tuple):
            if x.dim() == 0 or x.shape[-1] != len(sigma):
                raise ValueError(
                    f"std has {len(sigma)} entries, one per channel, but x has shape "
                    f"{list(x.shape)} ({x.shape[-1] if x.dim() else 0} channels): pass one std "
                    "per channel, e.g. ConvergenceMaps.channel_std"
                )
            if not any(sigma):
                return data
            scale = torch.tensor(sigma, dtype=x.dtype, device=x.device)
        elif sigma == 0:
            return data
        else:
            scale = sigma
        if self.seed is None:
            noise = torch.randn(x.shape, dtype=x.dtype, device=x.device)
        else:
            ids = []
            for key in ("map_id", "patch_id"):
                value = getattr(data, key, None)
                if value is None or torch.as_tensor(value).numel() != 1:
                    raise ValueError(
                        f"seeded noise needs a single data.{key} to tell samples apart (items of "
                        "ConvergenceMaps carry map_id and patch_id); apply the transform per item, "
                        "or use seed=None for fresh noise"
                    )
                ids.append(int(value))
            rng = np.random.default_rng([self.seed, *ids])
            dtype = np.float64 if x.dtype == torch.float64 else np.float32
            noise = torch.from_numpy(rng.standard_normal(tuple(x.shape), dtype=dtype))
            noise = noise.to(device=x.device, dtype=x.dtype)
        data.x = noise.mul_(scale).add_(x)  # in place on the fresh noise: one allocation
        return data

    def __repr__(self) -> str:
        if isinstance(self.std, tuple):
            std = "(" + ", ".join(f"{s:g}" for s in self.std) + ")"
        else:
            std = f"{self.std:g}"
        return f"{self.__class__.__name__}(level={self.level}, std={std}, seed={self.seed})"


def _check_std(std) -> Union[float, tuple]:
    """``std`` as a positive float, or as a tuple of non-negative floats (one per channel)."""
    hint = "use the noiseless maps' standard deviation, e.g. ConvergenceMaps.map_std"
    if not isinstance(std, str) and np.ndim(std) >= 1:  # a list, tuple, array or tensor
        values = [float(s) if np.ndim(s) == 0 and hasattr(s, "__float__") else s for s in std]
        if not values:
            raise ValueError(f"std must name one value per channel, got an empty {std!r}")
        try:
            return tuple(check_positive("std", s, allow_zero=True) for s in values)
        except ValueError:
            raise ValueError(
                f"std must hold non-negative finite numbers, one per channel, got {std!r}; "
                "use the noiseless maps' standard deviation of every channel, e.g. "
                "ConvergenceMaps.channel_std"
            ) from None
    try:
        return check_positive("std", std)
    except ValueError as e:
        raise ValueError(f"{e}; {hint}") from None
