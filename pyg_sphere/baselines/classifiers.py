"""Linear-SVM baselines of DeepSphere: power spectrum or histogram features.

Both classifiers standardise their features with the training mean and
standard deviation, train a linear SVM (:class:`sklearn.svm.LinearSVC`) for
each regularisation constant ``C`` of a log grid, and keep the one with the
best accuracy on the validation data, as in Perraudin et al. (2019).
Samples of several channels (``[num_samples, num_pixels, num_channels]``, e.g.
one tomographic bin per channel) get the features of each channel,
concatenated. scikit-learn is an optional dependency: ``pip install pyg_sphere[baselines]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable, Sequence

import numpy as np

from .._validate import check_int, check_nside
from .features import as_channels, check_patch_pixels, histogram, histogram_edges, power_spectrum

__all__ = ["PSDClassifier", "HistogramClassifier"]

#: Default grid of SVM regularisation constants.
DEFAULT_CS = tuple(10.0 ** np.arange(-3, 3))


def _linear_svc():
    try:
        from sklearn.svm import LinearSVC
    except ImportError as err:
        raise ImportError(
            "The SVM baselines need scikit-learn: pip install pyg_sphere[baselines]"
        ) from err
    return LinearSVC


def _as_labels(y, num_samples: int, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != num_samples:
        raise ValueError(
            f"`{name}` must hold one label per sample ({num_samples}), got shape {y.shape}."
        )
    return y


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _check_channels(channels) -> tuple[int, ...] | None:
    """``channels`` as a tuple of distinct channel indices (``None``: every channel)."""
    if channels is None:
        return None
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
        channels = (channels,)
    channels = tuple(check_int("channels", c, 0) for c in channels)
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(
            f"`channels` must list distinct channel indices (0 = the first channel of x), "
            f"got {channels}."
        )
    return channels


class _SVMBaseline(ABC):
    """Shared logic: features of each channel -> standardisation -> linear SVM, C on
    validation."""

    def __init__(self, Cs: Sequence[float], max_iter: int, channels):
        Cs = np.sort(np.asarray(Cs, dtype=np.float64).ravel())
        if len(Cs) == 0 or (Cs <= 0).any():
            raise ValueError(f"`Cs` must be a non-empty list of positive numbers, got {Cs}.")
        _linear_svc()  # fail at construction, not after computing features
        self.Cs = Cs
        self.max_iter = max_iter
        self.channels = _check_channels(channels)
        self.best_C: float | None = None
        self.val_accuracies: np.ndarray | None = None
        self.num_pixels: int | None = None
        self.num_channels: int | None = None  # of the training input, before `channels`
        self.mean: np.ndarray | None = None  # training feature statistics
        self.scale: np.ndarray | None = None
        self.svm = None

    def _fit_features(self, x: list[np.ndarray]) -> None:  # noqa: B027 (an optional hook)
        """Learns feature parameters from the training samples (one ``[num_samples,
        num_pixels]`` array per channel used); none by default."""

    @abstractmethod
    def _channel_features(self, x: np.ndarray, i: int) -> np.ndarray:
        """Raw features ``[num_samples, num_features]`` of the ``i``-th channel used,
        ``[num_samples, num_pixels]``."""

    def _features(self, x: list[np.ndarray]) -> np.ndarray:
        """Raw features of every channel used, concatenated channel by channel."""
        return np.concatenate([self._channel_features(xc, i) for i, xc in enumerate(x)], axis=1)

    def _input_channel(self, i: int) -> int:
        """Index in the input of the ``i``-th channel used."""
        return i if self.channels is None else self.channels[i]

    def _samples(self, x, name: str) -> list[np.ndarray]:
        """The checked channels of ``x`` that the features use, ``[num_samples, num_pixels]``
        each."""
        return self._select(as_channels(x, name), name)

    def _select(self, x: list[np.ndarray], name: str) -> list[np.ndarray]:
        """The channels of ``x`` (from :func:`as_channels`) that the features use, after
        checking them against the training data."""
        if self.num_channels is not None and len(x) != self.num_channels:
            raise ValueError(
                f"`{name}` has {_plural(len(x), 'channel')} per pixel but the classifier was "
                f"fitted on {_plural(self.num_channels, 'channel')}: give the channels of the "
                "training data, in the same order."
            )
        if self.num_pixels is not None and x[0].shape[1] != self.num_pixels:
            raise ValueError(
                f"`{name}` has {x[0].shape[1]} pixels per sample but the classifier "
                f"was fitted on {self.num_pixels}."
            )
        if self.channels is not None:
            if max(self.channels) >= len(x):
                raise ValueError(
                    f"`channels={self.channels}` selects channel {max(self.channels)} but "
                    f"`{name}` has {_plural(len(x), 'channel')} per pixel (channels are the "
                    "last axis of [num_samples, num_pixels, num_channels])."
                )
            x = [x[c] for c in self.channels]
        return x

    def _standardised(self, x: list[np.ndarray]) -> np.ndarray:
        return (self._features(x) - self.mean) / self.scale

    def transform(self, x) -> np.ndarray:
        """Standardised features ``[num_samples, num_features]`` of samples ``x``."""
        self._check_fitted()
        return self._standardised(self._samples(x, "x"))

    def fit(self, x_train, y_train, x_val=None, y_val=None):
        """Fit one SVM per ``C`` on the training data; keep the best on validation.

        Ties keep the smallest ``C`` (the strongest regularisation). Without
        validation data, ``Cs`` must hold a single value.

        Args:
            x_train: ``[num_samples, num_pixels]`` or ``[num_samples, num_pixels,
                num_channels]`` patch values.
            y_train: ``[num_samples]`` class labels.
            x_val: validation patches, the same number of pixels and channels.
            y_val: validation labels.

        Returns:
            ``self``.
        """
        LinearSVC = _linear_svc()
        self.num_pixels = self.num_channels = None
        x_train = as_channels(x_train, "x_train")
        self.num_channels = len(x_train)
        x_train = self._select(x_train, "x_train")
        y_train = _as_labels(y_train, len(x_train[0]), "y_train")
        if len(np.unique(y_train)) < 2:
            raise ValueError("`y_train` must contain at least two classes.")
        if (x_val is None) != (y_val is None):
            raise ValueError("Give both `x_val` and `y_val`, or neither.")
        if x_val is None and len(self.Cs) > 1:
            raise ValueError(
                f"Choosing C among {len(self.Cs)} values needs validation data: "
                "pass x_val and y_val, or a single value in `Cs`."
            )
        self.num_pixels = x_train[0].shape[1]
        if x_val is not None:
            x_val = self._samples(x_val, "x_val")
            y_val = _as_labels(y_val, len(x_val[0]), "y_val")

        self._fit_features(x_train)
        features = self._features(x_train)
        self.mean = features.mean(axis=0)
        std = features.std(axis=0)
        # Constant features (e.g. ell = 0, weighted by 0) carry nothing: keep them at 0.
        self.scale = np.where(std > 0, std, 1.0)
        features = (features - self.mean) / self.scale
        val_features = None if x_val is None else self._standardised(x_val)

        best, accuracies = None, []
        for C in self.Cs:
            svm = LinearSVC(C=C, max_iter=self.max_iter, random_state=0)
            svm.fit(features, y_train)
            if val_features is None:
                best = svm
                break
            accuracies.append(svm.score(val_features, y_val))
            if accuracies[-1] > max(accuracies[:-1], default=-1.0):
                best = svm
        self.svm = best
        self.best_C = float(best.C)
        self.val_accuracies = np.asarray(accuracies) if accuracies else None
        return self

    def _check_fitted(self):
        if self.svm is None:
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet: call fit() first.")

    def predict(self, x) -> np.ndarray:
        """Predicted labels ``[num_samples]`` of patches ``x``."""
        features = self.transform(x)
        return self.svm.predict(features)

    def score(self, x, y) -> float:
        """Accuracy on patches ``x`` with labels ``y``."""
        prediction = self.predict(x)
        return float(np.mean(prediction == _as_labels(y, len(prediction), "y")))

    def _repr_args(self) -> str:
        return ""

    def __repr__(self) -> str:
        channels = "" if self.channels is None else f", channels={self.channels}"
        fitted = f", best_C={self.best_C:g}" if self.best_C is not None else ""
        return f"{type(self).__name__}({self._repr_args()}{channels}{fitted})"


class PSDClassifier(_SVMBaseline):
    r"""Linear SVM on the power spectra of patches (DeepSphere's PSD baseline).

    Features: :func:`~pyg_sphere.baselines.power_spectrum`, i.e.
    :math:`\ell(\ell+1)\,C_\ell` of each patch by :func:`healpy.anafast`
    (optionally averaged in :math:`\ell` bins), standardised with the
    training statistics. Note that per-feature standardisation cancels the
    :math:`\ell(\ell+1)` weight except inside bins. ``C`` is chosen on the
    validation data.

    Patches of several channels (e.g. one tomographic bin per channel, as
    :class:`~pyg_sphere.datasets.ConvergenceMaps` serves them with
    ``field=(0, 1, ...)``) get the spectrum of each channel, concatenated
    channel by channel: ``C * (lmax + 1)`` (or ``C * num_bins``) features. The
    cross-spectra between channels are not used. Every channel is a map to the
    classifier: leave an observed-pixel flag channel
    (``observed_channel=True``, the last one) out with ``channels``.

    Args:
        nside: HEALPix resolution of the patches.
        pixels: nested pixel ids of the patch values (1-D). ``None`` places
            each patch on the first ``num_pixels`` nested pixels (patch 0),
            as DeepSphere did.
        lmax: largest multipole (default ``3 * nside - 1``).
        bins: ``None``, a number of equal-width :math:`\ell` bins or bin edges.
        Cs: grid of SVM regularisation constants tried (kept sorted ascending).
        max_iter: iterations limit of :class:`sklearn.svm.LinearSVC`.
        iter: Jacobi iterations of :func:`healpy.anafast`.
        channels: indices of the channels of ``x`` (its last axis) to use, in
            this order, e.g. ``range(C - 1)`` to leave out an observed-pixel
            flag channel. ``None``: every channel.

    Shapes:
        - **input:** patch values ``[num_samples, num_pixels]`` or
          ``[num_samples, num_pixels, num_channels]`` in nested order (numpy or
          torch), labels ``[num_samples]``; the same number of channels in
          :meth:`fit` and :meth:`predict`
        - **output:** labels ``[num_samples]`` (:meth:`predict`)

    Attributes:
        best_C (float): the chosen ``C``.
        val_accuracies (numpy.ndarray): validation accuracy for each of ``Cs``
            (``None`` when fitted without validation data).
        num_channels (int): channels of the training input (before
            ``channels`` selects some).
        svm: the fitted :class:`sklearn.svm.LinearSVC`.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> white = rng.standard_normal((100, 64))  # order-1 patches at nside 8
        >>> # Red noise: white noise averaged over the 4 children of each nside-4 pixel.
        >>> red = rng.standard_normal((100, 16)).repeat(4, axis=1)
        >>> x, y = np.concatenate([white, red]), np.repeat([0, 1], 100)
        >>> clf = PSDClassifier(nside=8, bins=6)
        >>> clf.fit(x[::2], y[::2], x[1::4], y[1::4]).score(x[3::4], y[3::4]) > 0.9
        True
        >>> # Two channels, [num_samples, num_pixels, 2]: 6 spectrum bins of each.
        >>> x2 = np.stack([x, rng.standard_normal(x.shape)], axis=-1)
        >>> clf.fit(x2[::2], y[::2], x2[1::4], y[1::4]).transform(x2[3::4]).shape
        (50, 12)
    """

    def __init__(
        self,
        nside: int,
        pixels=None,
        *,
        lmax: int | None = None,
        bins: int | Sequence[int] | None = None,
        Cs: Sequence[float] = DEFAULT_CS,
        max_iter: int = 10_000,
        iter: int = 0,
        channels: int | Sequence[int] | None = None,
    ):
        nside = check_nside(nside)
        if pixels is not None:  # validate now; the length fixes num_pixels
            pixels = check_patch_pixels(nside, pixels, len(pixels))
        super().__init__(Cs, max_iter, channels)
        self.nside = nside
        self.pixels = pixels
        self.lmax = 3 * nside - 1 if lmax is None else check_int("lmax", lmax, 0)
        self.bins = bins
        self.iter = iter

    def _channel_features(self, x: np.ndarray, i: int) -> np.ndarray:
        return power_spectrum(
            x, self.nside, self.pixels, lmax=self.lmax, bins=self.bins, iter=self.iter
        )

    def _repr_args(self) -> str:
        where = "patch 0" if self.pixels is None else f"{len(self.pixels)} pixels"
        return f"nside={self.nside}, {where}, lmax={self.lmax}, bins={self.bins}"


class HistogramClassifier(_SVMBaseline):
    """Linear SVM on histograms of pixel values (DeepSphere's histogram baseline).

    Features: the fraction of the pixels of a patch in each of ``bins``
    equal-width bins (:func:`~pyg_sphere.baselines.histogram`), whose range is
    fixed from percentiles of the training pixel values
    (:func:`~pyg_sphere.baselines.histogram_edges`), standardised with the
    training statistics. ``C`` is chosen on the validation data.

    Patches of several channels (e.g. one tomographic bin per channel) get the
    histogram of each channel, with edges fitted on that channel's training
    values, concatenated channel by channel: ``C * bins`` features. Every
    channel is a map to the classifier: leave an observed-pixel flag channel
    (``observed_channel=True``, the last one) out with ``channels`` (its 0/1
    values are usually constant between the percentiles, which cannot be
    binned).

    Args:
        bins: number of histogram bins (the paper: 100).
        percentiles: percentiles of the training values bounding the bins;
            values beyond fall in the end bins.
        Cs: grid of SVM regularisation constants tried (kept sorted ascending).
        max_iter: iterations limit of :class:`sklearn.svm.LinearSVC`.
        channels: indices of the channels of ``x`` (its last axis) to use, in
            this order, e.g. ``range(C - 1)`` to leave out an observed-pixel
            flag channel. ``None``: every channel.

    Shapes:
        - **input:** patch values ``[num_samples, num_pixels]`` or
          ``[num_samples, num_pixels, num_channels]`` (numpy or torch), labels
          ``[num_samples]``; the same number of channels in :meth:`fit` and
          :meth:`predict`
        - **output:** labels ``[num_samples]`` (:meth:`predict`)

    Attributes:
        edges (numpy.ndarray): the bin edges fitted on training data,
            ``[bins + 1]`` for one channel used, ``[num_channels_used, bins + 1]``
            (a row per channel) for several.
        best_C (float): the chosen ``C``.
        val_accuracies (numpy.ndarray): validation accuracy for each of ``Cs``
            (``None`` when fitted without validation data).
        num_channels (int): channels of the training input (before
            ``channels`` selects some).
        svm: the fitted :class:`sklearn.svm.LinearSVC`.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((200, 256)) * np.repeat([1.0, 1.2], 100)[:, None]
        >>> y = np.repeat([0, 1], 100)
        >>> clf = HistogramClassifier(bins=20)
        >>> clf.fit(x[::2], y[::2], x[1::4], y[1::4]).score(x[3::4], y[3::4]) > 0.9
        True
        >>> # A map and an observed-pixel flag channel: the flag is left out.
        >>> flagged = np.stack([x, np.ones_like(x)], axis=-1)
        >>> clf = HistogramClassifier(bins=20, channels=[0])
        >>> clf.fit(flagged[::2], y[::2], flagged[1::4], y[1::4]).edges.shape
        (21,)
    """

    def __init__(
        self,
        bins: int = 100,
        *,
        percentiles: tuple[float, float] = (0.1, 99.9),
        Cs: Sequence[float] = DEFAULT_CS,
        max_iter: int = 10_000,
        channels: int | Sequence[int] | None = None,
    ):
        bins = check_int("bins", bins, 1)
        super().__init__(Cs, max_iter, channels)
        self.bins = bins
        self.percentiles = percentiles
        self.edges: np.ndarray | None = None

    def _fit_features(self, x: list[np.ndarray]) -> None:
        if self.num_channels == 1:
            self.edges = histogram_edges(x[0], self.bins, self.percentiles)
            return
        edges = []
        for i, xc in enumerate(x):
            try:
                edges.append(histogram_edges(xc, self.bins, self.percentiles))
            except ValueError as err:  # name the channel
                c = self._input_channel(i)
                raise ValueError(
                    f"Channel {c} of `x_train` (x_train[:, :, {c}]): {err} If it is an "
                    "observed-pixel flag, leave it out with `channels`."
                ) from err
        self.edges = edges[0] if len(edges) == 1 else np.stack(edges)

    def _channel_features(self, x: np.ndarray, i: int) -> np.ndarray:
        return histogram(x, self.edges if self.edges.ndim == 1 else self.edges[i])

    def _repr_args(self) -> str:
        return f"bins={self.bins}, percentiles={self.percentiles}"
