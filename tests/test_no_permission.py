"""A file the user may not read is said as such, whichever reader meets it: `error: permission
denied to open <file>: ...`. Before, a checkpoint, k.json or poc.json without read permission was
"not a PyTorch checkpoint, or a truncated or corrupt one" or "not a k.json of select-k", whose fix
(copy it or write it again) does not apply, and a metrics.json a bare `[Errno 13]` line.

The commands run in a process of their own without the root's right to read any file
(`setpriv`, where the suite runs as root), on files made unreadable with chmod 000."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import host_independent
from tests.test_report_consistency import write_k, write_metrics, write_poc

AS_ROOT = os.geteuid() == 0
WITHOUT_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if AS_ROOT else []


def run_without_read_access(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*WITHOUT_OVERRIDE, sys.executable, "-m", "solo_ncp.cli", *argv], capture_output=True,
                          text=True, timeout=300)


def unreadable_checkpoint(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"PK\x03\x04 weights")
    return path, ["eval", "--ckpt", str(path), "--dataset", "digits", "--out", str(tmp_path / "eval")]


def unreadable_result(name: str, write):
    def make(tmp_path: Path):
        folder = write(tmp_path / "result")
        return folder / name, ["report", str(folder)]
    return make


def unreadable_log(tmp_path: Path):
    log = tmp_path / "run" / "logs" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,train_loss_epoch\n0,3,2.5\n")
    return log, ["plot", str(tmp_path / "run")]


@host_independent
@pytest.mark.skipif(AS_ROOT and shutil.which("setpriv") is None, reason="as root, needs setpriv to drop its read right")
@pytest.mark.parametrize("make", [
    unreadable_checkpoint,
    unreadable_result("k.json", lambda folder: write_k(folder, 0, 10)),
    unreadable_result("metrics.json", lambda folder: write_metrics(folder, 0, "ncp-s0")),
    unreadable_result("poc.json", lambda folder: write_poc(folder, 0)),
    unreadable_log,
], ids=["checkpoint (eval)", "k.json (report)", "metrics.json (report)", "poc.json (report)", "metrics.csv (plot)"])
def test_a_file_without_read_permission_is_said_so_not_damaged(make, tmp_path):
    path, argv = make(tmp_path)
    path.chmod(0)
    try:
        proc = run_without_read_access(*argv)
    finally:
        path.chmod(0o644)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: permission denied to open {path}: give your user access to it (chmod, chown), or use a copy or a "
        f"folder of your own (solo-ncp {argv[0]})")
