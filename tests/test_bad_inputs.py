"""Every bad input the issues and the README list, one table row each, through the real entry
point: exit code 2, the last line printed starts with `error:` and names the problem, no
traceback, and no earlier result file changed.

Rows run `solo_ncp.cli.main` in this process (the console script is `sys.exit(main())`): an
exception escaping it would fail the test as a traceback would; the rows that need a process of
their own (a lock held by another pid, an environment variable at torch's import) are in
test_resume.py and test_io.py."""
import functools
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from solo_ncp.cli import main
from solo_ncp.config import load_config
from solo_ncp.launch.reproduce import build_plan
from solo_ncp.launch.trainer import save_config
from tests.conftest import DIGITS_SIMCLR, DIGITS_STAGE2, ROOT, write_image_folder
from tests.test_data import IMAGES, LABELS, write_fashion_mnist

SIMCLR = ["pretrain", "--config", str(ROOT / "zoo_configs/fashionmnist/simclr.yaml"), *DIGITS_SIMCLR]
EVAL = ["eval", "--dataset", "digits", "--epochs", "1", "--test-n", "20", "--aa-n", "0"]


class CodeRunner:
    """Unpickling this runs code: a safe loader must refuse it."""

    def __reduce__(self):
        return (print, ("code ran",))


def zip_of_notes() -> bytes:
    """A zip archive that is no torch archive."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as notes:
        notes.writestr("notes.txt", "my notes\n")
    return archive.getvalue()


NOT_CHECKPOINTS = {  # stem of a world file -> its bytes: texts of three first bytes, a zip, nothing
    "text-h": b"hello, my notes\n",
    "text-paren": b"(edited) my notes\n",
    "text-x80": b"\x80eur: prices in cp1252\n",
    "zip": zip_of_notes(),
    "empty": b"",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, digits_simclr_ckpt):
    """A folder of results made once: checkpoints good and bad, an earlier k.json and
    metrics.json, a run folder with a last.ckpt. Returns {name: path}."""
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {"root": root, "simclr": digits_simclr_ckpt}
    (root / "text.ckpt").write_text("not a checkpoint\n")
    torch.save([1, 2, 3], root / "list.ckpt")
    torch.save({"state_dict": CodeRunner()}, root / "unsafe.ckpt")
    good = digits_simclr_ckpt.read_bytes()
    (root / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    ckpt = torch.load(digits_simclr_ckpt, weights_only=True)
    first = next(k for k in ckpt["state_dict"] if k.endswith("conv1.weight"))
    ckpt["state_dict"][first] = torch.full_like(ckpt["state_dict"][first], float("nan"))
    torch.save(ckpt, root / "nan.ckpt")
    (root / "k").mkdir()
    (root / "k" / "k.json").write_text('{"k": 5}\n')
    (root / "no_results").mkdir()
    (root / "eval").mkdir()
    (root / "eval" / "metrics.json").write_text("{}\n")
    (root / "a_file").write_text("")
    (root / "unknown_block.yaml").write_text(
        (ROOT / "zoo_configs/fashionmnist/simclr.yaml").read_text() + "knn_evaluation:\n  enabled: true\n")
    cifar = root / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"]:
        (cifar / name).write_bytes(b"corrupt" * 10)
    for stem, content in NOT_CHECKPOINTS.items():
        (root / f"{stem}.ckpt").write_bytes(content)
    write_custom_folders(root / "custom")
    for fault, plant in (("truncated", lambda d: (d / IMAGES).write_bytes((d / IMAGES).read_bytes()[:99])),
                         ("random", lambda d: (d / LABELS).write_bytes(bytes(range(7, 250, 3))))):
        plant(write_fashion_mnist(root / f"fmnist-{fault}" / "fashion-mnist"))
    for name in ("truncated", "text", "unsafe", "list", *NOT_CHECKPOINTS):
        run = root / "runs" / name
        run.mkdir(parents=True)
        (run / "last.ckpt").write_bytes((root / f"{name}.ckpt").read_bytes())
    recorded = root / "runs" / "recorded"  # a run's config.yaml beside a good last.ckpt
    recorded.mkdir()
    (recorded / "last.ckpt").write_bytes(good)
    save_config(load_config(SIMCLR[2], [*DIGITS_SIMCLR, f"checkpoint.dir={root / 'runs'}",
                                        "name=recorded"]), recorded)
    paths.update({p.stem: p for p in root.glob("*.ckpt")})
    plan = build_plan(dataset="digits", seeds=[0], methods=["ncp"], evals=["slf"], out=root / "repro",
                      overrides=REPRODUCE[REPRODUCE.index("--out") + 2:], teacher=digits_simclr_ckpt,
                      config_dir=ROOT / "zoo_configs/fashionmnist", select_k_options="--k-min 5 --k-max 10 --k-step 5")
    (root / "repro").mkdir()
    (root / "repro" / "reproduce.json").write_text(json.dumps(plan.settings))
    assert main([*EVAL, "--ckpt", str(digits_simclr_ckpt), "--out", str(root / "simclr-eval")]) == 0
    other = root / "other.ckpt"  # the same weights in another file: another sha256
    torch.save({**torch.load(digits_simclr_ckpt, weights_only=True), "other": 1}, other)
    paths["other"] = other
    return paths


def write_custom_folders(root: Path) -> None:
    """Custom data under `root`: ImageFolders `train` and `val` (classes a, b), and folders that are
    none: `empty`, `flat` (images, no class folders), `hollow` (class b without an image), `other`
    (an ImageFolder of classes a, c)."""
    images, labels = np.zeros((4, 8, 8), dtype=np.uint8), [0, 1, 0, 1]
    for name in ("train", "val"):
        write_image_folder(root / name, images, labels, ["a", "b"])
    write_image_folder(root / "other", images, labels, ["a", "c"])
    write_image_folder(root / "hollow", images[:1], labels[:1], ["a", "b"])
    (root / "hollow" / "b").mkdir()
    (root / "hollow" / "b" / "notes.txt").write_text("no image\n")
    write_image_folder(root / "flat", images[:1], labels[:1], ["."])
    (root / "empty").mkdir()


CUSTOM_STATISTICS = ["+augmentations.0.mean=[0.5,0.5,0.5]", "+augmentations.0.std=[0.25,0.25,0.25]"]


def custom(world, *overrides, statistics=CUSTOM_STATISTICS):
    """pretrain on the world's custom ImageFolder `train` (without validation), then `overrides`."""
    return [*SIMCLR, f"checkpoint.dir={world['root'] / 'runs'}", "data.dataset=custom",
            f"data.train_path={world['root'] / 'custom' / 'train'}", *statistics, *overrides]


def custom_folder(world, name):
    return world["root"] / "custom" / name


def custom_eval(world, *options):
    """eval of the digits stage-1 checkpoint (it records no custom data) with --dataset custom."""
    return [*EVAL[:2], "custom", *EVAL[3:], "--ckpt", str(world["simclr"]),
            "--out", str(world["root"] / "fresh"), *options]


REPRODUCE = ["reproduce", "--dataset", "digits", "--config-dir", str(ROOT / "zoo_configs/fashionmnist"),
             "--select-k-options=--k-min 5 --k-max 10 --k-step 5", "--out", "OUT", "data.subset=256",
             "augmentations.0.crop_size=8"]


def reproduce(world, *options, out="repro"):
    """`solo-ncp reproduce` sharing the stage-1 checkpoint, into `out` under the world."""
    argv = [str(world["root"] / out) if arg == "OUT" else arg for arg in REPRODUCE]
    return [*argv, "--teacher", str(world["simclr"]), *options]


def stage2(world, *overrides, method="ncp"):
    return ["train", "--config", str(ROOT / f"zoo_configs/fashionmnist/{method}.yaml"),
            *DIGITS_STAGE2, f"checkpoint.dir={world['root'] / 'runs'}",
            f"method_kwargs.teacher_ckpt={world['simclr']}", *overrides]


def resume(world, name, *overrides):
    return [*SIMCLR, f"checkpoint.dir={world['root'] / 'runs'}", f"name={name}", "--resume",
            *overrides]


def evaluate(world, ckpt, *options, out="fresh"):
    return [*EVAL, "--ckpt", str(world[ckpt]), "--out", str(world["root"] / out), *options]


POC = ["poc", "--dataset", "digits", "--k", "5", "--epochs", "1", "--test-n", "20"]
DEVICE_COMMANDS = {  # command -> argv builder, given a text file as its checkpoint
    "eval": lambda w: evaluate(w, "text"),
    "select-k": lambda w: ["select-k", "--ckpt", str(w["text"]), "--dataset", "digits", "--k-min",
                           "2", "--k-max", "4", "--k-step", "1", "--out", str(w["root"] / "k3")],
    "poc": lambda w: [*POC, "--ckpt", str(w["text"]), "--out", str(w["root"] / "poc")],
}
NO_CUDA_ROWS = {f"{command}: --device cuda" for command in DEVICE_COMMANDS} | {"kmcuda k-means on the CPU"}
"""Rows whose input is bad only where no CUDA device is visible."""


def on_device(command, device):
    """The row of `command` (DEVICE_COMMANDS) run with `--device device`: its builder and words."""
    named = f"--device {device!r}" if device == "foo" else f"--device {device}:"
    return lambda w: [*DEVICE_COMMANDS[command](w), "--device", device], [named, "--device cpu"]


def fashion_mnist_eval(world, fault):
    """eval on the Fashion-MNIST folder of the world with a malformed file."""
    return [*EVAL[:2], "fashionmnist", *EVAL[3:], "--ckpt", str(world["simclr"]), "--data-dir",
            str(world["root"] / f"fmnist-{fault}"), "--out", str(world["root"] / "fresh")]


CHECKPOINT_USES = {  # how a command reads a checkpoint -> (argv builder of the world and the
    # stem of a world file, where the error line finds that file)
    "eval --ckpt": (lambda w, stem: evaluate(w, stem), "{stem}.ckpt"),
    "teacher": (lambda w, stem: stage2(w, f"method_kwargs.teacher_ckpt={w[stem]}"), "{stem}.ckpt"),
    "resume": (lambda w, stem: resume(w, stem), "{stem}/last.ckpt"),
}


def not_a_checkpoint_rows():
    """Each file of NOT_CHECKPOINTS as each use of CHECKPOINT_USES: one row apiece."""
    return {f"{use}: {stem} file": (functools.partial(build, stem=stem),
                                    [where.format(stem=stem), "not a PyTorch checkpoint"])
            for use, (build, where) in CHECKPOINT_USES.items() for stem in NOT_CHECKPOINTS}


ROWS = {  # case -> (argv builder taking the world, words the error line must hold)
    # overrides (Hydra grammar)
    "misspelt key": (lambda w: [*SIMCLR, "max_epoch=2"], ["max_epoch", "max_epochs"]),
    "misspelt method option": (lambda w: stage2(w, "method_kwargs.lamda=3"), ["lamda", "lam"]),
    "+ on an existing key": (lambda w: [*SIMCLR, "+optimizer.lr=0.1"], ["optimizer.lr"]),
    "+ a key nothing reads": (lambda w: [*SIMCLR, "+unknown.key=1"], ["`unknown.key` is not read"]),
    "++ a key nothing reads": (lambda w: [*SIMCLR, "++unknown.key=1"], ["`unknown.key` is not read"]),
    "+ a misspelt method option": (lambda w: stage2(w, "+method_kwargs.lamda=3"),
                                   ["`method_kwargs.lamda`", "did you mean `method_kwargs.lam`?"]),
    "a block nothing reads in the file": (lambda w: ["pretrain", "--config",
                                                     str(w["root"] / "unknown_block.yaml"),
                                                     *DIGITS_SIMCLR],
                                          ["`knn_evaluation.enabled`", "`knn_eval.enabled`"]),
    "a whole number given as text": (lambda w: [*SIMCLR, "max_epochs=abc"],
                                     ["max_epochs='abc' must be a whole number"]),
    "a stage-1 method option removed": (lambda w: [*SIMCLR, "~method_kwargs.temperature"],
                                        ["simclr on solo-learn-", "needs `method_kwargs.temperature`",
                                         "++method_kwargs.temperature=<value>"]),
    "a stage-1 method option given as text": (lambda w: [*SIMCLR, "method_kwargs.temperature=abc"],
                                              ["method_kwargs.temperature='abc' must be a number, "
                                               "as the config file's 0.5 is"]),
    "an optimizer flag given as a number": (lambda w: [*SIMCLR, "optimizer.kwargs.clip_lr=1"],
                                            ["optimizer.kwargs.clip_lr=1 must be true or false, "
                                             "as the config file's true is"]),
    "a negative method eps": (lambda w: stage2(w, "method_kwargs.eps=-1"),
                              ["method_kwargs.eps=-1 must be a number >= 0"]),
    "a method K given as text": (lambda w: stage2(w, "method_kwargs.k=abc"),
                                 ["method_kwargs.k='abc' must be a whole number"]),
    "a normalization without std": (lambda w: stage2(w, "+method_kwargs.normalization={mean:[0.5,0.5,0.5]}"),
                                    ["method_kwargs.normalization=", "3 finite numbers each, every std > 0"]),
    "a normalization of 2 channels": (lambda w: stage2(w, "+method_kwargs.normalization={mean:[0.5,0.5],std:[1,1]}"),
                                      ["must be {mean: [r, g, b], std: [r, g, b]}"]),
    "a normalization with std 0": (lambda w: stage2(w, "+method_kwargs.normalization={mean:[0,0,0],std:[0,1,1]}"),
                                   ["every std > 0"]),
    "a normalization the teacher overrides": (
        lambda w: stage2(w, "+method_kwargs.normalization={mean:[0.5,0.5,0.5],std:[0.2,0.2,0.2]}"),
        ["differs from the normalisation the teacher", "records", "drop the option"]),
    "an infinite lambda": (lambda w: stage2(w, "method_kwargs.lam=inf"),
                           ["method_kwargs.lam=inf must be a finite number >= 0"]),
    "a k-means seed numpy cannot take": (lambda w: stage2(w, "+method_kwargs.kmeans_seed=99999999999999999999"),
                                         ["method_kwargs.kmeans_seed=99999999999999999999 must be a whole number "
                                          "from 0 to 4294967295"]),
    "a stage-2 eps of 255/255": (lambda w: stage2(w, "method_kwargs.eps=255"),
                                 ["method_kwargs.eps=255", "give a size below 1"]),
    "a method K of 1": (lambda w: stage2(w, "method_kwargs.k=1"), ["method_kwargs.k=1 must be a whole number >= 2"]),
    "kmcuda k-means on the CPU": (lambda w: stage2(w, "+method_kwargs.kmeans_backend=kmcuda"),
                                  ["method_kwargs.kmeans_backend=kmcuda clusters on a CUDA GPU, and this run trains on "
                                   "the CPU: set accelerator=gpu on a machine with CUDA, or "
                                   "method_kwargs.kmeans_backend=torch"]),
    "K above the images the robust monitor leaves": (
        lambda w: stage2(w, "+method_kwargs.val_robust_every=1", "+method_kwargs.val_robust_n=250"),
        ["K=10 clusters (method_kwargs.k) but the training set has only 6 images after method_kwargs.val_robust_n=250 "
         "held out for the robust monitor: lower K or method_kwargs.val_robust_n"]),
    "an empty teacher": (lambda w: stage2(w, "method_kwargs.teacher_ckpt=''"),
                         ["stage 2 needs method_kwargs.teacher_ckpt (the stage-1 last.ckpt), not ''"]),
    "override without =": (lambda w: [*SIMCLR, "max_epochs"], ["max_epochs"]),
    "cluster_bn adv on one BN": (lambda w: stage2(w, "method_kwargs.dual_bn=false",
                                                  "method_kwargs.cluster_bn=adv"),
                                 ["cluster_bn='adv' needs dual_bn: true"]),
    # checkpoints
    "missing teacher": (lambda w: stage2(w, "method_kwargs.teacher_ckpt=/nonexistent.ckpt"),
                        ["does not exist"]),
    "teacher of another backbone": (lambda w: stage2(w, "backbone.kwargs.cifar=false"),
                                    ["cifar stem: True"]),
    "K larger than the data": (lambda w: stage2(w, "method_kwargs.k=5000"), ["K=5000"]),
    "NaN teacher": (lambda w: stage2(w, f"method_kwargs.teacher_ckpt={w['nan']}"),
                    ["NaN/inf weights"]),
    "NaN encoder in select-k": (lambda w: ["select-k", "--ckpt", str(w["nan"]), "--dataset",
                                           "digits", "--k-min", "2", "--k-max", "4", "--k-step", "1",
                                           "--out", str(w["root"] / "k2")], ["NaN/inf weights"]),
    "NaN encoder in eval": (lambda w: evaluate(w, "nan"), ["NaN/inf weights"]),
    "text file as checkpoint": (lambda w: evaluate(w, "text"), ["text.ckpt"]),
    "saved list as checkpoint": (lambda w: evaluate(w, "list"), ["list.ckpt"]),
    "unsafe pickle as checkpoint": (lambda w: evaluate(w, "unsafe"), ["--trust-checkpoint"]),
    "truncated checkpoint": (lambda w: evaluate(w, "truncated"), ["truncated.ckpt"]),
    "resume: truncated last.ckpt": (lambda w: resume(w, "truncated"), ["last.ckpt"]),
    "resume: text last.ckpt": (lambda w: resume(w, "text"), ["last.ckpt"]),
    "resume: unsafe last.ckpt": (lambda w: resume(w, "unsafe"), ["--trust-checkpoint"]),
    "resume: a saved list": (lambda w: resume(w, "list"), ["last.ckpt"]),
    "resume without a run": (lambda w: resume(w, "nothing"), ["--resume"]),
    "resume with a key that cannot change": (lambda w: resume(w, "recorded", "data.dataset=cifar10"),
                                             ["data.dataset: digits recorded, cifar10 given",
                                              "name="]),
    # data
    "corrupt CIFAR files": (lambda w: [*EVAL[:2], "cifar10", *EVAL[3:], "--ckpt", str(w["simclr"]),
                                       "--data-dir", str(w["root"] / "cifar"),
                                       "--out", str(w["root"] / "fresh")], ["cifar"]),
    "missing dataset folder": (lambda w: [*EVAL[:2], "cifar10", *EVAL[3:], "--ckpt",
                                          str(w["simclr"]), "--data-dir", "/nonexistent/data",
                                          "--out", str(w["root"] / "fresh")], ["/nonexistent/data"]),
    "pretrain offline": (lambda w: ["pretrain", "--config", str(ROOT / "zoo_configs/cifar10/simclr.yaml"),
                                    "data.train_path=/nonexistent/data", "accelerator=cpu",
                                    "devices=1", f"checkpoint.dir={w['root'] / 'runs'}"],
                         ["data.train_path"]),
    # outputs
    "select-k over an earlier k.json": (lambda w: ["select-k", "--ckpt", str(w["simclr"]),
                                                   "--dataset", "digits", "--k-min", "2",
                                                   "--k-max", "4", "--k-step", "1", "--out", str(w["root"] / "k")],
                                        ["--overwrite"]),
    "eval over an earlier metrics.json": (lambda w: evaluate(w, "simclr", out="eval"),
                                          ["--overwrite"]),
    "eval into an unwritable folder": (lambda w: evaluate(w, "simclr", out="a_file/eval"),
                                       ["a_file"]),
    "select-k into an unwritable folder": (lambda w: ["select-k", "--ckpt", str(w["simclr"]),
                                                      "--dataset", "digits", "--k-min", "2",
                                                      "--k-max", "4", "--k-step", "1", "--out",
                                                      str(w["root"] / "a_file" / "k")], ["a_file"]),
    "pretrain into an unwritable folder": (lambda w: [*SIMCLR, "checkpoint.dir="
                                                      f"{w['root'] / 'a_file'}"], ["a_file"]),
    "poc into an unwritable folder": (lambda w: [*POC, "--ckpt", str(w["text"]), "--out",
                                                 str(w["root"] / "a_file" / "poc")], ["a_file"]),
    "report into an unwritable file": (lambda w: ["report", str(w["root"] / "eval"), "--out",
                                                  str(w["root"] / "a_file" / "t.md")], ["a_file"]),
    "report --out a folder": (lambda w: ["report", str(w["root"] / "eval"), "--out",
                                         str(w["root"] / "no_results")],
                              ["no_results is a folder, not a file", "report.md"]),
    "report of a folder without results": (lambda w: ["report", str(w["root"] / "no_results")],
                                           ["no_results holds no metrics.json", "poc.json",
                                            "k.json", "run it again"]),
    "report of a folder that does not exist": (lambda w: ["report", str(w["root"] / "missing")],
                                               ["missing does not exist", "results folder"]),
    "report of a file, not a folder": (lambda w: ["report", str(w["text"])],
                                       ["is a file, not a folder"]),
    "report of a k.json without scores": (lambda w: ["report", str(w["root"] / "k")],
                                          ["k.json", "not a k.json of `solo-ncp select-k`"]),
    "plot of a run folder without logs": (lambda w: ["plot", str(w["root"] / "runs" / "recorded")],
                                          [str(Path("runs") / "recorded"), "no training logs",
                                           "metrics.csv"]),
    "pretrain over an existing run": (lambda w: resume(w, "text")[:-1], ["--resume"]),
    # evaluation options, checked before any work
    "negative eps": (lambda w: evaluate(w, "simclr", "--eps", "-0.1"), ["--eps"]),
    "eps in 1/255 units": (lambda w: evaluate(w, "simclr", "--eps", "8"), ["--eps=8", "--eps=0.0313725"]),
    "poc eps in 1/255 units": (lambda w: [*POC, "--ckpt", str(w["simclr"]), "--eps", "8", "--out",
                                          str(w["root"] / "poc")], ["--eps=8", "--eps=0.0313725"]),
    "stage-2 eps in 1/255 units": (lambda w: stage2(w, "method_kwargs.eps=8"),
                                   ["method_kwargs.eps=8", "method_kwargs.eps=0.0313725"]),
    "step in 1/255 units": (lambda w: evaluate(w, "simclr", "--alpha", "2"),
                            ["--alpha=2", "--alpha=0.00784314"]),
    "stage-2 step in 1/255 units": (lambda w: stage2(w, "method_kwargs.alpha=2"),
                                    ["method_kwargs.alpha=2", "method_kwargs.alpha=0.00784314"]),
    "beta with the CE loss": (lambda w: evaluate(w, "simclr", "--mode", "alf", "--loss", "ce",
                                                 "--beta", "6"), ["--beta"]),
    "aff with cached features": (lambda w: evaluate(w, "simclr", "--mode", "aff",
                                                    "--cache-features"), ["--cache-features"]),
    "AutoAttack subset beyond the test set": (lambda w: evaluate(w, "simclr", "--aa-n", "100000"),
                                              ["--aa-n"]),
    "no PGD steps": (lambda w: evaluate(w, "simclr", "--pgd-steps", "0"), ["--pgd-steps"]),
    "unknown threat model": (lambda w: evaluate(w, "simclr", "--norm", "L3"),
                             ["--norm 'L3'", "--norm Linf or --norm L2"]),
    "zero PGD batch size": (lambda w: evaluate(w, "simclr", "--pgd-batch-size", "0"), ["--pgd-batch-size"]),
    # --device, checked before any work (the checkpoint is not a checkpoint: it is not read)
    **{f"{command}: --device {device}": on_device(command, device)
       for command in DEVICE_COMMANDS for device in ("foo", "cuda")},
    # reproduce, refused before any step runs
    "reproduce: unknown method config": (lambda w: reproduce(w, "--methods", "ncp,nope", out="r2"),
                                         ["nope.yaml", "deacl, deacl_matched, ncp"]),
    "reproduce: a repeated seed": (lambda w: reproduce(w, "--seeds", "0,1,0", out="r2"),
                                   ["--seeds repeats 0"]),
    "reproduce: teacher of another backbone": (lambda w: reproduce(w, "backbone.kwargs.cifar=false",
                                                                   out="r2"),
                                               ["--teacher", "cifar stem: True"]),
    "reproduce: --out of other settings": (lambda w: reproduce(w, "stage2:method_kwargs.lam=2"),
                                           ["other settings", "overrides"]),
    "reproduce: unknown override scope": (lambda w: reproduce(w, "stage3:max_epochs=1", out="r2"),
                                          ["stage3"]),
    "reproduce: a key reproduce sets": (lambda w: reproduce(w, "name=mine", out="r2"), ["name"]),
    # export, loggers, bundled configs, clustering options
    "export: --bn adv of a single-BN encoder": (lambda w: ["export", "--ckpt", str(w["simclr"]), "--bn",
                                                          "adv", "--out", str(w["root"] / "x")],
                                               ["single-BN", "--bn clean"]),
    "export: --head of another checkpoint": (lambda w: ["export", "--ckpt", str(w["other"]), "--head",
                                                       str(w["root"] / "simclr-eval"), "--out",
                                                       str(w["root"] / "x")], ["sha256", "--head"]),
    "W&B enabled without a project": (lambda w: [*SIMCLR, f"checkpoint.dir={w['root'] / 'runs'}",
                                                 "wandb.enabled=true"], ["wandb.project"]),
    "checkpoint frequency 0": (lambda w: [*SIMCLR, f"checkpoint.dir={w['root'] / 'runs'}",
                                          "checkpoint.frequency=0"], ["checkpoint.frequency"]),
    "unknown bundled config": (lambda w: ["pretrain", "--config", "cifar10/nope"],
                               ["cifar10/nope", "cifar10/ncp"]),
    "reproduce into a file": (lambda w: reproduce(w, out="a_file"), ["a_file is a file, not a folder"]),
    "reproduce --dry-run into a file": (lambda w: [*reproduce(w, out="a_file"), "--dry-run"],
                                        ["a_file is a file, not a folder"]),
    "a folder as the config": (lambda w: ["pretrain", "--config", str(w["root"] / "no_results")],
                               ["no_results is a folder, not a file", "YAML"]),
    "reproduce with a --config-dir that does not exist": (
        lambda w: [*reproduce(w), "--config-dir", str(w["root"] / "missing")],
        ["--config-dir", "missing does not exist", "simclr.yaml"]),
    "plot of a file, not a run folder": (lambda w: ["plot", str(w["text"])],
                                         ["text.ckpt is a file, not a folder", "run folder"]),
    "kmeans_n_init 0": (lambda w: stage2(w, "+method_kwargs.kmeans_n_init=0"), ["kmeans_n_init=0"]),
    "unknown stage-2 threat model": (lambda w: stage2(w, "+method_kwargs.norm=L3"), ["norm", "L3", "Linf, L2"]),
    "speed switch not a boolean": (lambda w: stage2(w, "+method_kwargs.channels_last=maybe"),
                                   ["channels_last='maybe'", "true or false"]),
    # files that are no checkpoint; malformed Fashion-MNIST files
    **not_a_checkpoint_rows(),
    # custom data (ImageFolders)
    "custom: no data.train_path": (lambda w: custom(w, "data.train_path=null"),
                                   ["data.dataset=custom needs data.train_path=<an ImageFolder"]),
    "custom: a missing folder": (lambda w: custom(w, "data.train_path=/nonexistent/custom"),
                                 ["data.train_path /nonexistent/custom does not exist",
                                  "pass data.train_path=<an ImageFolder"]),
    "custom: a file as folder": (lambda w: custom(w, f"data.train_path={w['root'] / 'a_file'}"),
                                 ["a_file is a file, not a folder"]),
    "custom: an empty folder": (lambda w: custom(w, f"data.train_path={custom_folder(w, 'empty')}"),
                                ["empty has no class sub-folders", "a sub-folder of its own"]),
    "custom: images without class folders": (
        lambda w: custom(w, f"data.train_path={custom_folder(w, 'flat')}"),
        ["flat has no class sub-folders (its images lie directly in it)", "a sub-folder of its own"]),
    "custom: a class folder without images": (
        lambda w: custom(w, f"data.train_path={custom_folder(w, 'hollow')}"),
        ["class folder(s) b hold no image", "add images to them or remove them"]),
    "custom: test folder of other classes": (
        lambda w: custom(w, "data.val=true", f"data.val_path={custom_folder(w, 'other')}"),
        ["data.val_path", "the class folders a, c", "same class sub-folders"]),
    "custom: validation without data.val_path": (lambda w: custom(w, "data.val=true"),
                                                 ["data.val_path", "data.val=false"]),
    "custom: no mean": (lambda w: custom(w, statistics=CUSTOM_STATISTICS[1:]),
                        ["augmentations.0.mean is missing", "+augmentations.0.mean=[0.5,0.5,0.5]"]),
    "custom: std of two numbers": (lambda w: custom(w, statistics=[CUSTOM_STATISTICS[0],
                                                                   "+augmentations.0.std=[0.2,0.2]"]),
                                   ["augmentations.0.std=[0.2, 0.2] must be 3 numbers", "std: [r, g, b]"]),
    "custom: a std of 0": (lambda w: custom(w, statistics=[CUSTOM_STATISTICS[0],
                                                           "+augmentations.0.std=[0.2,0,0.2]"]),
                           ["augmentations.0.std=[0.2, 0, 0.2]", "must be > 0"]),
    "eval --dataset custom: folders nobody recorded": (lambda w: custom_eval(w),
                                                       ["--dataset custom needs --train-path, --val-path, "
                                                        "--image-size", "pass --train-path"]),
    "eval --dataset custom: not an ImageFolder": (
        lambda w: custom_eval(w, "--train-path", str(custom_folder(w, "flat")), "--val-path",
                              str(custom_folder(w, "val")), "--image-size", "8"),
        ["--train-path", "flat has no class sub-folders"]),
    "eval --dataset custom: --image-size 0": (lambda w: custom_eval(w, "--image-size", "0"),
                                              ["--image-size must be >= 1"]),
    "eval --dataset custom with --data-dir": (lambda w: custom_eval(w, "--data-dir", str(w["root"])),
                                              ["--data-dir is for the registered datasets",
                                               "--train-path and --val-path"]),
    "eval --train-path of a registered dataset": (
        lambda w: evaluate(w, "simclr", "--train-path", str(custom_folder(w, "train"))),
        ["--train-path is for --dataset custom: drop it"]),  # digits reads no --data-dir: none suggested
    "truncated Fashion-MNIST gzip": (lambda w: fashion_mnist_eval(w, "truncated"), [IMAGES, "download"]),
    "random bytes as Fashion-MNIST labels": (lambda w: fashion_mnist_eval(w, "random"), [LABELS, "download"]),
}


def snapshot(root: Path):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is visible"))
    if case in NO_CUDA_ROWS else case for case in sorted(ROWS)])
def test_bad_input_is_one_error_line_and_changes_no_result(case, world, capsys):
    build, words = ROWS[case]
    argv = build(world)
    before = snapshot(world["root"])
    code = main(argv)
    out, err = capsys.readouterr()
    printed = (out + err).rstrip("\n").splitlines()
    assert code == 2, printed[-5:]
    assert printed[-1].startswith("error:"), printed[-5:]
    for word in words:
        assert word in printed[-1], (word, printed[-1])
    assert "Traceback" not in out + err
    after = snapshot(world["root"])
    assert {p: h for p, h in after.items() if p in before} == before


def test_the_readme_counts_the_rows():
    readme = (ROOT / "README.md").read_text()
    assert f"{len(ROWS)} bad inputs" in readme
