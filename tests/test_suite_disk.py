"""The suite's own use of the disk: a passed test's temp folder goes at its teardown (a full /tmp
failed CI's run at 22cf834), and a disk without the room stops the run with one line."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
import json, os

def test_passes(tmp_path):
    (tmp_path / "ckpt").write_bytes(b"x" * 1000)
    open(os.environ["RECORD"], "a").write(json.dumps(["passes", str(tmp_path)]) + "\\n")

def test_fails(tmp_path):
    open(os.environ["RECORD"], "a").write(json.dumps(["fails", str(tmp_path)]) + "\\n")
    assert False
'''


def run_pytest(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-c", str(ROOT / "pytest.ini"),
                           *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_a_passed_tests_temp_folder_is_removed_and_a_failed_ones_kept(tmp_path, monkeypatch):
    import json
    import os

    (tmp_path / "test_two.py").write_text(TESTS)
    record = tmp_path / "record.jsonl"
    proc = run_pytest(str(tmp_path / "test_two.py"), "--basetemp", str(tmp_path / "base"),
                      env={**os.environ, "RECORD": str(record)})
    assert proc.returncode == 1, proc.stdout
    folders = dict(json.loads(line) for line in record.read_text().splitlines())
    assert not Path(folders["passes"]).exists()
    assert Path(folders["fails"]).is_dir()


CHILD_TEMP = '''
import os, subprocess, sys

def test_a_child_leaves_a_temp_folder():
    made = "import tempfile; print(tempfile.mkdtemp(suffix='wandb-media'))"  # never removed, as by a killed process
    child = subprocess.run([sys.executable, "-c", made], capture_output=True, text=True, check=True)
    open(os.environ["RECORD"], "w").write(child.stdout.strip())
'''


def test_a_started_process_keeps_its_temp_files_in_the_runs_folder_which_goes_at_its_end(tmp_path):
    import os

    (tmp_path / "test_child.py").write_text(CHILD_TEMP)
    record, base = tmp_path / "record.txt", tmp_path / "base"
    proc = run_pytest(str(tmp_path / "test_child.py"), "-p", "tests.conftest", "--basetemp", str(base),
                      env={**os.environ, "RECORD": str(record)})
    assert proc.returncode == 0, proc.stdout
    left = Path(record.read_text())
    assert left.parent.parent == base and left.name.endswith("wandb-media")
    assert base.is_dir() and not left.parent.exists()


def test_a_disk_without_the_suites_room_stops_the_run_before_its_tests(tmp_path):
    import os

    free_gb = shutil.disk_usage(tmp_path).free / 2 ** 30
    base = tmp_path / "not yet"
    args = ["tests/test_ranges.py", "--basetemp", str(base)]
    proc = run_pytest(*args, env={**os.environ, "SOLO_NCP_SUITE_DISK_GB": str(free_gb + 1000)})
    assert proc.returncode == 2
    said = re.search(r"the test suite needs (\S+) GB free for its temp files in (.+), and that disk has (\S+) GB free: "
                     r"free space there", proc.stdout)
    assert said and float(said[1]) == pytest.approx(free_gb + 1000, abs=0.01) and said[2] == str(base)
    assert float(said[3]) == pytest.approx(free_gb, abs=1)  # the disk's other users may write meanwhile
    assert " passed" not in proc.stdout
    proc = run_pytest(*args, env={**os.environ, "SOLO_NCP_SUITE_DISK_GB": str(max(free_gb - 1, 0))})
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout
