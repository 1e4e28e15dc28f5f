"""Reading encoder checkpoints written by solo-learn (1.0.2: `encoder.*`, main: `backbone.*`), by
solo-ncp (the same, plus a `solo_ncp` entry with the backbone spec and the normalisation used), or
by `solo-ncp export` (a folder: `encoder.pt`, a plain single-BN state dict, beside `export.json`,
whose solo-ncp entries describe it; `solo_ncp.models.export` writes them)."""
import math
import pickle
import pydoc
import re
import reprlib
import struct
import sys
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from solo_ncp.data.custom import CHANNELS
from solo_ncp.io import file_sha256, read_json_object, wrong_kind
from solo_ncp.models.backbones import BackboneSpec, build_backbone, infer_backbone_spec
from solo_ncp.models.dual_bn import BRANCHES, DEFAULT_BN, collapse_dual_bn, convert_dual_bn
from solo_ncp.models.normalize import Normalize
from solo_ncp.run_files import BEST

ENCODER_PREFIXES = ("encoder.", "backbone.")
META_KEY = "solo_ncp"
CLUSTERING_STATE_KEY = "solo_ncp_clustering"
"""A stage-2 checkpoint's clustering state beyond its buffers (`Stage2Hooks.clustering_state`)."""
BEST_META = "best_val_robust"
"""The key, in a checkpoint's solo-ncp metadata, of the run's best held-out robust accuracy so far:
{"epoch" (0-based), "pgd20_acc", "clean_acc" (%)}; best.ckpt holds that epoch's weights."""
EXPORT_INFO = "export.json"
EXPORTED_ENCODER = "encoder.pt"
CLASSIFIER_FILE = "classifier.pt"
EXPORT_META_KEYS = ("format", "method", "dataset", "bn", "backbone", "normalization", "source", "k",
                    "perturbation")
"""The entries of export.json that are solo-ncp's metadata of the exported encoder (`bn`: the
dual-BN branch folded into it, null for an encoder that had one BN; `k`, `perturbation`: what NCP's
ablations vary, as the checkpoint records them, so an evaluation of the export reports them too)."""
BACKBONE_META = {"name": (str,), "cifar": (bool,), "zero_init_residual": (bool,), "widen_factor": (int, type(None))}
"""The keys of the metadata's `backbone` entry (BackboneSpec's fields; `name` required) and their types."""
NORMALIZATION_META = ("mean", "std")
MAPPING_META = ("data", "perturbation", BEST_META)
"""Metadata entries that the commands read as mappings, each optional (absent or null)."""
META_FIX = ("write the checkpoint again with solo-ncp (`solo-ncp pretrain` / `train`; an export folder: "
            "`solo-ncp export`), or correct that entry")
OTHER_VERSION_FIX = "it was written by another solo-ncp version: load it with that version"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do, `problem` only why."""

    def __init__(self, message: str, problem: str = ""):
        super().__init__(message)
        self.problem = problem or message


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint only a full unpickling reads; the message names `--trust-checkpoint`."""


class UnknownNormalizationError(CheckpointError):
    """A checkpoint without solo-ncp metadata, read where no dataset gives its normalisation."""


UNREADABLE = (
    EOFError, LookupError, struct.error, ValueError, TypeError, AttributeError, AssertionError,
    RuntimeError, OSError, ImportError, ArithmeticError,
)
"""What `torch.load` raises, besides pickle.UnpicklingError, on bytes that are no checkpoint:
the weights-only unpickler's opcodes on garbage (EOFError at the end, IndexError / KeyError on
an empty stack or memo, struct.error on a short read, UnicodeDecodeError, TypeError /
AttributeError from allowed constructors given wrong objects), torch's own checks (its asserts,
RuntimeError of the zip reader and of the legacy format's magic number, OSError), and with a full
unpickling classes not installed here (ImportError) and absurd lengths (OverflowError)."""
REFUSED_GLOBAL = re.compile(r"GLOBAL (.*?) (?:was not an allowed global|whose module)")
"""The global in torch's refusal of a weights-only load: `module.name` as the pickle spells it."""


def _may_name_an_object(global_path: str) -> bool:
    """Whether a global that a weights-only load refused (`module.name`) can be a Python object
    that a trusted load would find: dotted identifiers and, under a package this process has
    imported (torch, collections: those a checkpoint's own objects come from; not `__main__`, a
    user's script), a name that package has. A name cut short by a truncation is neither."""
    parts = global_path.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    if parts[0] == "__main__" or parts[0] not in sys.modules:
        return True
    return pydoc.locate(global_path) is not None


def _refusal(err: pickle.UnpicklingError) -> Tuple[bool, str]:
    """(whether a weights-only load refused a Python object, the reason on one line) of torch's
    UnpicklingError: a global it does not allow, or bytes that are no pickle at all (a "global"
    that names no Python object: a text whose first letter `c`, pickle's GLOBAL opcode, makes its
    first lines one, or a name cut short by a truncation)."""
    text = str(err)
    refused = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), None)
    if refused is not None:
        reason = refused.rsplit("error:", 1)[-1].strip().split(". ")[0].rstrip(".")
        named = REFUSED_GLOBAL.search(refused)
        return bool(named) and _may_name_an_object(named[1]), reason
    after = text.rsplit("WeightsUnpickler error:", 1)[-1].strip()
    return False, (after.splitlines() or [type(err).__name__])[0].rstrip(".")


def unreadable(path: Path, reason: str) -> CheckpointError:
    """The one error of a file torch cannot load: `reason` is the parser's complaint, one line."""
    problem = f"cannot read {path}: not a PyTorch checkpoint, or a truncated or corrupt one ({reason})"
    return CheckpointError(f"{problem}. Pass a `.ckpt` written by `solo-ncp pretrain` / `solo-ncp train` or by "
                           "solo-learn; a truncated file must be copied or written again", problem)


def damaged_member(path: Path) -> Optional[str]:
    """The first record of a zip-format checkpoint whose bytes fail the CRC-32 the zip stores for
    them (a flipped bit in a tensor loads silently otherwise); None when every record checks, or
    for torch's legacy (non-zip) format."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"({err})"


def read_checkpoint(path, *, trust: bool = False) -> Dict:
    """Loads a checkpoint on CPU with `weights_only=True` (given explicitly: torch 2.6+ lets
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD override only an unset weights_only); arbitrary pickles only
    if `trust`."""
    path = Path(path)
    if not path.is_file() and path.name == BEST:
        raise CheckpointError(
            f"{path.parent} holds no {BEST}: a stage-2 run keeps one only with checkpoint.save_best=true "
            "and method_kwargs.val_robust_every >= 1; pass its last.ckpt, or train with both set"
        )
    problem = wrong_kind(path, "file")
    if problem:
        raise CheckpointError(
            f"checkpoint {path} {problem}: pass the `.ckpt` written by `solo-ncp pretrain` "
            "or `solo-ncp train` (under checkpoint.dir of its config), or a solo-learn checkpoint",
            f"checkpoint {path} {problem}"
        )
    try:
        with warnings.catch_warnings():  # of a byte that garbage holds where a protocol goes
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        refused, reason = _refusal(err)
        if not refused:
            raise unreadable(path, reason) from None
        raise UnsafeCheckpointError(
            f"{path} holds pickled Python objects that a safe load refuses ({reason}). "
            "If you trust where it came from, re-run with --trust-checkpoint."
        ) from None
    except UNREADABLE as err:
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise unreadable(path, f"{type(err).__name__}: {first_line}".rstrip(": ")) from None
    damaged = damaged_member(path)
    if damaged:
        raise unreadable(path, f"its record {damaged} fails its CRC-32 check: a changed byte, which torch.load "
                               "does not check")
    if not isinstance(ckpt, dict):
        problem = f"{path} holds a {type(ckpt).__name__}, not a checkpoint (a dict with a state_dict)"
        raise CheckpointError(f"{problem}: pass the `.ckpt` written by `solo-ncp pretrain` or `solo-ncp train`",
                              problem)
    if not isinstance(ckpt.get("state_dict", {}), Mapping):
        raise CheckpointError(
            f"{path} holds a state_dict that is a {type(ckpt['state_dict']).__name__}, not a mapping "
            "of tensors: pass the `.ckpt` written by `solo-ncp pretrain` or `solo-ncp train`"
        )
    return ckpt


def read_export(folder: Path, *, trust: bool = False) -> Dict:
    """An export folder as a checkpoint: {"state_dict": {"backbone.<key>": tensor} of encoder.pt,
    META_KEY: export.json's metadata entries}."""
    try:
        info = read_json_object(folder / EXPORT_INFO, "the export.json of `solo-ncp export`")
    except ValueError as err:
        raise CheckpointError(f"{err}: export the checkpoint again with `solo-ncp export`") from None
    weights = read_checkpoint(folder / EXPORTED_ENCODER, trust=trust)
    return {"state_dict": OrderedDict((f"backbone.{k}", v) for k, v in weights.items()),
            META_KEY: {k: info[k] for k in EXPORT_META_KEYS if k in info}}


def read_encoder_checkpoint(path, *, trust: bool = False) -> Tuple[Dict, Path]:
    """(checkpoint, the file holding its weights) of a training checkpoint, or of an export
    folder, its encoder.pt or its classifier.pt (`read_export`: the classifier's state dict records
    no normalisation, and was read as a plain solo-learn checkpoint of an assumed one)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / EXPORT_INFO).is_file() and (path.is_dir() or path.name in (EXPORTED_ENCODER, CLASSIFIER_FILE)):
        return read_export(folder, trust=trust), folder / EXPORTED_ENCODER
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder without {EXPORT_INFO}: pass a checkpoint file, "
                              "or a folder written by `solo-ncp export`")
    return read_checkpoint(path, trust=trust), path


def malformed(path, field: str, what: str, fix: str = META_FIX) -> CheckpointError:
    """The one error of metadata whose entry `field` is wrong: `what` says how, `fix` what to do."""
    problem = f"{path} has malformed solo-ncp metadata ({field}: {what})"
    return CheckpointError(f"{problem}: {fix}", problem)


def _a(kind: type) -> str:
    """A type as the messages name it: "null", "a list", "an int"."""
    if kind is type(None):
        return "null"
    return f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"


def _check_keys(path, field: str, entry, known: Sequence[str]) -> None:
    """`entry` is a mapping of keys among `known` (another version's key: OTHER_VERSION_FIX)."""
    if not isinstance(entry, Mapping):
        raise malformed(path, field, f"{_a(type(entry))}, not a mapping")
    unknown = sorted(map(str, set(entry) - set(known)))
    if unknown:
        raise malformed(path, f"{field}.{unknown[0]}", f"unknown key; this solo-ncp reads {', '.join(known)}",
                        OTHER_VERSION_FIX)


def _check_backbone(path, backbone) -> None:
    """Keys of BackboneSpec (`name` among them), each of its type."""
    _check_keys(path, "backbone", backbone, tuple(BACKBONE_META))
    if "name" not in backbone:
        raise malformed(path, "backbone.name", "missing")
    for key, value in backbone.items():
        types = BACKBONE_META[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise malformed(path, f"backbone.{key}",
                            f"{_a(type(value))}, not {' or '.join(_a(kind) for kind in types)}")


def _check_normalization(path, normalization) -> None:
    """mean and std: one finite number per image channel, std > 0."""
    _check_keys(path, "normalization", normalization, NORMALIZATION_META)
    for key in NORMALIZATION_META:
        field = f"normalization.{key}"
        if key not in normalization:
            raise malformed(path, field, "missing")
        values = normalization[key]
        shown = reprlib.repr(values)
        if not isinstance(values, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise malformed(path, field, f"{shown} is not a list of numbers")
        if len(values) != CHANNELS:
            raise malformed(path, field, f"{shown} has length {len(values)}; images have {CHANNELS} channels")
        if not all(math.isfinite(v) for v in values):
            raise malformed(path, field, f"{shown} holds NaN or inf")
        if key == "std" and min(values) <= 0:
            raise malformed(path, field, f"{shown} holds a std <= 0, which cannot divide")


def checkpoint_meta(ckpt: Mapping, path) -> Dict:
    """solo-ncp's metadata of checkpoint `path`, each entry's shape checked (`malformed`); empty for
    a plain solo-learn checkpoint."""
    meta = ckpt.get(META_KEY, {})
    if not isinstance(meta, Mapping):
        raise malformed(path, META_KEY, f"{_a(type(meta))}, not a mapping")
    if not meta:
        return {}
    if "backbone" in meta:
        _check_backbone(path, meta["backbone"])
    if "normalization" not in meta:
        raise malformed(path, "normalization", "missing")
    _check_normalization(path, meta["normalization"])
    if meta.get("bn") not in (None, *BRANCHES):
        raise malformed(path, "bn", f"{meta['bn']!r}, not null or one of {', '.join(BRANCHES)}")
    for key in MAPPING_META:
        if not isinstance(meta.get(key, {}), (Mapping, type(None))):
            raise malformed(path, key, f"{_a(type(meta[key]))}, not a mapping or null")
    return dict(meta)


def split_state_dict(ckpt: Mapping, prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of `ckpt["state_dict"]` under `prefix`, with the prefix removed."""
    state = ckpt.get("state_dict", ckpt)
    return OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))


def encoder_state_dict(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """The encoder weights of a solo-learn / solo-ncp checkpoint (keys without prefix)."""
    for prefix in ENCODER_PREFIXES:
        weights = split_state_dict(ckpt, prefix)
        if weights:
            return weights
    keys = list(ckpt.get("state_dict", ckpt))[:5]
    raise CheckpointError(
        "unknown checkpoint format: no weights under 'encoder.' (solo-learn 1.0.2) or "
        f"'backbone.' (solo-learn main); first keys are {keys}"
    )


def state_mismatch(own: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> str:
    """How `weights` differ from a module's state `own` (missing / unexpected names, shape
    mismatches with both shapes); empty when they fit."""
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)} here" for k in own
              if k in weights and own[k].shape != weights[k].shape]
    return "; ".join(
        f"{label}: {names[:3]}{' ...' if len(names) > 3 else ''}"
        for label, names in (("missing", missing), ("unexpected", unexpected),
                             ("shape mismatch", shapes))
        if names
    )


CONFIG_BACKBONE_FIX = ("Use the backbone the checkpoint was trained with (backbone.name / backbone.kwargs.cifar in "
                       "the config).")
"""What to change when a config's backbone does not fit a checkpoint's weights (stage 2's teacher)."""


def load_weights(module: nn.Module, weights: Mapping[str, torch.Tensor], what: str,
                 fix: str = CONFIG_BACKBONE_FIX) -> None:
    """`load_state_dict(strict=True)` with an error that names the mismatch instead of a dump, and
    `fix`: what to change."""
    detail = state_mismatch(module.state_dict(), weights)
    if detail:
        raise CheckpointError(f"{what} does not fit the backbone ({detail}). {fix}")
    module.load_state_dict(weights)


def nonfinite_keys(weights: Mapping[str, torch.Tensor]) -> List[str]:
    """The names of the floating-point tensors of `weights` that hold NaN or inf, in order."""
    return [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def check_weights(weights: Mapping[str, torch.Tensor], path) -> None:
    """Refuses encoder weights holding NaN or inf, or a negative BatchNorm running_var (NaN features
    on every image): every command that reads an encoder (select-k, train's teacher, eval, poc)
    gives one message naming the file instead of failing later on its features."""
    bad = nonfinite_keys(weights)
    if bad:
        raise CheckpointError(
            f"{path} holds NaN/inf weights in {len(bad)} tensors (first: {bad[0]}): the run that "
            "wrote it diverged. Use an earlier checkpoint of that run, or train it again with a "
            "lower optimizer.lr"
        )
    negative = [k for k, v in weights.items() if k.endswith("running_var") and bool((v < 0).any())]
    if negative:
        raise CheckpointError(
            f"{path} holds a negative BatchNorm running_var in {len(negative)} tensors (first: {negative[0]}), "
            "which no training writes (a variance): the file is damaged. Use another checkpoint of that run, "
            "or train it again"
        )


@dataclass
class LoadedEncoder:
    """model: Normalize + backbone, (B, 3, H, W) in [0, 1] -> (B, D) features.
    bn: the dual-BN branch the backbone was collapsed to (or that `solo-ncp export` folded into
        it), None for a single-BN encoder.
    branches: the BN branches the checkpoint holds: both for dual-BN weights, the folded one for
        an export of a dual-BN encoder, none for a single-BN encoder.
    path: the file the weights were read from (an export folder's encoder.pt)."""

    model: nn.Sequential
    backbone: BackboneSpec
    normalization: Dict[str, Tuple[float, ...]]
    meta: Dict
    bn: Optional[str] = None
    branches: Tuple[str, ...] = ()
    path: Optional[Path] = None


def source_record(encoder: LoadedEncoder) -> Dict:
    """Which checkpoint an encoder came from, as eval's metrics.json and export.json record it:
    {"path", "sha256"}, "best_val_robust" (`BEST_META`) when its run kept a best epoch, and for an
    export "exported_from": the {"path", "sha256"} of the checkpoint it was exported from (its
    export.json's "source"), so that an evaluation of the export and one of that checkpoint are
    known as one encoder."""
    record = {"path": str(encoder.path), "sha256": file_sha256(encoder.path)}
    if encoder.meta.get(BEST_META):
        record[BEST_META] = dict(encoder.meta[BEST_META])
    source = encoder.meta.get("source")
    if isinstance(source, Mapping) and source.get("sha256"):
        record["exported_from"] = {"path": source.get("path"), "sha256": source["sha256"]}
    return record


def is_dual_bn_state(weights: Mapping[str, torch.Tensor]) -> bool:
    """True for encoder weights saved with `DualBatchNorm2d` layers (`*.adv.running_mean`)."""
    return any(k.endswith(".adv.running_mean") for k in weights)


def backbone_from_weights(spec: BackboneSpec, weights: Mapping[str, torch.Tensor], what: str,
                          dual_bn: bool = False) -> nn.Module:
    """A backbone of `spec`, the one a checkpoint records, holding `weights`; dual BN if `dual_bn` or
    if the weights have it (a single-BN state loaded into a dual model fills both branches)."""
    backbone = build_backbone(spec)
    fix = (f"The checkpoint records the backbone {spec.to_dict()}, which its weights are not of: its record was "
           "edited, or it is damaged; pass the checkpoint as its training wrote it")
    if is_dual_bn_state(weights):
        convert_dual_bn(backbone)
        load_weights(backbone, weights, what, fix)
    else:
        load_weights(backbone, weights, what, fix)
        if dual_bn:
            convert_dual_bn(backbone)
    return backbone


def normalized_encoder(backbone: nn.Module, mean: Sequence[float], std: Sequence[float]):
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), backbone=backbone))


def select_branch(weights: Mapping[str, torch.Tensor], meta: Mapping, bn: Optional[str],
                  path, any_exported: bool = False) -> Tuple[Optional[str], Tuple[str, ...]]:
    """(the branch to use, the branches held) for a request `bn` (None: the encoder's own, DEFAULT_BN
    for dual BN). An exported branch other than the one requested is an error, unless
    `any_exported` (`bn` then picks only among a dual-BN encoder's branches)."""
    if is_dual_bn_state(weights):
        return bn or DEFAULT_BN, BRANCHES
    exported = meta.get("bn")
    if exported is None:
        return None, ()
    if bn is not None and bn != exported and not any_exported:
        raise CheckpointError(
            f"{path} holds an encoder exported through its {exported} BN branch only, not {bn}: "
            f"pass --bn {exported}, or export the {bn} branch (`solo-ncp export --bn {bn}`)"
        )
    return exported, (exported,)


NO_RECORDED_NORMALIZATION = "has no solo-ncp metadata, so the normalisation it was trained with is unknown"


def assumed_normalization(encoder: "LoadedEncoder") -> Optional[str]:
    """A note naming the mean/std an encoder runs with when its checkpoint records none (a plain
    solo-learn one: they are the caller's assumption); None when the checkpoint records them."""
    if encoder.meta.get("normalization"):
        return None
    shown = {key: ", ".join(f"{v:.4g}" for v in values) for key, values in encoder.normalization.items()}
    return (f"{encoder.path} records no normalisation (a plain solo-learn checkpoint): its inputs are "
            f"normalised with mean ({shown['mean']}), std ({shown['std']}), assumed from the dataset")


def load_encoder(
    path,
    *,
    normalization: Optional[Mapping[str, Sequence[float]]] = None,
    bn: Optional[str] = None,
    trust: bool = False,
    frozen: bool = True,
    any_exported: bool = False,
) -> LoadedEncoder:
    """Loads the encoder of a checkpoint or export folder and puts its stage-1 normalisation in
    front of it.

    bn: for a dual-BN encoder (ncp/deacl), the branch ("clean" or "adv") kept for evaluation
        (None: DEFAULT_BN); an exported encoder holds one branch, and another is refused (taken
        whatever `bn` with `any_exported`).
    normalization: {"mean", "std"}; required only for checkpoints without solo-ncp metadata
        (plain solo-learn ones), whose normalisation lives in their training transform.
    frozen: eval mode and `requires_grad=False`.
    """
    ckpt, weights_file = read_encoder_checkpoint(path, trust=trust)
    meta = checkpoint_meta(ckpt, path)
    weights = encoder_state_dict(ckpt)
    check_weights(weights, path)
    spec = BackboneSpec(**meta["backbone"]) if "backbone" in meta else infer_backbone_spec(weights)
    norm = meta.get("normalization") or normalization
    if norm is None:
        raise UnknownNormalizationError(
            f"{path} {NO_RECORDED_NORMALIZATION}: pass --dataset, the registered dataset whose solo-learn mean/std it was trained "
            "with (custom data has none of its own: use a checkpoint of solo-ncp pretrain or train, "
            "which records its config's)"
        )
    branch, branches = select_branch(weights, meta, bn, path, any_exported)
    backbone = backbone_from_weights(spec, weights, f"encoder of {path}")
    if is_dual_bn_state(weights):
        collapse_dual_bn(backbone, branch)
    model = normalized_encoder(backbone, norm["mean"], norm["std"])
    if frozen:
        model.eval().requires_grad_(False)
    return LoadedEncoder(model, spec, {k: tuple(v) for k, v in norm.items()}, meta, branch,
                         branches, weights_file)
