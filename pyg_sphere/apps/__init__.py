"""Command-line programs and trainers built on the library.

:mod:`~pyg_sphere.apps.simulate` (``pyg-sphere-simulate``) writes a collection of simulated
convergence maps, :mod:`~pyg_sphere.apps.train_cosmo` (``pyg-sphere-train-cosmo``) trains
DeepSphere to classify them and :mod:`~pyg_sphere.apps.demo` (``make demo``) runs a small
training end to end. These modules use only the public API of the library; the library itself
never imports from here, so ``import pyg_sphere`` loads none of them.
"""
