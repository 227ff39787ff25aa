"""The library core stands on its own: it never imports the applications of
``pyg_sphere.apps`` nor their training engine (Lightning, torchmetrics), and command-line
parsing lives only there."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pyg_sphere

PACKAGE = Path(pyg_sphere.__file__).resolve().parent

# Imports every module of the package but pyg_sphere.apps, then lists what got imported.
IMPORT_CORE = """
import importlib, json, pkgutil, sys
import pyg_sphere

def walk(package):
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):
        if info.name == 'pyg_sphere.apps':
            continue
        module = importlib.import_module(info.name)
        yield info.name
        if info.ispkg:
            yield from walk(module)

core = list(walk(pyg_sphere))
loaded = sorted(m for m in sys.modules if m.startswith('pyg_sphere'))
engines = sorted(m for m in ('lightning', 'pytorch_lightning', 'torchmetrics') if m in sys.modules)
print(json.dumps({'core': core, 'loaded': loaded, 'engines': engines}))
"""


def test_core_does_not_import_apps():
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_CORE], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pyg_sphere.nn.models" in result["core"] and len(result["core"]) > 10
    apps = [
        m for m in result["loaded"] if m == "pyg_sphere.apps" or m.startswith("pyg_sphere.apps.")
    ]
    assert not apps, f"the core imports {apps}"
    # The training engine (the [train] extra) is the applications' business only.
    assert not result["engines"], f"the core imports {result['engines']}"


def imports_argparse(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
    return False


def test_command_lines_live_in_apps():
    parsers = {
        p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if imports_argparse(p)
    }
    assert {"apps/simulate.py", "apps/train_cosmo.py"} <= parsers
    outside = sorted(p for p in parsers if not p.startswith("apps/"))
    assert not outside, f"modules outside pyg_sphere/apps/ parse command lines: {outside}"
