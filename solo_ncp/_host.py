"""Which solo-learn runs solo-ncp, found once per process (`current_host`, by the commands that
train and by the registration of solo-ncp's methods) from the installed solo-learn's API (its
`BaseMethod`), with version checks only to refuse untested combinations; `installed_host` reads the
same from the installed distributions' metadata without importing solo-learn (`solo-ncp --version`).

Two hosts are supported:
- "solo-learn-1.0.2" (PyPI): methods take keyword arguments and declare
  `add_model_specific_args`; they are `pytorch_lightning` 1.9 modules.
- "solo-learn-main" (GitHub main, release tags 1.0.6 to 1.0.8 and later): methods take one
  `cfg: DictConfig` and declare `add_and_assert_specific_cfg`; they are `lightning.pytorch` 2 modules.
"""
import importlib
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

INSTALL_102 = (
    "solo-learn 1.0.2 (PyPI) with PyTorch Lightning 1.9: `make test` (or `scripts/setup_env.sh`), "
    "which runs: pip install torch==2.14.1 torchvision==0.29.1 pytorch-lightning==1.9.5 "
    "\"numpy<2\" \"setuptools>=77.0.3,<81\" \"torchmetrics<1\" ... && pip install --no-deps "
    "solo-learn==1.0.2 lightning-bolts==0.7.0"
)
INSTALL_MAIN = (
    "solo-learn main with Lightning 2: `make test-solo-main` (or `scripts/setup_env_main.sh`), "
    "which runs: pip install torch==2.14.1 torchvision==0.29.1 lightning==2.1.2 "
    "\"torchmetrics>=0.6,<0.12\" hydra-core omegaconf \"setuptools>=77.0.3,<81\" ... && pip install "
    "--no-deps --no-build-isolation \"solo-learn @ git+https://github.com/vturrisi/solo-learn@9187ea3\""
)
INSTALL_HINT = f"Install one of the two hosts: {INSTALL_102}; or {INSTALL_MAIN}."

API_102 = "solo-learn-1.0.2"
API_MAIN = "solo-learn-main"


class HostError(ImportError):
    """solo-learn or Lightning is missing or of a version solo-ncp does not run on."""


@dataclass(frozen=True)
class Host:
    """api: API_102 or API_MAIN; lightning: the import name of the Lightning that solo-learn's
    methods subclass ("pytorch_lightning" or "lightning.pytorch"); solo_version: the installed
    solo-learn's version string."""

    api: str
    lightning: str
    solo_version: str

    @property
    def is_main(self) -> bool:
        return self.api == API_MAIN

    @property
    def lightning_dist(self) -> str:
        """The distribution of `lightning`: "lightning" (main) or "pytorch-lightning" (1.0.2)."""
        return "lightning" if self.is_main else "pytorch-lightning"

    @property
    def lightning_version(self) -> str:
        """The installed version of `lightning_dist` (its metadata: what `lightning.__version__`
        says, without importing it)."""
        return _version(self.lightning_dist)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _solo_version() -> str:
    solo = _version("solo-learn")
    if not solo:
        raise HostError(f"solo-learn is not installed. {INSTALL_HINT}")
    return solo


def _requirement_names(dist: str) -> set:
    """The distribution names `dist`'s metadata requires ("pytorch-lightning (==1.4.7)" ->
    "pytorch-lightning"), lower-case with "-" for "_"."""
    requirements = metadata.requires(dist) or []
    return {re.match(r"[\w.-]+", req).group(0).lower().replace("_", "-") for req in requirements}


def import_solo(module: str = "solo.methods"):
    """Imports a solo-learn module, hiding the deprecation chatter of its dependencies
    (lightning-bolts re-adds "once" filters ahead of any "ignore": the display is muted instead)."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda *args, **kwargs: None
        return importlib.import_module(module)


def _base_method():
    solo = _version("solo-learn")
    try:
        return import_solo("solo.methods.base").BaseMethod
    except ImportError as err:
        raise HostError(
            f"solo-learn {solo} is installed but does not import ({err}): its stack is "
            f"incomplete. {INSTALL_HINT}"
        ) from None


def _api_of(base) -> Host:
    """Reads the host from solo-learn's `BaseMethod`: its config API and its Lightning base."""
    lightning = next(
        (c.__module__.split(".core")[0] for c in base.__mro__
         if c.__name__ == "LightningModule"),
        "",
    )
    if hasattr(base, "add_and_assert_specific_cfg") and lightning == "lightning.pytorch":
        return Host(API_MAIN, lightning, _version("solo-learn"))
    if hasattr(base, "add_model_specific_args") and lightning == "pytorch_lightning":
        return Host(API_102, lightning, _version("solo-learn"))
    raise HostError(
        f"solo-learn {_version('solo-learn')} has an API solo-ncp does not know (BaseMethod on "
        f"{lightning or 'no LightningModule'}, neither `add_model_specific_args` with "
        f"pytorch_lightning nor `add_and_assert_specific_cfg` with lightning.pytorch). {INSTALL_HINT}"
    )


def _check_versions(host: Host) -> None:
    """Refuses Lightning versions the host's adapter is not tested with."""
    if host.is_main:
        lightning = _version(host.lightning_dist)
        if not lightning.startswith("2."):
            found = f"lightning {lightning} is installed" if lightning else "no lightning"
            raise HostError(f"{found}; solo-learn main needs Lightning 2.x. {INSTALL_HINT}")
        return
    if not host.solo_version.startswith("1.0."):
        raise HostError(
            f"solo-learn {host.solo_version} is installed with the 1.0.2 API; solo-ncp needs "
            f"1.0.x. {INSTALL_HINT}"
        )
    lightning = _version(host.lightning_dist)
    if not lightning.startswith("1.9."):
        found = f"pytorch-lightning {lightning} is installed" if lightning else "no pytorch-lightning"
        raise HostError(f"{found}; solo-learn 1.0.2 needs 1.9.x. {INSTALL_HINT}")


def check_host() -> Host:
    """The installed host; raises HostError naming both install lines when there is none or it
    is of an untested combination."""
    _solo_version()
    host = _api_of(_base_method())
    _check_versions(host)
    return host


def installed_host() -> Host:
    """The host as the installed distributions' metadata state it, importing neither solo-learn
    nor Lightning (milliseconds, for `solo-ncp --version`): the Lightning solo-learn requires tells
    the API apart ("lightning" from tag 1.0.8 on: main's; "pytorch-lightning": 1.0.2's), refused
    as `check_host` refuses. Unlike `check_host` it does not see a solo-learn that fails to import."""
    solo = _solo_version()
    required = _requirement_names("solo-learn")
    if "lightning" in required:
        host = Host(API_MAIN, "lightning.pytorch", solo)
    elif "pytorch-lightning" in required:
        host = Host(API_102, "pytorch_lightning", solo)
    else:
        raise HostError(f"solo-learn {solo} requires neither lightning nor pytorch-lightning: "
                        f"solo-ncp does not know its API. {INSTALL_HINT}")
    _check_versions(host)
    return host


@lru_cache(maxsize=None)
def current_host() -> Host:
    """`check_host()` once per process."""
    return check_host()
