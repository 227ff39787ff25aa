"""The command-line options with which ``make docs`` runs the examples for the gallery.

The scripts' defaults are sized for real runs; these keep the whole gallery within a few
minutes on a 2-core CPU. Each example's text names the options its page was run with.
sphinx-gallery calls :func:`reset_argv` (named in ``conf.py``) to fill ``sys.argv`` before
it runs a script, from the script's folder.
"""

import os
import shutil

# The gallery's data and training runs, away from the checkout's data/ and runs/.
WORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build", "gallery")

ARGS = {
    "classify_cosmologies.py": (
        "--nside 32 --order 1 --n-per-class 10 --epochs 5 --lr 2e-3 --batch-size 8 --quiet"
    ),
    "masked_region.py": "",
    "measure_equivariance.py": "--layer",
    "mix_gnn_layers.py": "--epochs 3",
    "tomographic_survey.py": "",  # about 15 s
    "train_deepsphere.py": "",  # its defaults take well under a minute
}


def reset_argv(gallery_conf, script_vars) -> list[str]:
    name = os.path.basename(script_vars["src_file"])
    argv = ARGS.get(name, "").split()
    if name == "classify_cosmologies.py":
        # A fresh run on every execution (a page built twice shows the same output); paths
        # relative to the script's folder, which is where sphinx-gallery runs it.
        work = os.path.join(WORK, "classify_cosmologies")
        shutil.rmtree(work, ignore_errors=True)
        rel = os.path.relpath(work, os.path.dirname(script_vars["src_file"]))
        argv += ["--data-dir", os.path.join(rel, "data"), "--out", os.path.join(rel, "run")]
    return argv
