"""A real install: the wheel `pip wheel .` builds carries every module and bundled config, and the
`solo-ncp` it installs runs stage 1 from a bundled config outside the checkout; `--config` takes
a bundled name `<dataset>/<name>` (in a checkout: the file under <repo>/zoo_configs); `--version`
prints the version and the host, or the host's error.

Oracles: the checkout's own files (glob of solo_ncp/ and zoo_configs/), the installed
distributions' metadata, and the wheel's file name (the version setup.py gave it)."""
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from solo_ncp import _host, zoo
from solo_ncp._host import HostError
from solo_ncp.cli import main
from solo_ncp.commands import pretrain
from solo_ncp.config import load_config
from solo_ncp.models.checkpoint import META_KEY, read_checkpoint
from solo_ncp.zoo import config_path, zoo_dir
from tests.conftest import DIGITS_SIMCLR, ROOT

SOURCES = ("setup.py", "solo_ncp", "zoo_configs")
"""What the wheel is built from, copied out of the checkout with the link solo_ncp/zoo_configs
(an in-tree build writes build/ and the egg-info into the tree it builds)."""
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
BUNDLED = sorted(ROOT.glob("zoo_configs/*/*.yaml"))
SOLO_VERSION = metadata.version("solo-learn")
HOST = (("solo-learn-1.0.2", "pytorch_lightning", "pytorch-lightning") if SOLO_VERSION == "1.0.2"
        else ("solo-learn-main", "lightning.pytorch", "lightning"))
"""(api, Lightning module, its distribution) of this interpreter's host, from the metadata."""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(checkout, wheel, target): a copy of the checkout, the wheel built from it by this
    interpreter's pip (its setuptools, no network), installed into `target` with
    `pip install --target`."""
    work = tmp_path_factory.mktemp("packaging")
    (work / "src").mkdir()
    for name in SOURCES:
        source, copy = ROOT / name, work / "src" / name
        if source.is_dir():
            shutil.copytree(source, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy)
    subprocess.run([*PIP, "wheel", str(work / "src"), "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(work / "dist")], check=True, timeout=600)
    (wheel,) = (work / "dist").glob("*.whl")
    target = work / "target"
    subprocess.run([*PIP, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                   check=True, timeout=600)
    return work / "src", wheel, target


def run_installed(target: Path, cwd: Path, *args: str, extra_path: str = "") -> subprocess.CompletedProcess:
    """The installed console script (target/bin/solo-ncp), run in `cwd` with only `target` (and
    `extra_path` before it) on PYTHONPATH besides the interpreter's site-packages."""
    path = os.pathsep.join(p for p in (extra_path, str(target)) if p)
    return subprocess.run([str(target / "bin" / "solo-ncp"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})


def test_wheel_carries_every_module_and_bundled_config(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {n for n in names if n.startswith("solo_ncp/zoo_configs/") and n.endswith(".yaml")}
    assert BUNDLED and configs == {f"solo_ncp/{p.relative_to(ROOT).as_posix()}" for p in BUNDLED}
    modules = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("solo_ncp/**/*.py")}
    assert modules <= names, sorted(modules - names)


def test_installed_wheel_runs_stage1_from_a_bundled_config_outside_the_checkout(installed, tmp_path):
    _, _, target = installed
    code = ("import sys, solo_ncp, solo_ncp.cli, solo_ncp.zoo; print(solo_ncp.__file__); "
            "print(solo_ncp.zoo.config_path('fashionmnist/simclr')); "
            "sys.exit(solo_ncp.cli.main(sys.argv[1:]))")
    argv = ["pretrain", "--config", "fashionmnist/simclr", *DIGITS_SIMCLR, "data.subset=256",
            "max_epochs=1", "name=stage1", f"checkpoint.dir={tmp_path}"]
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(target)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    package, config = proc.stdout.splitlines()[:2]
    assert Path(package) == target / "solo_ncp" / "__init__.py"
    assert Path(config) == target / "solo_ncp" / "zoo_configs" / "fashionmnist" / "simclr.yaml"
    meta = read_checkpoint(tmp_path / "stage1" / "last.ckpt")[META_KEY]
    bundled = OmegaConf.load(ROOT / "zoo_configs/fashionmnist/simclr.yaml")
    assert (meta["method"], meta["dataset"]) == (bundled.method, "digits")


def test_version_names_the_host_or_its_error(installed, tmp_path):
    _, wheel, target = installed
    version = wheel.name.split("-")[1]
    api, module, dist = HOST
    proc = run_installed(target, tmp_path, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"solo-ncp {version} (host {api}: solo-learn {SOLO_VERSION}, "
                           f"{module} {metadata.version(dist)})\n")

    newer = tmp_path / "newer"  # an untested solo-learn's metadata shadows the installed one's
    (newer / "solo_learn-1.1.0.dist-info").mkdir(parents=True)
    (newer / "solo_learn-1.1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: solo-learn\nVersion: 1.1.0\nRequires-Dist: pytorch-lightning\n")
    proc = run_installed(target, tmp_path, "--version", extra_path=str(newer))
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line.startswith(f"solo-ncp {version} (no host: solo-learn 1.1.0 is installed with the "
                           "1.0.2 API; solo-ncp needs 1.0.x.")
    assert "pip install --no-deps solo-learn==1.0.2" in line


def test_a_solo_learn_that_does_not_import_is_the_host_error(installed, tmp_path):
    """The training commands' one `error:` line, and registering the methods as a library does."""
    _, _, target = installed
    broken = tmp_path / "broken"  # a solo-learn that does not import shadows the installed one
    (broken / "solo").mkdir(parents=True)
    (broken / "solo" / "__init__.py").write_text("raise ImportError('simulated')\n")
    host_error = f"solo-learn {SOLO_VERSION} is installed but does not import (simulated)"
    proc = run_installed(target, tmp_path, "pretrain", "--config", "fashionmnist/simclr",
                         extra_path=str(broken))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {host_error}") and last.endswith("(solo-ncp pretrain)")

    importing = subprocess.run([sys.executable, "-c", "import solo_ncp.methods"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=600,
                               env={**os.environ, "PYTHONPATH": f"{broken}{os.pathsep}{target}"})
    assert importing.returncode == 1  # registering the methods refuses the missing host
    assert importing.stderr.strip().splitlines()[-1].startswith(f"solo_ncp._host.HostError: {host_error}")


def test_a_command_without_host_is_one_error_line(monkeypatch, capsys):
    """A training command stops with the host's error before any work."""
    def no_host():
        raise HostError("solo-learn is not installed (simulated)")

    def work(args):
        raise AssertionError("the command ran without a host")

    monkeypatch.setattr(_host, "current_host", no_host)
    monkeypatch.setattr(pretrain, "run", work)
    assert main(["pretrain", "--config", "fashionmnist/simclr"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: solo-learn is not installed (simulated) (solo-ncp pretrain)"


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bundled_name_is_the_checkout_file(path):
    name = f"{path.parent.name}/{path.stem}"
    assert config_path(name).resolve() == path and config_path(f"{name}.yaml").resolve() == path
    assert OmegaConf.to_container(load_config(name)) == OmegaConf.to_container(OmegaConf.load(path))


def test_bundled_configs_are_found_in_the_checkout_solo_ncp_is_imported_from(installed):
    """This checkout's own, and another checkout's own when run from its folder with this
    interpreter (whose editable install is of this checkout), as Python puts the folder first."""
    assert zoo_dir() == ROOT / "zoo_configs"  # reproduce's default --config-dir
    other, _, _ = installed
    proc = subprocess.run([sys.executable, "-c", "import solo_ncp.zoo; print(solo_ncp.zoo.zoo_dir())"],
                          cwd=other, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(other / "zoo_configs")]


def test_missing_bundled_configs_are_one_error_line(monkeypatch, capsys):
    monkeypatch.setattr(zoo, "PACKAGE", "solo_ncp.no_such_package")
    assert main(["pretrain", "--config", "cifar10/simclr"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: the bundled configs (solo_ncp.no_such_package) are missing")


def test_an_existing_path_wins_over_a_bundled_name(tmp_path, monkeypatch):
    own = OmegaConf.load(ROOT / "zoo_configs/cifar10/ncp.yaml")
    own.name = "my-ncp"
    (tmp_path / "cifar10").mkdir()
    OmegaConf.save(own, tmp_path / "cifar10" / "ncp")
    monkeypatch.chdir(tmp_path)
    assert load_config("cifar10/ncp").name == "my-ncp"
    assert load_config("cifar10/ncp.yaml").name == OmegaConf.load(ROOT / "zoo_configs/cifar10/ncp.yaml").name


@pytest.mark.parametrize("command", ["pretrain", "train"])
@pytest.mark.parametrize("config, listed", [
    ("cifar10/nope", sorted(f"cifar10/{p.stem}" for p in ROOT.glob("zoo_configs/cifar10/*.yaml"))),
    ("mnist/ncp", sorted(p.name for p in ROOT.glob("zoo_configs/*") if p.is_dir())),
    ("nope.yaml", sorted(p.name for p in ROOT.glob("zoo_configs/*") if p.is_dir())),
])
def test_unknown_config_is_one_error_listing_the_bundled_ones(command, config, listed, capsys):
    assert main([command, "--config", config]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: config file {config} does not exist")
    assert ", ".join(listed) in last and last.endswith(f"(solo-ncp {command})")
