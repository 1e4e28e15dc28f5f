"""Shared fixtures: a tiny real stage-1 run on scikit-learn's digits and a stage-2 run from it, each
made once per test run (shared by the pytest-xdist workers)."""
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytest
import torch

# The host before any test captures stderr: Lightning, first imported inside a test, would bind
# its log handler to that test's capture stream, closed for the later tests ("Logging error").
import solo_ncp.methods  # noqa: F401
from solo_ncp._host import current_host

ROOT = Path(__file__).resolve().parents[1]

# Tests of code that runs no solo-learn or Lightning (reproduce's driver and report, eval, poc,
# select-k): the same code on both hosts, so they run once, in solo-learn 1.0.2's suite. The host's
# side of them (its checkpoints read by eval, each step's command) is tested on both hosts, in
# test_two_hosts.py and the training tests.
host_independent = pytest.mark.skipif(
    current_host().is_main, reason="host-independent: runs in solo-learn 1.0.2's suite (make test)")


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs `-n auto`), each worker gets its share of the CPU's
    threads, it and the processes its tests start (OMP_NUM_THREADS), instead of every worker
    running as many threads as there are cores."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # the order of pytest_collection_modifyitems


SUITE_DISK_GB = 3.0
"""The room a suite's temp files need: the 1.0.2 suite's peaked at 2.2 GB (2026-12-07), each passed
test's tmp_path being removed at its teardown (pytest.ini's tmp_path_retention_policy)."""


def pytest_sessionstart(session):
    """Stops the run before its first test, with one line naming the folder and the room, where the
    disk of the temp folder has less free than a suite needs (`SUITE_DISK_GB`;
    SOLO_NCP_SUITE_DISK_GB overrides it). Without it a full disk failed CI 335 s in, as one
    OSError traceback (ENOSPC) per test after it."""
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: its controller checked
        return
    folder = Path(session.config.option.basetemp or tempfile.gettempdir()).resolve()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    free = shutil.disk_usage(existing).free / 2 ** 30
    need = float(os.environ.get("SOLO_NCP_SUITE_DISK_GB", SUITE_DISK_GB))
    if free < need:
        pytest.exit(f"the test suite needs {need:g} GB free for its temp files in {folder}, and that disk has "
                    f"{free:.1f} GB free: free space there, or set TMPDIR (or --basetemp) to a folder on a "
                    "larger disk", returncode=2)


@pytest.fixture(scope="session", autouse=True)
def processes_temp_folder(tmp_path_factory) -> Path:
    """TMPDIR of the processes the tests start: a folder of this run's (of each pytest-xdist
    worker's), removed after its last test. wandb makes two temp folders as it is imported
    (tmp*wandb-media, tmp*wandb-artifacts) and removes them at exit, so each process a test kills
    with SIGKILL left two in /tmp: about 20 a suite run, never removed."""
    folder = tmp_path_factory.mktemp("processes-tmp", numbered=False)
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    yield folder
    if before is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = before
    shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Test files in the order pytest-xdist's `--dist loadfile` hands them out: first one file
    that needs the shared ResNet-18 stage 1 (`digits_simclr_ckpt`, about 2 min on one core), so
    one worker makes it from the start; then every file that does not need it, which the other
    workers run meanwhile instead of waiting on its lock; then the rest. Within each group, files
    with more tests first (pytest-xdist's own order). A test needs the fixture when it asks for
    it by argument (directly or through another fixture): `request.getfixturevalue` is not seen."""
    files = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    needing = {path for path, tests in files.items()
               if any("digits_simclr_ckpt" in item.fixturenames and not skipped(item) for item in tests)}
    by_size = sorted(files, key=lambda path: -len(files[path]))
    first = [path for path in by_size if path in needing][:1]
    order = (first + [path for path in by_size if path not in needing]
             + [path for path in by_size if path in needing and path not in first])
    items[:] = [item for path in order for item in files[path]]


def skipped(item) -> bool:
    """Whether a `skipif` mark with a condition already true at collection skips `item`."""
    return any(mark.args[:1] == (True,) for mark in item.iter_markers("skipif"))


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# 2 epochs of SimCLR on digits (8x8), small projector: about 20 s on 2 CPU cores.
DIGITS_SIMCLR = [
    "data.dataset=digits",
    "augmentations.0.crop_size=8",
    "optimizer.batch_size=128",
    "data.num_workers=0",
    "method_kwargs.proj_hidden_dim=64",
    "method_kwargs.proj_output_dim=32",
    "scheduler.warmup_epochs=0",
    "data.val=false",
]


def pretrain(out_dir: Path, *overrides: str, resume: bool = False) -> int:
    from solo_ncp.cli import main

    argv = ["pretrain", "--config", str(ROOT / "zoo_configs/fashionmnist/simclr.yaml")]
    argv += ["--resume"] if resume else []
    return main(argv + DIGITS_SIMCLR + [f"checkpoint.dir={out_dir}", *overrides])


def once_per_run(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """`make(folder)`'s path, made once per test run: pytest-xdist's workers share the folder `name`
    beside their own temp folders and take turns on its lock (flock): the first makes it, the
    others reuse it; a make that failed is tried again, in an emptied folder, by the next."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    folder, made = root / name, root / f"{name}.made"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            made.write_text(str(make(folder)))
        return Path(made.read_text())


@pytest.fixture(scope="session")
def digits_simclr_ckpt(tmp_path_factory) -> Path:
    """last.ckpt of a 2-epoch SimCLR run on digits through `solo-ncp pretrain`."""
    def make(out: Path) -> Path:
        assert pretrain(out, "max_epochs=2", "name=digits") == 0
        return out / "digits" / "last.ckpt"

    return once_per_run(tmp_path_factory, "stage1", make)


# A WideResNet-28-1 (0.4 M parameters; on 8x8 digits its step costs a 13th of ResNet-18's): the
# backbone of the tests whose claim does not depend on it (what a resume, a warm start or a
# best.ckpt keeps; which images are held out). The stage-2 runs from `digits_small_simclr_ckpt`
# add these overrides.
SMALL_BACKBONE = ["backbone.name=wide_resnet28_10", "+backbone.kwargs.widen_factor=1"]
KILLED_RUN_EPOCHS = 6
"""Epochs of a small-backbone run a test kills -9 once its first last.ckpt exists: 5 are left, so
the kill lands mid-run on a fast machine too."""


@pytest.fixture(scope="session")
def digits_small_simclr_ckpt(tmp_path_factory) -> Path:
    """last.ckpt of `digits_simclr_ckpt`'s run on SMALL_BACKBONE."""
    def make(out: Path) -> Path:
        assert pretrain(out, "max_epochs=2", "name=digits", *SMALL_BACKBONE) == 0
        return out / "digits" / "last.ckpt"

    return once_per_run(tmp_path_factory, "stage1-small", make)


def write_image_folder(root: Path, images, labels, classes) -> Path:
    """`images` ((N, H, W) or (N, H, W, 3) uint8) as PNGs in an ImageFolder at `root`: image i
    is root/classes[labels[i]]/<i>.png. Returns root."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (make test installs it as root)",
)


# Stage 2 on 256 digits, batch 64 (4 steps an epoch), K = 10.
DIGITS_STAGE2 = [
    "data.dataset=digits",
    "augmentations.0.crop_size=8",
    "optimizer.batch_size=64",
    "data.num_workers=0",
    "data.subset=256",
    "data.val=false",
    "scheduler.warmup_epochs=0",
    "method_kwargs.k=10",
]


def train_stage2(out_dir: Path, teacher: Path, *overrides: str, method: str = "ncp",
                 resume: bool = False) -> int:
    from solo_ncp.cli import main

    argv = ["train", "--config", str(ROOT / f"zoo_configs/fashionmnist/{method}.yaml")]
    argv += ["--resume"] if resume else []
    shared = [o for o in DIGITS_STAGE2 if method == "ncp" or not o.startswith("method_kwargs.k=")]
    return main(argv + shared + [f"checkpoint.dir={out_dir}",
                                 f"method_kwargs.teacher_ckpt={teacher}", *overrides])


@pytest.fixture(scope="session")
def digits_ncp_ckpt(tmp_path_factory, digits_simclr_ckpt) -> Path:
    """last.ckpt of one epoch of `ncp` on digits through `solo-ncp train`."""
    def make(out: Path) -> Path:
        assert train_stage2(out, digits_simclr_ckpt, "max_epochs=1", "name=ncp") == 0
        return out / "ncp" / "last.ckpt"

    return once_per_run(tmp_path_factory, "stage2", make)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread: tiny tensors gain nothing from more, and on shared cores the thread
    barriers of thousands of tiny ops (AutoAttack's loops) slow a run by 10x or more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
