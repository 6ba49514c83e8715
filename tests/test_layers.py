"""The layering (README, "Architecture") holds, and the check that enforces it can fail.

`lint-imports` (import-linter) reads the contracts from pyproject.toml: the service imports the
contract only, the contract nothing of the project and no torch, the library no commands,
nothing the tests' helpers, and no package has import circles.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = ("contract", "model", "training", "service", "cosrec")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # this tree's packages, not the installed ones
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_layers_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layer_check_fails_on_each_kind_of_violation(tmp_path):
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    planted = {
        "service/ranking.py": "import training.fit",  # the service reaching into training
        "contract/ids.py": "import torch",  # torch in the contract (and so in `cosrec serve`)
        "training/split.py": "import cosrec.commands.common",  # the library using a command
        "model/output.py": "import training.fit",  # the networks depending on training
        "cosrec/processes.py": "import conftest",  # a test helper in the product
        "training/instances.py": "import training.fit",  # a circle: fit imports instances
    }
    for path, line in planted.items():
        with (tmp_path / path).open("a") as module:
            module.write(f"\n{line}\n")

    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = {
        line.rsplit(" ", 1)[0] for line in result.stdout.splitlines() if line.endswith("BROKEN")
    }
    assert broken == {
        "contract: torch-free, imports no other part of the project",
        "cosrec serve and the process helpers run without torch, model or training",
        "service: imports the contract only (no torch, model, training or commands)",
        "model: pure PyTorch, imports nothing else of the project",
        "training: a library (no commands) that never reaches into the service",
        "no package imports the tests' or benchmarks' helpers",
        "no import circles inside a package",
    }
