"""The package has one version number: pyproject.toml reads it from pyg_sphere.__version__."""

import importlib.metadata

import pyg_sphere


def test_installed_metadata_has_the_package_version():
    assert importlib.metadata.version("pyg_sphere") == pyg_sphere.__version__
