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
