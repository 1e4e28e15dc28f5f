"""solo-ncp: NCP-ACL (Neighboring-Cluster Pursuit Adversarial Contrastive Learning) for solo-learn.

solo-learn is deliberately NOT in install_requires: PyPI's 1.0.2 pins torch 1.9, which pip would
chase. It is installed with --no-deps by scripts/setup_env.sh and checked at import time.
"""
from setuptools import find_packages, setup

setup(
    name="solo-ncp",
    version="0.1.0",
    description="NCP-ACL adversarial contrastive learning as a solo-learn extension",
    packages=find_packages(include=["solo_ncp", "solo_ncp.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "numpy",
        "omegaconf",
        "scikit-learn",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "autoattack": ["pyautoattack"],
        "kmcuda": ["libKMCUDA"],
        "faiss": ["faiss-cpu"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["solo-ncp=solo_ncp.cli:main"]},
)
