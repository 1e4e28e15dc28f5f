"""What the console script imports: `--help`, `--version` and every command's `--help` import
neither torch nor solo-learn nor Lightning, and a command that does not train never imports the
host; `import solo_ncp` still registers ncp and deacl into solo-learn's METHODS, whether it comes
before or after solo-learn's own imports; reading the digits imports no scikit-learn.

Oracle: `sys.modules` of a fresh interpreter after the call (an import graph, not a time)."""
import json
import os
import subprocess
import sys

import pytest

from solo_ncp._host import current_host
from solo_ncp.cli import COMMANDS
from tests.conftest import ROOT

HEAVY = ("torch", "torchvision", "solo", "pytorch_lightning", "lightning")
"""Top-level packages whose import takes seconds (solo-learn imports Lightning and torch)."""
MODULES = 'sorted({name.split(".")[0] for name in sys.modules})'
"""The top-level packages imported so far, as a Python expression."""
RUN_MAIN = f"""
import json, sys
from solo_ncp.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({{"code": code, "modules": {MODULES}}}))
"""
READ_DIGITS = f"""
import json, sys
from solo_ncp.data import build_dataset
build_dataset("digits", "train")
print(json.dumps({{"modules": {MODULES}}}))
"""


def in_fresh_interpreter(code: str, *args: str, cwd=ROOT) -> dict:
    """The JSON object the last line `code` prints, run with `args` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def imported_by(argv, cwd=ROOT) -> dict:
    """`main(argv)` in a fresh interpreter: its exit code and the top-level packages imported."""
    return in_fresh_interpreter(RUN_MAIN, *argv, cwd=cwd)


@pytest.mark.parametrize("argv", [["--help"], ["--version"]] + [[name, "--help"] for name in COMMANDS],
                         ids=" ".join)
def test_help_and_version_import_no_framework(argv):
    ran = imported_by(argv)
    assert ran["code"] == 0
    assert not set(HEAVY) & set(ran["modules"])


def test_a_command_that_does_not_train_skips_the_host(tmp_path):
    """eval stops at its missing checkpoint (one error line) without importing solo-learn."""
    ran = imported_by(["eval", "--ckpt", str(tmp_path / "missing.ckpt"), "--dataset", "digits",
                       "--out", str(tmp_path / "eval")])
    assert ran["code"] == 2
    assert not {"solo", "pytorch_lightning", "lightning"} & set(ran["modules"])


def test_the_digits_data_imports_no_scikit_learn():
    """scikit-learn's import (about 2 s) would be paid by every process of a digits run."""
    modules = in_fresh_interpreter(READ_DIGITS)["modules"]
    assert "torchvision" in modules and "sklearn" not in modules


@pytest.mark.parametrize("imports", [
    "import solo_ncp\nimport solo.args\nfrom solo.methods import METHODS",
    "from solo.methods import METHODS\nimport solo_ncp",
], ids=["solo_ncp first", "solo-learn first"])
def test_import_solo_ncp_registers_its_methods(imports):
    """The one line an existing solo-learn user adds, wherever it stands among the imports."""
    code = f"{imports}\nprint(METHODS['ncp'].__module__, METHODS['deacl'].__name__)"
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    adapter = "solo_ncp.methods.ncp_main" if current_host().is_main else "solo_ncp.methods.ncp"
    assert proc.stdout.split() == [adapter, "DeACL"]
