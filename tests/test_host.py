import ast
from pathlib import Path

import pytest

import solo_ncp
from solo_ncp import _host
from solo_ncp.methods import solo_ncp_methods
from tests.test_two_hosts import only_solo_102

CORE = ("cluster", "attacks", "eval", "models", "data", "ncp")
FRAMEWORKS = ("pytorch_lightning", "lightning", "solo", "omegaconf")


def test_import_registers_methods_into_solo_learn():
    from solo.methods import METHODS

    ours = solo_ncp_methods()
    assert set(ours) <= set(METHODS)
    assert all(METHODS[name] is cls for name, cls in ours.items())


@only_solo_102
@pytest.mark.parametrize(
    "versions, message",
    [
        ({"pytorch-lightning": "1.9.5"}, "solo-learn is not installed"),
        ({"solo-learn": "1.1.0", "pytorch-lightning": "1.9.5"}, "solo-learn 1.1.0 is installed"),
        ({"solo-learn": "1.0.2", "pytorch-lightning": "2.1.2"}, "pytorch-lightning 2.1.2"),
        ({"solo-learn": "1.0.2"}, "no pytorch-lightning"),
    ],
)
def test_host_check_names_the_install_command(monkeypatch, versions, message):
    monkeypatch.setattr(_host, "_version", lambda dist: versions.get(dist, ""))
    with pytest.raises(_host.HostError, match=message) as err:
        _host.check_host()
    assert "pip install --no-deps solo-learn==1.0.2" in str(err.value)


def test_host_check_passes_on_the_installed_stack():
    _host.check_host()


def test_the_metadata_tells_the_installed_host_without_importing_it():
    """`--version`'s host (metadata) is the one the commands find in solo-learn's BaseMethod."""
    assert _host.installed_host() == _host.current_host()


REQUIRES_102 = ["torch (==1.9.1)", "einops", "pytorch-lightning (==1.4.7)", "lightning-bolts (>=0.4.0)",
                "nvidia-dali-cuda110 ; extra == 'dali'"]
REQUIRES_107 = ["torch>=1.10.0", "einops", "pytorch-lightning==2.0.2", "hydra-core"]
REQUIRES_MAIN = ["torch>=1.10.0", "einops", "lightning==2.1.2", "hydra-core",
                 'nvidia-dali-cuda110; extra == "dali"']
"""Requires-Dist of solo-learn's 1.0.2 wheel, of tag 1.0.7 (requirements.txt) and of main's wheel."""


@pytest.mark.parametrize(
    "requires, versions, outcome",
    [
        (REQUIRES_102, {"solo-learn": "1.0.2", "pytorch-lightning": "1.9.5"},
         _host.Host(_host.API_102, "pytorch_lightning", "1.0.2")),
        (REQUIRES_MAIN, {"solo-learn": "1.0.6", "lightning": "2.1.2", "pytorch-lightning": "2.6.6"},
         _host.Host(_host.API_MAIN, "lightning.pytorch", "1.0.6")),
        (REQUIRES_107, {"solo-learn": "1.0.6", "pytorch-lightning": "2.0.2"}, "pytorch-lightning 2.0.2 is"),
        (["torch"], {"solo-learn": "1.0.2"}, "requires neither lightning nor pytorch-lightning"),
        (REQUIRES_102, {"pytorch-lightning": "1.9.5"}, "solo-learn is not installed"),
    ],
    ids=["1.0.2", "main", "tag 1.0.7", "no lightning", "no solo-learn"],
)
def test_installed_host_follows_the_lightning_solo_learn_requires(monkeypatch, requires, versions, outcome):
    monkeypatch.setattr(_host, "_version", lambda dist: versions.get(dist, ""))
    monkeypatch.setattr(_host.metadata, "requires", {"solo-learn": requires}.get)
    if isinstance(outcome, _host.Host):
        assert _host.installed_host() == outcome
        return
    with pytest.raises(_host.HostError, match=outcome):
        _host.installed_host()


def _module_level_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("package", CORE)
def test_core_imports_no_training_framework(package):
    """The NCP core stays plain torch so it can be tested alone and reused without Lightning."""
    root = Path(solo_ncp.__file__).parent / package
    for path in root.glob("*.py"):
        for module in _module_level_imports(path):
            assert module.split(".")[0] not in FRAMEWORKS, f"{path.name} imports {module}"
