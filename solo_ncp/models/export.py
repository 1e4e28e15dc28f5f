"""An encoder, and the classifier `solo-ncp eval` trained on it, as plain PyTorch files that need
neither solo-ncp nor Lightning (`write_export`). An export folder holds:

- encoder.pt: the backbone's state dict with one BatchNorm per layer: a dual-BN encoder's chosen
  branch folded in (`load_encoder` collapses it with `collapse_dual_bn`, for any module type), so
  `layer1.0.bn1.adv.weight` becomes `layer1.0.bn1.weight`. Its keys are torchvision's and load with
  strict=True into torchvision's ResNet with `fc = Identity` and, for the CIFAR stem, solo-learn's
  conv1 / maxpool (`build_exported_encoder`), or into the WideResNet of
  `solo_ncp.models.wide_resnet` (RobustBench's names);
- solo_learn.ckpt: {"state_dict": {"encoder.<key>": tensor, ..., "backbone.<key>": tensor, ...},
  "solo_ncp": metadata}: each tensor under both prefixes (stored once: the keys share it), so the
  `pretrained_feature_extractor` key loops of `main_linear.py` in solo-learn 1.0.2 (keeps
  `encoder.*`) and in main (renames `encoder.*` to `backbone.*`, then keeps `backbone.*`; the
  `encoder.` keys come first for that) both load every tensor; itself a solo-ncp checkpoint;
- model.py: `build_exported_encoder`, `build_exported_classifier` and their loaders, needing only
  torch and torchvision (`standalone_source`);
- export.json: solo-ncp's metadata (`EXPORT_META_KEYS`: backbone, normalisation of [0, 1] inputs,
  BN branch, source checkpoint and its sha256, K and the NCP perturbation) and how to use the files;
- with an eval folder: classifier.pt, the state dict of [0, 1] images -> Normalize -> encoder ->
  the eval's linear head (logits), and model_info.json in the shape of RobustBench's model zoo.
"""
import inspect
import json
from collections import OrderedDict
from functools import reduce
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from solo_ncp.io import (
    is_whole,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    staged_outputs,
)
from solo_ncp.models import wide_resnet
from solo_ncp.models.backbones import WIDE_RESNETS, BackboneSpec, features_dim, resnet_encoder
from solo_ncp.models.checkpoint import (
    CLASSIFIER_FILE,
    EXPORT_INFO,
    EXPORT_META_KEYS,
    EXPORTED_ENCODER,
    META_KEY,
    CheckpointError,
    LoadedEncoder,
    load_weights,
    nonfinite_keys,
    read_checkpoint,
    source_record,
)
from solo_ncp.models.normalize import Normalize
from solo_ncp.models.wide_resnet import WideResNet
from solo_ncp.run_files import encoder_sha256

FORMAT = 1
SOLO_LEARN_FILE = "solo_learn.ckpt"
MODEL_FILE = "model.py"
MODEL_INFO_FILE = "model_info.json"
UNPUBLISHED = "N/A"
"""RobustBench's venue of a model without a paper (its bibtex helper skips it)."""
SOLO_LEARN_PREFIXES = ("encoder.", "backbone.")
"""solo_learn.ckpt's key prefixes: what solo-learn 1.0.2's main_linear.py keeps, then main's."""
SOLO_LEARN_CIFAR_DATASETS = ("cifar10", "cifar100")
"""The data.dataset values for which solo-learn main's main_linear.py builds the CIFAR stem."""
INPUTS = "(B, 3, H, W) float RGB images in [0, 1]"
EXPORT_FILES = (EXPORTED_ENCODER, SOLO_LEARN_FILE, MODEL_FILE, CLASSIFIER_FILE, MODEL_INFO_FILE, EXPORT_INFO)
"""Every file `write_export` may write into an export folder."""


def build_exported_encoder(info: dict) -> nn.Module:
    """The backbone export.json's `info` describes, untrained: (B, 3, H, W) normalised images ->
    (B, info["features_dim"]) features; encoder.pt loads into it with strict=True."""
    backbone = info["backbone"]
    if backbone["name"] in WIDE_RESNETS:
        return WideResNet(WIDE_RESNETS[backbone["name"]][0], backbone["widen_factor"])
    return resnet_encoder(backbone["name"], backbone["cifar"])


def build_exported_classifier(info: dict) -> nn.Sequential:
    """[0, 1] images (B, 3, H, W) -> logits (B, num_classes): `normalize` (info["normalization"]),
    `backbone`, `head` (a Linear); classifier.pt loads into it with strict=True."""
    norm = info["normalization"]
    return nn.Sequential(OrderedDict(
        normalize=Normalize(norm["mean"], norm["std"]),
        backbone=build_exported_encoder(info),
        head=nn.Linear(info["features_dim"], info["classifier"]["num_classes"]),
    ))


def load_exported_encoder(folder) -> nn.Sequential:
    """[0, 1] images (B, 3, H, W) -> features (B, D) of an export folder, in eval mode:
    `normalize`, then `backbone` holding encoder.pt."""
    folder = Path(folder)
    info = json.loads((folder / EXPORT_INFO).read_text())
    backbone = build_exported_encoder(info)
    backbone.load_state_dict(torch.load(folder / EXPORTED_ENCODER, map_location="cpu", weights_only=True))
    norm = info["normalization"]
    encoder = nn.Sequential(OrderedDict(normalize=Normalize(norm["mean"], norm["std"]), backbone=backbone))
    return encoder.eval()


def load_exported_classifier(folder) -> nn.Sequential:
    """[0, 1] images (B, 3, H, W) -> logits (B, num_classes) of an export folder written with an
    eval folder, in eval mode: the model RobustBench and AutoAttack expect."""
    folder = Path(folder)
    model = build_exported_classifier(json.loads((folder / EXPORT_INFO).read_text()))
    model.load_state_dict(torch.load(folder / CLASSIFIER_FILE, map_location="cpu", weights_only=True))
    return model.eval()


STANDALONE = (Normalize, resnet_encoder, build_exported_encoder, build_exported_classifier,
              load_exported_encoder, load_exported_classifier)
STANDALONE_CONSTANTS = ("EXPORT_INFO", "EXPORTED_ENCODER", "CLASSIFIER_FILE", "WIDE_RESNETS")
STANDALONE_HEADER = '''"""Builders of the models in this export folder (written by `solo-ncp export`);
needs only torch and torchvision:

    from model import load_exported_classifier, load_exported_encoder
    classifier = load_exported_classifier(FOLDER)  # [0, 1] images -> logits (with --head)
    encoder = load_exported_encoder(FOLDER)  # [0, 1] images -> features
"""
import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
'''


def standalone_source() -> str:
    """model.py: STANDALONE_HEADER, the constants and solo_ncp.models.wide_resnet it uses, then the
    source of each STANDALONE object (the code solo-ncp itself runs, not a copy to keep in step)."""
    constants = "\n".join(f"{name} = {globals()[name]!r}" for name in STANDALONE_CONSTANTS)
    sources = [(wide_resnet.__name__, inspect.getsource(wide_resnet))]
    sources += [(obj.__module__, inspect.getsource(obj)) for obj in STANDALONE]
    parts = [f"# {module}\n{source}" for module, source in sources]
    return "\n\n".join([STANDALONE_HEADER, constants] + parts)


def architecture(spec: BackboneSpec) -> str:
    """RobustBench's architecture label: "ResNet-18", "WideResNet-28-10"."""
    if spec.name in WIDE_RESNETS:
        return f"WideResNet-{WIDE_RESNETS[spec.name][0]}-{spec.widen_factor}"
    return f"ResNet-{spec.name[len('resnet'):]}"


def solo_learn_usage(spec: BackboneSpec) -> Dict[str, str]:
    """How main_linear.py of solo-learn main and of 1.0.2 reads solo_learn.ckpt, and what each builds
    of `spec`."""
    if spec.name in WIDE_RESNETS:
        note = (f"solo-learn has no {spec.name} (main's wide_resnet28w* is FixMatch's): "
                "solo_ncp.methods.register_backbones adds it to main's backbones; 1.0.2's "
                "main_linear.py builds only its own (--encoder resnet18, resnet50, vit_*, swin_*)")
    elif spec.cifar:
        note = ("CIFAR stem: main_linear.py builds it only for data.dataset (1.0.2: --dataset) "
                f"{' or '.join(SOLO_LEARN_CIFAR_DATASETS)}")
    else:
        note = ("ImageNet stem: main_linear.py builds it for every data.dataset (1.0.2: --dataset) "
                f"but {' and '.join(SOLO_LEARN_CIFAR_DATASETS)}")
    return {"checkpoint": SOLO_LEARN_FILE,
            "main_linear": (f"backbone.name={spec.name} "
                            f"pretrained_feature_extractor=<folder>/{SOLO_LEARN_FILE}"),
            "main_linear_1.0.2": (f"--encoder {spec.name} "
                                  f"--pretrained_feature_extractor <folder>/{SOLO_LEARN_FILE}"),
            "note": note}


def solo_learn_state_dict(backbone: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """solo_learn.ckpt's state dict: every tensor of `backbone` as `encoder.<key>` (solo-learn 1.0.2),
    then again as `backbone.<key>` (main), in that order."""
    return OrderedDict((f"{prefix}{k}", v) for prefix in SOLO_LEARN_PREFIXES for k, v in backbone.items())


def export_info(encoder: LoadedEncoder) -> Dict:
    """export.json's content for `encoder` (no classifier yet): EXPORT_META_KEYS, the feature
    width, the files and their use."""
    meta = {
        "format": FORMAT,
        "method": encoder.meta.get("method"),
        "dataset": encoder.meta.get("dataset"),
        "bn": encoder.bn,
        "backbone": encoder.backbone.to_dict(),
        "normalization": {k: list(v) for k, v in encoder.normalization.items()},
        "source": source_record(encoder),
        "k": encoder.meta.get("k"),
        "perturbation": encoder.meta.get("perturbation"),
    }
    return {
        **meta,
        "features_dim": features_dim(encoder.model.backbone),
        "inputs": f"{INPUTS}; the encoder expects (x - mean) / std per channel (normalization)",
        "files": {"encoder": EXPORTED_ENCODER, "solo_learn": SOLO_LEARN_FILE, "builder": MODEL_FILE},
        "torchvision": (f"{EXPORTED_ENCODER} loads with strict=True into {MODEL_FILE}'s "
                        f"build_exported_encoder(export.json)"),
        "solo_learn": solo_learn_usage(encoder.backbone),
    }


def evaluated_branch(record: Mapping, eval_dir: Path, info: Mapping) -> Dict:
    """The entry of eval's metrics.json `record` for the exported encoder; ValueError if the eval
    read another encoder (`encoder_sha256`: an export is the checkpoint it was exported from) or
    left the exported BN branch out, saved no head, or lacks a field the export reads
    (`EVALUATION_FIELDS`, `BRANCH_FIELDS`) or holds it in another type."""
    check_fields(record, (("checkpoint", _is_object, "an object"),), eval_dir)
    evaluated, source = encoder_sha256(record["checkpoint"]), encoder_sha256(info["source"])
    if evaluated != source:
        raise ValueError(
            f"--head {eval_dir} evaluated {record['checkpoint'].get('path')} (sha256 {str(evaluated)[:12]}), not "
            f"--ckpt {info['source']['path']} (sha256 {source[:12]}; of an export, those of the checkpoint it was "
            "exported from): pass the checkpoint that eval read, or evaluate this one with `solo-ncp eval --ckpt`"
        )
    branches = record.get("branches") or []
    index = next((i for i, b in enumerate(branches) if b.get("bn") == info["bn"]), None)
    if index is None:
        bns = [b.get("bn") for b in branches]
        exported = f"the {info['bn']} branch" if info["bn"] else "a single-BN encoder"
        raise ValueError(f"--head {eval_dir} evaluated BN branch(es) {bns}, not {exported}: pass the "
                         "--bn that eval tested, or evaluate this branch with `solo-ncp eval --bn`")
    branch = branches[index]
    files = branch.get("files", {})
    if isinstance(files, dict) and "head" not in files:
        raise ValueError(f"--head {eval_dir}: its metrics.json names no head file (an older solo-ncp "
                         "eval): evaluate the checkpoint again with `solo-ncp eval`")
    check_fields(branch, BRANCH_FIELDS, eval_dir, f"branches[{index}].")
    check_fields(record, EVALUATION_FIELDS, eval_dir)
    return branch


ABSENT = object()
"""A field that metrics.json leaves out, as `check_fields` hands it to a field's test."""


def _is_object(value: object) -> bool:
    return isinstance(value, dict)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and value != ""


EVALUATION_FIELDS = (
    ("settings", _is_object, "an object"),
    ("settings.aa", _is_object, "an object"),
    ("settings.aa.eps", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    ("settings.aa.version", _is_name, "a name (a string)"),
    ("settings.aa.attacks", lambda v: v in (ABSENT, None) or isinstance(v, list) and all(map(_is_name, v)),
     "a list of attack names or null"),
)
"""(field, test, what it must be) of eval's metrics.json that model_info.json reads, each parent
before its entries; a field whose test passes ABSENT may be left out."""
BRANCH_FIELDS = (
    ("files", _is_object, "an object"),
    ("files.head", _is_name, "a file name (a string)"),
    ("files.encoder", lambda v: v is ABSENT or _is_name(v), "a file name (a string)"),
    ("metrics.sa_n", lambda v: is_whole(v, 0), "a whole number of test images"),
)
"""EVALUATION_FIELDS of the evaluated branch (`evaluated_branch`): the files classifier.pt is made
of, the test images model_info.json names."""


def check_fields(record: Mapping, fields, eval_dir: Path, prefix: str = "") -> None:
    """ValueError naming metrics.json of --head `eval_dir` and the first of `fields` ((dotted field,
    test, what it must be), parents first; `prefix` names `record` within the file, e.g.
    "branches[0].") that `record` lacks, or holds in a value its test refuses."""
    for field, test, expected in fields:
        *parents, key = field.split(".")
        value = reduce(lambda parent, name: parent[name], parents, record).get(key, ABSENT)
        if value is ABSENT and not test(value):
            raise damaged_evaluation(eval_dir, f"lacks '{prefix}{field}' or holds it in another shape")
        if not test(value):
            raise damaged_evaluation(eval_dir, f"holds {prefix}{field} {json.dumps(value)}, not {expected}")


def damaged_evaluation(eval_dir: Path, problem: str) -> ValueError:
    """The error for a metrics.json of --head `eval_dir` the export cannot read: `problem` ("lacks
    'settings' or ..."), and the fix."""
    return ValueError(f"--head {eval_dir}: its metrics.json {problem} (damaged, or of another solo-ncp version): "
                      f"evaluate the checkpoint again with `solo-ncp eval ... --out {eval_dir} --overwrite`")


def classifier_state(encoder: LoadedEncoder, branch: Mapping, eval_dir: Path) -> Dict[str, torch.Tensor]:
    """build_exported_classifier's state: the encoder (or AFF's fine-tuned copy, eval's
    encoder_<bn>.pt) under `normalize.` / `backbone.`, the eval's Linear under `head.`."""
    files = branch["files"]
    body = read_eval_state(eval_dir, files["encoder"]) if "encoder" in files else encoder.model.state_dict()
    head = read_eval_state(eval_dir, files["head"])
    return OrderedDict([*body.items(), *((f"head.{k}", v) for k, v in head.items())])


def read_eval_state(eval_dir: Path, name: str) -> Dict[str, torch.Tensor]:
    """A state dict eval saved in `eval_dir` (head_<bn>.pt, AFF's encoder_<bn>.pt): tensors, every
    float one finite; ValueError naming the file and saying to evaluate again."""
    path = eval_dir / name
    again = f"evaluate the checkpoint again with `solo-ncp eval ... --out {eval_dir} --overwrite`"
    try:
        state = read_checkpoint(path)
    except CheckpointError as err:
        raise ValueError(f"--head {eval_dir}: {err.problem}: {again}") from None
    kinds = {type(value).__name__ for value in state.values() if not isinstance(value, torch.Tensor)}
    if kinds:
        raise ValueError(f"--head {eval_dir}: {path} holds {', '.join(sorted(kinds))}, not only tensors: "
                         f"{again}")
    bad = nonfinite_keys(state)
    if bad:
        raise ValueError(f"--head {eval_dir}: {path}'s {bad[0]} holds NaN or inf: {again}")
    return state


def eps_label(eps: float, norm: str) -> str:
    """RobustBench's eps: in L-inf "8/255" for a multiple of 1/255, else (and in L2) the number."""
    steps = round(eps * 255)
    return f"{steps}/255" if norm == "Linf" and abs(eps * 255 - steps) < 1e-6 else f"{eps:g}"


def threat_model(record: Mapping) -> str:
    """The threat model (RobustBench's name) of eval's metrics.json `record`: "Linf" for files
    written before L2 existed."""
    return record.get("threat_model", "Linf")


def model_info(info: Mapping, record: Mapping, branch: Mapping) -> Dict:
    """RobustBench's model_info entry: exactly `robustbench.utils.ModelInfo`'s fields, as its zoo's
    JSON files (numbers as strings with 2 decimals, `venue` "N/A" for an unpublished model, which its
    bibtex helper skips); the threat model is the zoo's folder (`model_info_path`)."""
    metrics, settings = branch["metrics"], record["settings"]
    bn = f" ({branch['bn']} BN)" if branch["bn"] else ""
    trained_on = info["dataset"]
    return {
        "link": None,
        "name": f"solo-ncp {record['method']}{bn}, {record['mode'].upper()} {record['head']} head",
        "authors": None,
        "additional_data": None if trained_on is None else trained_on != record["dataset"],
        "number_forward_passes": 1,
        "dataset": record["dataset"],
        "venue": UNPUBLISHED,
        "architecture": architecture(BackboneSpec(**info["backbone"])),
        "eps": eps_label(settings["aa"]["eps"], threat_model(record)),
        "clean_acc": f"{metrics['sa']:.2f}",
        "reported": None,
        "autoattack_acc": None if metrics["aa"] is None else f"{metrics['aa']:.2f}",
        "footnote": (f"solo-ncp eval: clean accuracy on the first {metrics['sa_n']} test images, "
                     f"{_attack_text(record, branch)}"),
    }


def _attack_text(record: Mapping, branch: Mapping) -> str:
    """"AutoAttack (standard) on the first N" / "AutoAttack (custom: apgd-ce) on ..." / "AutoAttack not run"."""
    aa, n = record["settings"]["aa"], branch["metrics"]["aa_n"]
    if not n or branch["metrics"]["aa"] is None:
        return "AutoAttack not run"
    attacks = f": {', '.join(aa['attacks'])}" if aa.get("attacks") else ""
    return f"AutoAttack ({aa['version']}{attacks}) on the first {n}"


def robustbench_caveat(record: Mapping, branch: Mapping) -> Optional[str]:
    """Why a model_info entry is not what RobustBench's zoo lists (standard AutoAttack on every test
    image the clean accuracy counts): another AutoAttack version, fewer images, or none; None if it is."""
    metrics, version = branch["metrics"], record["settings"]["aa"]["version"]
    if metrics["aa"] is not None and version == "standard" and metrics["aa_n"] == metrics["sa_n"]:
        return None
    return (f"model_info.json's numbers are clean accuracy on {metrics['sa_n']} test images and "
            f"{_attack_text(record, branch)}: RobustBench's zoo lists standard AutoAttack on the whole test set "
            "(eval without --test-n, --aa-n and --aa-version)")


def model_info_path(record: Mapping) -> str:
    """Where RobustBench's zoo keeps model_info.json: model_info/<dataset>/<threat model>/<name>.json."""
    return f"model_info/{record['dataset']}/{threat_model(record)}/<model name>.json"


def write_export(encoder: LoadedEncoder, out, evaluation: Optional[Mapping] = None,
                 eval_dir: Optional[Path] = None, num_classes: Optional[int] = None) -> Dict:
    """Writes the export folder `out` for `encoder` (a single-BN model: `load_encoder` folded the
    chosen branch in) and, given eval's metrics.json `evaluation` of `eval_dir`, its classifier,
    whose head must give `num_classes` logits (the evaluated dataset's classes; None: unknown).
    Every check runs before the files of an earlier export there (EXPORT_FILES) are removed and the
    first is written; export.json comes last. Returns its content."""
    out = Path(out)
    info = export_info(encoder)
    backbone = OrderedDict((k, v.detach().cpu()) for k, v in encoder.model.backbone.state_dict().items())
    files = {EXPORTED_ENCODER: backbone,
             SOLO_LEARN_FILE: {"state_dict": solo_learn_state_dict(backbone),
                               META_KEY: {k: info[k] for k in EXPORT_META_KEYS}}}
    load_weights(build_exported_encoder(info), backbone, f"folded encoder of {encoder.path}")
    if evaluation is not None:
        branch = evaluated_branch(evaluation, eval_dir, info)
        try:
            robustbench_info = model_info(info, evaluation, branch)
        except KeyError as err:  # a field of files of other solo-ncp versions; the others: evaluated_branch
            raise damaged_evaluation(eval_dir, f"lacks {err} or holds it in another shape") from None
        state = classifier_state(encoder, branch, eval_dir)
        head_file = eval_dir / branch["files"]["head"]
        again = f"evaluate the checkpoint again with `solo-ncp eval ... --out {eval_dir} --overwrite`"
        weight = state.get("head.weight")
        if weight is None or weight.dim() != 2:
            raise ValueError(f"--head {eval_dir}: {head_file} holds no linear head (a 'weight' of shape (classes, "
                             f"features)): the file is damaged or of another version; {again}")
        features = features_dim(encoder.model.backbone)
        if weight.shape[1] != features:
            raise ValueError(f"--head {eval_dir}: {head_file} reads {weight.shape[1]} features, but {encoder.path} "
                             f"gives {features}: the head is damaged or of another encoder; {again}")
        if num_classes is not None and weight.shape[0] != num_classes:
            raise ValueError(f"--head {eval_dir}: {head_file} gives {weight.shape[0]} logits, but "
                             f"{evaluation['dataset']}, which its metrics.json evaluated, has {num_classes} classes: "
                             f"the file is damaged or of another evaluation; {again}")
        info["classifier"] = {
            "file": CLASSIFIER_FILE,
            "num_classes": int(weight.shape[0]),
            "inputs": f"{INPUTS} -> logits; normalisation inside (normalize, backbone, head)",
            "builder": f"{MODEL_FILE}: load_exported_classifier(folder)",
            "encoder": (f"fine-tuned by AFF: {eval_dir / branch['files']['encoder']}"
                        if "encoder" in branch["files"] else EXPORTED_ENCODER),
            "evaluation": {"path": str(eval_dir), "mode": evaluation["mode"], "head": evaluation["head"],
                           "seed": evaluation["seed"], "metrics": branch["metrics"]},
            "model_info": MODEL_INFO_FILE,
            "threat_model": threat_model(evaluation),
            "robustbench": f"{MODEL_INFO_FILE} belongs at {model_info_path(evaluation)} in RobustBench's tree",
        }
        load_weights(build_exported_classifier(info), state, f"classifier of {eval_dir}")
        files[CLASSIFIER_FILE] = state
    with staged_outputs(out, EXPORT_FILES, EXPORT_INFO) as staging:  # an earlier classifier would not match
        if evaluation is not None:
            atomic_write_json(staging / MODEL_INFO_FILE, robustbench_info)
        for name, obj in files.items():
            atomic_torch_save(obj, staging / name)
        atomic_write_text(staging / MODEL_FILE, standalone_source())
        atomic_write_json(staging / EXPORT_INFO, info)
    return info
