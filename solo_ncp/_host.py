"""Which solo-learn runs solo-ncp, checked once at `import solo_ncp`."""
from importlib import metadata

INSTALL_HINT = (
    "solo-ncp runs on solo-learn 1.0.2 from PyPI with PyTorch Lightning 1.9. Set it up with "
    "`make test` (or `scripts/setup_env.sh`), which runs: pip install torch==2.14.1 "
    "torchvision==0.29.1 pytorch-lightning==1.9.5 \"numpy<2\" \"setuptools>=77.0.3,<81\" "
    "\"torchmetrics<1\" ... && pip install --no-deps solo-learn==1.0.2 lightning-bolts==0.7.0"
)


class HostError(ImportError):
    """solo-learn or Lightning is missing or of a version solo-ncp does not run on."""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def check_host() -> None:
    """Raises HostError naming the install command unless solo-learn 1.0.x and Lightning 1.9.x
    are installed."""
    solo, lightning = _version("solo-learn"), _version("pytorch-lightning")
    if not solo:
        raise HostError(f"solo-learn is not installed. {INSTALL_HINT}")
    if not solo.startswith("1.0."):
        raise HostError(f"solo-learn {solo} is installed; solo-ncp needs 1.0.x. {INSTALL_HINT}")
    if not lightning.startswith("1.9."):
        found = f"pytorch-lightning {lightning} is installed" if lightning else "no pytorch-lightning"
        raise HostError(f"{found}; solo-learn 1.0.2 needs 1.9.x. {INSTALL_HINT}")
