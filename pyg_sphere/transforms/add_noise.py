"""Additive Gaussian noise at a level relative to the maps' standard deviation."""

from __future__ import annotations

from typing import Optional

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

    - ``seed=None`` (training): fresh noise at every access, drawn from torch's global RNG, so
      ``torch.manual_seed`` makes runs reproducible and each ``DataLoader`` worker draws its own.
    - ``seed=int`` (evaluation): the noise of a sample depends only on ``(seed, map_id,
      patch_id)``, so every access, every run and every transform instance with that seed see
      the same noisy sample.

    Args:
        level (float): Noise level relative to ``std`` (``0`` leaves the data unchanged).
        std (float): Standard deviation of the noiseless maps. (default: 1.0)
        seed (int, optional): Seed of fixed per-sample noise; ``None`` for fresh noise.

    Shapes:
        - **input:** x [N, F] (``map_id`` and ``patch_id`` needed when ``seed`` is set)
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
    """

    def __init__(self, level: float, std: float = 1.0, *, seed: Optional[int] = None) -> None:
        if not float(level) >= 0:
            raise ValueError(f"level must be a non-negative number, got {level!r}")
        try:
            self.std = check_positive("std", std)
        except ValueError as e:
            raise ValueError(
                f"{e}; use the noiseless maps' standard deviation, e.g. ConvergenceMaps.map_std"
            ) from None
        self.level = float(level)
        self.seed = None if seed is None else check_int("seed", seed, 0)

    @property
    def sigma(self) -> float:
        """Absolute standard deviation of the added noise, ``level * std``."""
        return self.level * self.std

    def forward(self, data: Data) -> Data:
        x = data.x
        if self.sigma == 0:
            return data
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
        data.x = noise.mul_(self.sigma).add_(x)  # in place on the fresh noise: one allocation
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(level={self.level}, std={self.std:g}, seed={self.seed})"
