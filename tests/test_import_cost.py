"""``import pyg_sphere`` and ``import pyg_sphere.nn`` stay light: the optional dependencies
(scikit-learn, matplotlib, the training engine, pyccl) load only where they are used, and the
subpackages load on first access. The import time itself is measured by
benchmarks/bench_import.py, not here."""

import json
import subprocess
import sys

import pytest

import pyg_sphere

OPTIONAL = ("sklearn", "matplotlib", "lightning", "pytorch_lightning", "torchmetrics", "pyccl")

LOADED = """
import json, sys
{imports}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {names!r})))
"""


def loaded_after(imports: str, names) -> list:
    """The modules among :obj:`names` (top-level names) loaded by :obj:`imports` in a fresh
    process."""
    proc = subprocess.run(
        [sys.executable, "-c", LOADED.format(imports=imports, names=tuple(names))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "imports",
    ["import pyg_sphere, pyg_sphere.nn", "import pyg_sphere.baselines, pyg_sphere.inference"],
)
def test_imports_leave_optional_dependencies_out(imports):
    loaded = sorted({m.split(".")[0] for m in loaded_after(imports, OPTIONAL)})
    assert not loaded, f"{imports} loads {loaded} (python -X importtime says through what)"


def test_import_pyg_sphere_loads_no_subpackage():
    loaded = loaded_after("import pyg_sphere", ["pyg_sphere"])
    assert loaded == ["pyg_sphere"], f"import pyg_sphere loads {loaded[1:]}"


@pytest.mark.parametrize("name", pyg_sphere.__all__)
def test_public_names_load_on_access(name):
    assert getattr(pyg_sphere, name) is not None
    assert name in dir(pyg_sphere)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        pyg_sphere.no_such_name  # noqa: B018
