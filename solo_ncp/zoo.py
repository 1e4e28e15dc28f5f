"""The bundled configs, `zoo_configs/<dataset>/<name>.yaml` at the repository's top level, read
through `importlib.resources` as the package data of `solo_ncp.zoo_configs`: in a checkout that
package is the link solo_ncp/zoo_configs -> ../zoo_configs, so the configs are read where they
are (`<repo>/zoo_configs/...` once resolved, whichever checkout `solo_ncp` is imported from); a
wheel holds them under `solo_ncp/zoo_configs/`."""
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import List

PACKAGE = "solo_ncp.zoo_configs"
SUFFIX = ".yaml"


def zoo_dir() -> Path:
    """The folder of the bundled configs (one sub-folder per dataset), resolved: <repo>/zoo_configs
    in a checkout, <site-packages>/solo_ncp/zoo_configs in an installed wheel."""
    try:
        return Path(str(files(PACKAGE))).resolve()
    except ModuleNotFoundError:
        raise OSError(f"the bundled configs ({PACKAGE}) are missing: in a checkout, restore the link "
                      "solo_ncp/zoo_configs -> ../zoo_configs (git checkout solo_ncp/zoo_configs); "
                      "otherwise reinstall solo-ncp") from None


def bundled_datasets() -> List[str]:
    """The datasets that have bundled configs, sorted: ['cifar10', 'cifar100', ...]."""
    return sorted(path.name for path in zoo_dir().iterdir()
                  if path.is_dir() and any(path.glob(f"*{SUFFIX}")))


def bundled_names(dataset: str) -> List[str]:
    """The bundled configs of `dataset` as `<dataset>/<name>`, sorted ([] for another dataset)."""
    return sorted(f"{dataset}/{path.stem}" for path in (zoo_dir() / dataset).glob(f"*{SUFFIX}"))


def config_path(name: str) -> Path:
    """The file of the bundled config `<dataset>/<name>` (`.yaml` may be added: `cifar10/ncp`,
    `cifar10/ncp.yaml`); a ValueError listing the bundled configs of that dataset (or the
    datasets) for a name that is not bundled."""
    parts = PurePosixPath(name).parts
    if len(parts) == 2:
        dataset, stem = parts[0], parts[1].removesuffix(SUFFIX)
        path = zoo_dir() / dataset / f"{stem}{SUFFIX}"
        if path.is_file():
            return path
        known = bundled_names(dataset)
        if known:
            raise ValueError(f"{name!r} is not a bundled config (bundled for {dataset}: "
                             f"{', '.join(known)})")
    raise ValueError(f"{name!r} is not a bundled config name <dataset>/<name> (bundled datasets: "
                     f"{', '.join(bundled_datasets())}; e.g. cifar10/ncp)")
