"""`solo-ncp export`: encoder.pt against torchvision's ResNet-18 and RobustBench's WideResNet,
solo_learn.ckpt through main_linear.py's key loops of solo-learn 1.0.2 and main, features through the chosen BN branch,
the classifier against RobustBench's clean_accuracy, `solo-ncp eval` on an export, bad input."""
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from solo_ncp.cli import main
from solo_ncp.data import get_spec
from tests.test_eval_cli import files_in, plant_dual_bn

pytestmark = pytest.mark.usefixtures("single_thread")

TEST_N = 20
EVAL = ["--dataset", "digits", "--epochs", "1", "--train-n", "256", "--test-n", str(TEST_N),
        "--batch-size", "128", "--aa-n", "2", "--aa-version", "custom", "--aa-attacks", "apgd-ce"]


def robustbench():
    """robustbench 1.1.1's modules. It imports `autoattack` and `autoattack.state` (the GitHub
    package's names); PyPI's pyautoattack 0.2.0 installs that same code as `pyautoattack`, so the
    names are aliased before robustbench is imported."""
    import pyautoattack
    import pyautoattack.state

    sys.modules.setdefault("autoattack", pyautoattack)
    sys.modules.setdefault("autoattack.state", pyautoattack.state)
    import robustbench.eval
    import robustbench.model_zoo.architectures.wide_resnet
    import robustbench.utils

    return robustbench


def solo_learn_resnet18(cifar: bool) -> nn.Module:
    """The backbone of main_linear.py in solo-learn main at 9187ea3, lines 62-69 (solo's
    `resnet18(method, **kwargs)` is torchvision's `resnet18(**kwargs)`), and in 1.0.2 at a8296434,
    lines 28 and 78-84 (torchvision's `resnet18` itself): fc = Identity and, for the dataset
    cifar10/cifar100, the CIFAR stem."""
    import torchvision

    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    if cifar:
        backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        backbone.maxpool = nn.Identity()
    return backbone


def main_linear_state_main(path: Path) -> dict:
    """main_linear.py at 9187ea3 (solo-learn main), lines 74-83, transcribed (its warning left out);
    it then loads the result with strict=False (line 84), the tests with strict=True."""
    state = torch.load(path, map_location="cpu")["state_dict"]
    for k in list(state.keys()):
        if "encoder" in k:
            state[k.replace("encoder", "backbone")] = state[k]
        if "backbone" in k:
            state[k.replace("backbone.", "")] = state[k]
        del state[k]
    return state


def main_linear_state_1_0_2(path: Path) -> dict:
    """main_linear.py at a8296434 (solo-learn 1.0.2; not in its wheel), lines 93-97, transcribed;
    it then loads the result with strict=False (line 98), the tests with strict=True."""
    state = torch.load(path, map_location="cpu")["state_dict"]
    for k in list(state.keys()):
        if "encoder" in k:
            state[k.replace("encoder.", "")] = state[k]
        del state[k]
    return state


MAIN_LINEAR_KEY_LOOPS = {"main": main_linear_state_main, "1.0.2": main_linear_state_1_0_2}


@pytest.fixture(scope="module")
def planted_dual_bn_ckpt(digits_simclr_ckpt, tmp_path_factory) -> Path:
    """`plant_dual_bn` of the ResNet-18 digits SimCLR checkpoint (adv BN statistics moved): the
    exports are torchvision's and RobustBench's ResNet-18."""
    return plant_dual_bn(digits_simclr_ckpt, tmp_path_factory.mktemp("planted") / "dual.ckpt")


def digits_test(n: int = TEST_N):
    """The first n digits test images (n, 3, 8, 8) in [0, 1] and labels: what eval tested on."""
    from solo_ncp.data import build_dataset

    test = build_dataset("digits", "test")
    return torch.stack([test[i][0] for i in range(n)]), torch.tensor([test[i][1] for i in range(n)])


def normalise(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """(x - mean) / std per channel, by hand."""
    return (x - torch.tensor(norm["mean"]).view(1, -1, 1, 1)) / torch.tensor(norm["std"]).view(1, -1, 1, 1)


def encoder_weights(ckpt: dict) -> dict:
    """The checkpoint's encoder entries (`encoder.*` on 1.0.2, `backbone.*` on main), unprefixed."""
    prefix = next(p for p in ("encoder.", "backbone.") if any(k.startswith(p) for k in ckpt["state_dict"]))
    return {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def branch_features(ckpt: Path, bn: str, x: torch.Tensor) -> torch.Tensor:
    """Features of the checkpoint's dual-BN backbone as training runs it (DualBatchNorm2d layers,
    `bn_branch`), on x normalised by hand with the checkpoint's mean/std."""
    from solo_ncp.models.backbones import BackboneSpec
    from solo_ncp.models.checkpoint import backbone_from_weights
    from solo_ncp.models.dual_bn import bn_branch, has_dual_bn

    ckpt = torch.load(ckpt, map_location="cpu", weights_only=True)
    spec = BackboneSpec(**ckpt["solo_ncp"]["backbone"])
    backbone = backbone_from_weights(spec, encoder_weights(ckpt), "test").eval()
    assert has_dual_bn(backbone)
    with torch.no_grad(), bn_branch(backbone, bn):
        return backbone(normalise(x, ckpt["solo_ncp"]["normalization"]))


def exported_features(folder: Path, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features of encoder.pt loaded with strict=True into `backbone`, normalised with export.json."""
    backbone.load_state_dict(torch.load(folder / "encoder.pt", weights_only=True), strict=True)
    norm = json.loads((folder / "export.json").read_text())["normalization"]
    with torch.no_grad():
        return backbone.eval()(normalise(x, norm))


def error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def run_eval(ckpt, out: Path, *extra: str) -> dict:
    assert main(["eval", "--ckpt", str(ckpt), "--out", str(out), *EVAL, *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def eval_adv(planted_dual_bn_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval_adv")
    run_eval(planted_dual_bn_ckpt, out, "--bn", "adv")
    return out


@pytest.fixture(scope="module")
def exported(planted_dual_bn_ckpt, eval_adv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "adv"
    assert main(["export", "--ckpt", str(planted_dual_bn_ckpt), "--bn", "adv", "--head", str(eval_adv),
                 "--out", str(out)]) == 0
    return out


def test_export_without_head_over_one_with_a_classifier_leaves_no_classifier(exported, planted_dual_bn_ckpt,
                                                                            tmp_path):
    out = tmp_path / "export"
    shutil.copytree(exported, out)
    (out / "notes.txt").write_text("my notes\n")
    assert {"classifier.pt", "model_info.json"} <= {p.name for p in out.iterdir()}
    assert main(["export", "--ckpt", str(planted_dual_bn_ckpt), "--bn", "adv", "--out", str(out),
                 "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["encoder.pt", "export.json", "model.py", "notes.txt",
                                                     "solo_learn.ckpt"]


def test_export_overwrite_stopped_midway_keeps_the_earlier_export(exported, planted_dual_bn_ckpt, tmp_path,
                                                                  monkeypatch):
    """Stopped before its last file was written: the earlier export stays whole (before, its
    classifier was removed and a new encoder.pt lay beside the old export.json)."""
    from solo_ncp.interrupt import Interrupted

    out = tmp_path / "export"
    shutil.copytree(exported, out)
    earlier = files_in(out)

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr("solo_ncp.models.export.atomic_write_text", stopped)
    assert main(["export", "--ckpt", str(planted_dual_bn_ckpt), "--bn", "clean", "--out", str(out),
                 "--overwrite"]) == 130
    assert files_in(out) == earlier


def _without_settings(folder: Path) -> None:
    record = json.loads((folder / "metrics.json").read_text())
    del record["settings"]
    (folder / "metrics.json").write_text(json.dumps(record))


def _head_of(folder: Path, change) -> None:
    """head_adv.pt replaced by `change(head)`: the Linear's state dict changed."""
    torch.save(change(torch.load(folder / "head_adv.pt", weights_only=True)), folder / "head_adv.pt")


def _nan_head(folder: Path) -> None:
    head = torch.load(folder / "head_adv.pt", weights_only=True)
    head["weight"][0, 0] = float("nan")
    torch.save(head, folder / "head_adv.pt")


@pytest.mark.parametrize("damage, says", [
    (_without_settings, "its metrics.json lacks 'settings' or holds it in another shape (damaged, or of another "
                        "solo-ncp version)"),
    (lambda folder: (folder / "head_adv.pt").write_bytes(b"PK\x03\x04"),
     "cannot read {folder}/head_adv.pt: not a PyTorch checkpoint, or a truncated or corrupt one"),
    (lambda folder: torch.save({"weight": 1}, folder / "head_adv.pt"),
     "{folder}/head_adv.pt holds int, not only tensors"),
    (_nan_head, "{folder}/head_adv.pt's weight holds NaN or inf"),
    (lambda folder: torch.save(torch.zeros(2), folder / "head_adv.pt"),
     "{folder}/head_adv.pt holds a Tensor, not a checkpoint (a dict with a state_dict): evaluate"),
    (lambda folder: (folder / "head_adv.pt").unlink(), "checkpoint {folder}/head_adv.pt does not exist: evaluate"),
    (lambda folder: _head_of(folder, lambda head: {"weight": head["weight"][:3], "bias": head["bias"][:3]}),
     "{folder}/head_adv.pt gives 3 logits, but digits, which its metrics.json evaluated, has 10 classes: the file "
     "is damaged or of another evaluation; evaluate"),
    (lambda folder: _head_of(folder, lambda head: {"weight": head["weight"][:, :7], "bias": head["bias"]}),
     "{folder}/head_adv.pt reads 7 features, but {ckpt} gives 512: the head is damaged or of another encoder"),
    (lambda folder: _head_of(folder, lambda head: {"bias": head["bias"]}),
     "{folder}/head_adv.pt holds no linear head (a 'weight' of shape (classes, features)): the file is damaged"),
], ids=["no settings", "truncated head", "no tensors", "NaN head", "a bare tensor", "missing", "3 of 10 classes",
        "another width", "no weight"])
def test_a_damaged_head_folder_is_one_error_saying_to_evaluate_again(damage, says, eval_adv, planted_dual_bn_ckpt,
                                                                     tmp_path, capsys):
    """Before: a KeyError traceback, the fix for a stage-1 checkpoint, or a NaN classifier exported; a
    head of 3 logits on digits was exported (its SA of 10 classes beside it), one of another width
    blamed the config's backbone."""
    folder = tmp_path / "eval"
    shutil.copytree(eval_adv, folder)
    damage(folder)
    assert main(["export", "--ckpt", str(planted_dual_bn_ckpt), "--bn", "adv", "--head", str(folder),
                 "--out", str(tmp_path / "export")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: --head {folder}: {says.format(folder=folder, ckpt=planted_dual_bn_ckpt)}"), line
    assert line.endswith(f"evaluate the checkpoint again with `solo-ncp eval ... --out {folder} --overwrite` "
                         "(solo-ncp export)"), line
    assert not (tmp_path / "export" / "export.json").exists()


def load_model_py(folder: Path):
    spec = importlib.util.spec_from_file_location(f"exported_model_{folder.name}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoder_is_torchvisions_resnet18_with_the_adv_branch_folded_in(exported, planted_dual_bn_ckpt):
    x, _ = digits_test(16)
    features = exported_features(exported, solo_learn_resnet18(cifar=True), x)
    adv, clean = (branch_features(planted_dual_bn_ckpt, bn, x) for bn in ("adv", "clean"))
    torch.testing.assert_close(features, adv, atol=1e-5, rtol=0)
    assert (features - clean).abs().max() > 1e-2
    keys = torch.load(exported / "encoder.pt", weights_only=True).keys()
    assert "layer1.0.bn1.weight" in keys and not any(".adv." in k or ".clean." in k for k in keys)


@pytest.mark.parametrize("host", sorted(MAIN_LINEAR_KEY_LOOPS))
def test_solo_learn_main_linear_loads_every_tensor(exported, planted_dual_bn_ckpt, host):
    """The keys each host's main_linear.py keeps are exactly the backbone's (strict=True): no BN
    tensor drops, as the 80 of a dual-BN checkpoint did, and 1.0.2's loop, which keeps only
    `encoder.*`, no longer keeps none; the CIFAR stem needs the dataset cifar10/cifar100."""
    backbone = solo_learn_resnet18(cifar=True)
    state = MAIN_LINEAR_KEY_LOOPS[host](exported / "solo_learn.ckpt")
    assert len(state) == len(backbone.state_dict()) == 120
    backbone.load_state_dict(state, strict=True)
    x, _ = digits_test(4)
    info = json.loads((exported / "export.json").read_text())
    with torch.no_grad():
        features = backbone.eval()(normalise(x, info["normalization"]))
    torch.testing.assert_close(features, branch_features(planted_dual_bn_ckpt, "adv", x), atol=1e-5, rtol=0)
    assert "cifar10 or cifar100" in info["solo_learn"]["note"]


def test_solo_learn_ckpt_stores_each_tensor_once(exported):
    """The two prefixes share storage: the file is no larger than encoder.pt plus the metadata."""
    ckpt = torch.load(exported / "solo_learn.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    for key, tensor in torch.load(exported / "encoder.pt", weights_only=True).items():
        assert torch.equal(state[f"encoder.{key}"], tensor)
        assert state[f"encoder.{key}"].data_ptr() == state[f"backbone.{key}"].data_ptr()
    size = (exported / "solo_learn.ckpt").stat().st_size
    assert size < 1.05 * (exported / "encoder.pt").stat().st_size


def test_export_json_records_branch_normalisation_and_source(exported, planted_dual_bn_ckpt):
    info = json.loads((exported / "export.json").read_text())
    ckpt = torch.load(planted_dual_bn_ckpt, map_location="cpu", weights_only=True)
    assert info["bn"] == "adv" and info["features_dim"] == 512
    assert info["normalization"] == ckpt["solo_ncp"]["normalization"]
    assert info["backbone"] == ckpt["solo_ncp"]["backbone"]
    assert info["source"]["sha256"] == hashlib.sha256(planted_dual_bn_ckpt.read_bytes()).hexdigest()


def test_select_k_and_poc_on_an_export_record_the_sha256_of_its_encoder(exported, tmp_path,
                                                                       planted_dual_bn_ckpt):
    """An export folder as --ckpt: both record the digest of the encoder.pt they read (hashlib's,
    here), not a hash of the folder, which failed with "Is a directory" after all their work; poc
    also the checkpoint exported (report knows a poc of it and one of the export as one encoder)."""
    digest = hashlib.sha256((exported / "encoder.pt").read_bytes()).hexdigest()
    assert main(["select-k", "--ckpt", str(exported), "--dataset", "digits", "--train-n", "256",
                 "--k-min", "2", "--k-max", "3", "--k-step", "1", "--out", str(tmp_path / "k")]) == 0
    assert json.loads((tmp_path / "k" / "k.json").read_text())["ckpt_sha256"] == digest
    assert main(["poc", "--ckpt", str(exported), "--dataset", "digits", "--k", "3", "--train-n", "256",
                 "--test-n", str(TEST_N), "--epochs", "1", "--out", str(tmp_path / "poc")]) == 0
    checkpoint = json.loads((tmp_path / "poc" / "poc.json").read_text())["settings"]["checkpoint"]
    source = {"path": str(planted_dual_bn_ckpt),
              "sha256": hashlib.sha256(planted_dual_bn_ckpt.read_bytes()).hexdigest()}
    assert checkpoint == {"path": str(exported), "sha256": digest, "exported_from": source}


def test_robustbench_clean_accuracy_of_the_classifier_is_evals_sa(exported, eval_adv, planted_dual_bn_ckpt):
    """Same images, same batches (eval's --batch-size) and the same float operations as eval: the
    count of correct images is exact. Each prediction is that of the dual-BN encoder through its
    adv branch followed by eval's saved head."""
    record = json.loads((eval_adv / "metrics.json").read_text())
    model = load_model_py(exported).load_exported_classifier(exported)
    x, y = digits_test()
    accuracy = robustbench().eval.clean_accuracy(model, x, y, batch_size=128, device=torch.device("cpu"))
    assert round(accuracy * TEST_N) == round(record["metrics"]["sa"] * TEST_N / 100)
    assert record["metrics"]["sa_n"] == TEST_N
    head = nn.Linear(512, 10)
    head.load_state_dict(torch.load(eval_adv / "head_adv.pt", weights_only=True))
    with torch.no_grad():
        expected = head(branch_features(planted_dual_bn_ckpt, "adv", x)).argmax(1)
        assert torch.equal(model(x).argmax(1), expected)


def test_model_py_needs_only_torch_and_torchvision(exported, eval_adv, planted_dual_bn_ckpt, tmp_path):
    """model.py, in a process where `import solo_ncp` fails, gives the logits of the dual-BN
    encoder through its adv branch followed by eval's saved head."""
    x, _ = digits_test(8)
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch; sys.modules['solo_ncp'] = None; sys.path.insert(0, sys.argv[1]); "
            "import model; x = torch.load(sys.argv[2]); "
            "torch.save({'logits': model.load_exported_classifier(sys.argv[1])(x).detach(), "
            "'features': model.load_exported_encoder(sys.argv[1])(x).detach()}, sys.argv[3])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-I", "-c", code, str(exported), str(tmp_path / "x.pt"),
                    str(tmp_path / "out.pt")], check=True, env=env)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    head = nn.Linear(512, 10)
    head.load_state_dict(torch.load(eval_adv / "head_adv.pt", weights_only=True))
    features = branch_features(planted_dual_bn_ckpt, "adv", x)
    torch.testing.assert_close(out["features"], features, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], head(features), atol=1e-5, rtol=0)


def test_model_info_loads_in_robustbenchs_model_info_and_bibtex_helper(exported, eval_adv, tmp_path,
                                                                         monkeypatch):
    """RobustBench's own readers: `ModelInfo(**json)` (every key, nothing left out) and
    `get_leaderboard_bibtex` over its zoo's tree (model_info/<dataset>/<threat model>/*.json, read
    from the working directory), which skips a model without a paper and crashed on venue null."""
    info = json.loads((exported / "model_info.json").read_text())
    record = json.loads((eval_adv / "metrics.json").read_text())
    loaded = robustbench().utils.ModelInfo(**info)
    assert (loaded.eps, loaded.architecture, loaded.venue) == ("8/255", "ResNet-18", "N/A")
    assert info["clean_acc"] == f"{record['metrics']['sa']:.2f}"
    assert info["autoattack_acc"] == f"{record['metrics']['aa']:.2f}"
    assert info["dataset"] == "digits" and info["number_forward_passes"] == 1
    export = json.loads((exported / "export.json").read_text())
    assert export["classifier"]["threat_model"] == "Linf"
    assert "model_info/digits/Linf/" in export["classifier"]["robustbench"]
    zoo = tmp_path / "model_info" / "cifar10" / "Linf"
    zoo.mkdir(parents=True)
    shutil.copy(exported / "model_info.json", zoo / "Solo2026NCP.json")
    monkeypatch.chdir(tmp_path)
    assert robustbench().utils.get_leaderboard_bibtex("cifar10", "Linf") == (set(), "")


@pytest.mark.parametrize("target", ["", "encoder.pt", "solo_learn.ckpt", "classifier.pt"])
def test_eval_of_the_export_equals_eval_of_the_checkpoint(exported, eval_adv, target, tmp_path,
                                                         planted_dual_bn_ckpt):
    """`--bn both` (the default) on an export of the adv branch evaluates that branch once, as
    `--bn adv` on the checkpoint did, with the same numbers and the same encoder record. Its
    classifier.pt is read as its folder: its state dict records no normalisation, and it was read
    as a plain solo-learn checkpoint (--dataset's statistics assumed, the method unnamed). The
    record names the checkpoint exported (report knows the two evaluations as one encoder)."""
    record = run_eval(exported / target, tmp_path)
    reference = json.loads((eval_adv / "metrics.json").read_text())
    untimed = lambda branches: [{k: v for k, v in b.items() if k != "timings_s"} for b in branches]
    assert untimed(record["branches"]) == untimed(reference["branches"])
    assert record["encoder"] == reference["encoder"]
    weights = exported / (target if target == "solo_learn.ckpt" else "encoder.pt")
    assert record["checkpoint"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    source = {"path": str(planted_dual_bn_ckpt),
              "sha256": hashlib.sha256(planted_dual_bn_ckpt.read_bytes()).hexdigest()}
    assert record["checkpoint"]["exported_from"] == source


def test_single_bn_checkpoint_and_an_aff_classifier(digits_simclr_ckpt, tmp_path):
    """A stage-1 checkpoint exports without --bn; with the folder of an AFF eval the classifier is
    AFF's fine-tuned encoder and head, and RobustBench's accuracy is eval's SA."""
    evaluated = tmp_path / "aff"
    assert main(["eval", "--ckpt", str(digits_simclr_ckpt), "--out", str(evaluated), "--mode", "aff",
                 "--dataset", "digits", "--epochs", "1", "--train-n", "32", "--test-n", str(TEST_N),
                 "--batch-size", "32", "--aa-n", "0"]) == 0
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(digits_simclr_ckpt), "--head", str(evaluated),
                 "--out", str(out)]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["bn"] is None and info["classifier"]["encoder"].endswith("encoder.pt")

    ckpt = torch.load(digits_simclr_ckpt, map_location="cpu", weights_only=True)
    stage1 = solo_learn_resnet18(cifar=True)
    stage1.load_state_dict(encoder_weights(ckpt))
    x, y = digits_test()
    with torch.no_grad():
        expected = stage1.eval()(normalise(x, ckpt["solo_ncp"]["normalization"]))
    features = exported_features(out, solo_learn_resnet18(cifar=True), x)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)

    record = json.loads((evaluated / "metrics.json").read_text())
    accuracy = robustbench().eval.clean_accuracy(load_model_py(out).load_exported_classifier(out), x, y,
                                                 batch_size=32, device=torch.device("cpu"))
    assert round(accuracy * TEST_N) == round(record["metrics"]["sa"] * TEST_N / 100)


def test_wide_resnet_folds_and_loads_into_robustbenchs_wide_resnet(tmp_path):
    """Folding is generic over module types: a tiny dual-BN WRN-28-1 whose branches differ exports
    through its clean branch and loads with strict=True into RobustBench's WideResNet (fc = Identity)."""
    from solo_ncp.models.backbones import BackboneSpec, build_backbone
    from solo_ncp.models.dual_bn import convert_dual_bn

    torch.manual_seed(0)
    spec = BackboneSpec("wide_resnet28_10", widen_factor=1)
    state = convert_dual_bn(build_backbone(spec)).state_dict()
    for value in state.values():
        if value.dim() == 1:  # each branch's BN weight, bias and running statistics, drawn apart
            value.copy_(torch.rand(value.shape) + 0.5)
    norm = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    ckpt = tmp_path / "wrn.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()},
                "solo_ncp": {"backbone": spec.to_dict(), "normalization": norm, "method": "ncp"}}, ckpt)
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(ckpt), "--bn", "clean", "--out", str(out)]) == 0

    reference = robustbench().model_zoo.architectures.wide_resnet.WideResNet(depth=28, widen_factor=1)
    reference.fc = nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    features = exported_features(out, reference, x)
    clean, adv = (branch_features(ckpt, bn, x) for bn in ("clean", "adv"))
    torch.testing.assert_close(features, clean, atol=1e-5, rtol=0)
    assert (features - adv).abs().max() > 1e-2
    with torch.no_grad():
        torch.testing.assert_close(load_model_py(out).load_exported_encoder(out)(x), clean, atol=1e-5, rtol=0)
    assert json.loads((out / "export.json").read_text())["bn"] == "clean"


def test_bad_inputs_end_with_one_error_line(exported, eval_adv, planted_dual_bn_ckpt, digits_simclr_ckpt,
                                            tmp_path, capsys):
    rows = [
        (["export", "--ckpt", str(digits_simclr_ckpt), "--bn", "adv", "--out", str(tmp_path / "a")],
         "single-BN encoder: it has no adv branch; pass --bn clean or leave --bn out"),
        (["export", "--ckpt", str(digits_simclr_ckpt), "--head", str(eval_adv), "--out", str(tmp_path / "b")],
         "sha256"),
        (["export", "--ckpt", str(digits_simclr_ckpt), "--out", str(tmp_path / "e"), "--head", str(tmp_path)],
         f"no metrics.json in {tmp_path}: pass the --out folder of a `solo-ncp eval` that finished"),
        (["export", "--ckpt", str(planted_dual_bn_ckpt), "--bn", "clean", "--head", str(eval_adv),
          "--out", str(tmp_path / "c")], "evaluated BN branch(es) ['adv'], not the clean branch"),
        (["eval", "--ckpt", str(exported), "--bn", "clean", "--out", str(tmp_path / "d"), *EVAL],
         "exported through its adv BN branch only, not clean: pass --bn adv"),
        (["export", "--ckpt", str(digits_simclr_ckpt), "--out", str(digits_simclr_ckpt.parent)],
         f"--out {digits_simclr_ckpt.parent} is a training run's folder (last.ckpt): `solo-ncp export` does not "
         "write into it; choose another --out"),
    ]
    for argv, message in rows:
        assert main(argv) == 2
        line = error_line(capsys)
        assert line.startswith("error:") and message in line, line
    assert not any((tmp_path / name).exists() for name in "abce")


def test_an_export_of_a_partial_autoattack_says_what_model_info_holds(planted_dual_bn_ckpt, eval_adv, tmp_path,
                                                                     capsys):
    """The module's evaluations run AutoAttack custom (APGD-CE) on 2 of the TEST_N images: not
    RobustBench's protocol, which the footnote and a warning say instead of passing it off as one."""
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(planted_dual_bn_ckpt), "--bn", "adv", "--head", str(eval_adv),
                 "--out", str(out)]) == 0
    attack = "AutoAttack (custom: apgd-ce) on the first 2"
    assert (f"[solo-ncp] warning: model_info.json's numbers are clean accuracy on {TEST_N} test images and "
            f"{attack}: RobustBench's zoo lists standard AutoAttack on the whole test set") in capsys.readouterr().out
    footnote = json.loads((out / "model_info.json").read_text())["footnote"]
    assert footnote == f"solo-ncp eval: clean accuracy on the first {TEST_N} test images, {attack}"


@pytest.mark.parametrize("aa, version, attacks, aa_n, caveat", [
    (40.0, "standard", None, 64, None),
    (40.0, "standard", None, 16, "AutoAttack (standard) on the first 16"),
    (40.0, "custom", ["apgd-ce", "apgd-t"], 64, "AutoAttack (custom: apgd-ce, apgd-t) on the first 64"),
    (None, "standard", None, 0, "AutoAttack not run"),
])
def test_robustbench_caveat_is_none_only_for_standard_autoattack_on_every_image(aa, version, attacks, aa_n,
                                                                               caveat):
    from solo_ncp.models.export import robustbench_caveat

    record = {"settings": {"aa": {"version": version, "attacks": attacks}}}
    branch = {"metrics": {"sa": 80.0, "sa_n": 64, "aa": aa, "aa_n": aa_n}}
    found = robustbench_caveat(record, branch)
    assert found == caveat if caveat is None else f"on 64 test images and {caveat}: RobustBench" in found


def test_an_evaluation_of_an_export_reports_the_ablation_settings_of_its_checkpoint(digits_ncp_ckpt, tmp_path):
    """K, strategy, neighbour rank, K's source and the other stage-2 settings travel in export.json:
    report's ablation tables read them from metrics.json, which had them as None for an export."""
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(digits_ncp_ckpt), "--bn", "adv", "--out", str(out)]) == 0
    meta = torch.load(digits_ncp_ckpt, weights_only=True)["solo_ncp"]
    records = [run_eval(ckpt, tmp_path / f"eval-{name}", "--bn", "adv")
               for name, ckpt in (("ckpt", digits_ncp_ckpt), ("export", out))]
    expected = {"k": 10, "strategy": "iii", "neighbor_rank": 2, "k_source": "k", "lam": 6.0, "norm": "Linf",
                "eps": 8 / 255, "alpha": 2 / 255, "steps": 5, "assign": "nearest", "dual_bn": True,
                "cluster_bn": "clean"}  # zoo_configs/fashionmnist/ncp.yaml with method_kwargs.k=10
    assert meta["k"] == 10 and meta["perturbation"] == {key: value for key, value in expected.items() if key != "k"}
    assert records[0]["encoder"] == records[1]["encoder"] == expected
    assert records[0]["metrics"]["sa"] == records[1]["metrics"]["sa"]


def test_a_plain_checkpoints_export_records_the_dataset_given(digits_simclr_ckpt, tmp_path):
    """A solo-learn checkpoint without solo-ncp metadata: --dataset names the dataset it was trained
    on (its statistics are exported); export.json recorded dataset null."""
    checkpoint = torch.load(digits_simclr_ckpt, weights_only=True)
    checkpoint.pop("solo_ncp")
    torch.save(checkpoint, tmp_path / "plain.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "plain.ckpt"), "--dataset", "digits", "--out",
                 str(tmp_path / "export")]) == 0
    info = json.loads((tmp_path / "export" / "export.json").read_text())
    assert info["dataset"] == "digits"
    assert info["normalization"]["mean"] == pytest.approx(list(get_spec("digits").mean))


def test_an_exported_encoder_is_a_teacher_through_the_branch_it_holds(exported, tmp_path, capsys):
    """encoder.pt of an adv-branch export as method_kwargs.teacher_ckpt: refused before with "pass
    --bn adv", an option train does not have. Stage 2 starts from exactly its weights."""
    from solo_ncp.models.checkpoint import read_checkpoint
    from tests.conftest import train_stage2

    teacher = exported / "encoder.pt"
    assert train_stage2(tmp_path, teacher, "name=t", "max_epochs=1", "limit_train_batches=1") == 0, error_line(capsys)
    state = read_checkpoint(tmp_path / "t" / "last.ckpt")["state_dict"]
    held = {key[len("teacher.backbone."):]: value for key, value in state.items() if key.startswith("teacher.backbone.")}
    weights = torch.load(teacher, weights_only=True)
    assert held.keys() == weights.keys() and all(torch.equal(held[key], weights[key]) for key in weights)
