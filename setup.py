"""solo-ncp: NCP-ACL (Neighboring-Cluster Pursuit Adversarial Contrastive Learning) for solo-learn.

solo-learn is deliberately NOT in install_requires: PyPI's 1.0.2 pins torch 1.9, which pip would
chase. It is installed with --no-deps by scripts/setup_env.sh and checked at import time.
"""
import runpy
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = runpy.run_path(str(HERE / "solo_ncp" / "version.py"))["__version__"]

setup(
    name="solo-ncp",
    version=VERSION,
    description="NCP-ACL adversarial contrastive learning as a solo-learn extension",
    packages=find_packages(include=["solo_ncp", "solo_ncp.*"]),
    # the bundled configs: solo_ncp/zoo_configs links to the top-level zoo_configs/ (read through
    # importlib.resources by solo_ncp.zoo); a wheel holds them as solo_ncp/zoo_configs/<dataset>/
    package_data={"solo_ncp.zoo_configs": ["*/*.yaml"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "numpy",
        "omegaconf",
        "hydra-core",
        "scikit-learn",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "autoattack": ["pyautoattack"],
        "kmcuda": ["libKMCUDA"],
        "faiss": ["faiss-cpu"],
        "test": ["pytest>=7.3", "pytest-xdist"],
    },
    entry_points={"console_scripts": ["solo-ncp=solo_ncp.cli:console_main"]},
)
