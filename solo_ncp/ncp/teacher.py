"""Stage-1 checkpoint -> frozen teacher f1 and the initial weights of the student f2."""
import copy
import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

from solo_ncp.data.registry import DATASETS
from solo_ncp.eval.results import read_selection_file
from solo_ncp.io import wrong_kind
from solo_ncp.models.backbones import BackboneSpec
from solo_ncp.models.checkpoint import (EXPORT_INFO, NO_RECORDED_NORMALIZATION, CheckpointError, LoadedEncoder,
                                       UnknownNormalizationError, UnsafeCheckpointError, load_encoder,
                                       load_weights)
from solo_ncp.models.dual_bn import convert_dual_bn
from solo_ncp.models.export import SOLO_LEARN_FILE


def _architecture(spec: BackboneSpec) -> Tuple:
    """What a backbone's weights fit (zero_init_residual only changes a fresh initialisation)."""
    return spec.name, spec.cifar, spec.widen_factor


def load_teacher(
    path,
    expected: BackboneSpec,
    *,
    normalization: Optional[Mapping[str, Sequence[float]]] = None,
    trust: bool = False,
) -> LoadedEncoder:
    """The stage-1 encoder (Normalize + backbone), frozen and in eval mode.

    expected: the backbone the run's config builds; a checkpoint of another architecture, stem
    or width is refused with the two specs in the message. A dual-BN checkpoint (a previous
    stage 2) is read through its clean branch, an exported encoder through the branch it holds.
    A teacher only a full unpickling reads (`trust`) is refused naming both ways to trust it:
    `solo-ncp train --trust-checkpoint`, and `method_kwargs.trust_teacher` for solo-learn main's
    own main_pretrain.py. A folder (an export) is refused: a run records its teacher file's sha256."""
    problem = wrong_kind(path, "file")
    if problem:
        export = f" (an export: its {SOLO_LEARN_FILE} is one)" if (Path(path) / EXPORT_INFO).is_file() else ""
        raise CheckpointError(f"teacher {path} {problem}: stage 2 starts from a stage-1 checkpoint file{export}; "
                              "pass `solo-ncp pretrain`'s last.ckpt")
    try:
        teacher = load_encoder(path, normalization=normalization, bn="clean", trust=trust, any_exported=True)
    except UnknownNormalizationError:
        raise CheckpointError(
            f"teacher {path} {NO_RECORDED_NORMALIZATION}, and the dataset has no registered one: give "
            "the mean and std it was trained with, +method_kwargs.normalization={mean: [r, g, b], std: "
            "[r, g, b]}, or use a checkpoint of solo-ncp pretrain, which records them") from None
    except UnsafeCheckpointError as err:
        raise CheckpointError(
            f"{err} For the stage-1 teacher (method_kwargs.teacher_ckpt) that is `solo-ncp train "
            "--trust-checkpoint`; solo-learn's own main_pretrain.py takes "
            "+method_kwargs.trust_teacher=true."
        ) from None
    if _architecture(teacher.backbone) != _architecture(expected):
        raise CheckpointError(
            f"stage-1 checkpoint {path} holds a {teacher.backbone.describe()}, but the config "
            f"builds a {expected.describe()}: set backbone.name / backbone.kwargs (cifar, "
            "widen_factor) to match the checkpoint, or pass the right checkpoint"
        )
    return teacher


def check_given_normalization(teacher: LoadedEncoder, given: Optional[Mapping[str, Sequence[float]]]) -> None:
    """ValueError where `method_kwargs.normalization` (`given`) differs from the normalisation the
    teacher checkpoint records: stage 2 keeps the teacher's (it was trained with it), so the option
    would be read by nothing; it is for a plain solo-learn teacher, which records none."""
    recorded = teacher.meta.get("normalization")
    if given is None or recorded is None:
        return
    if any(not math.isclose(a, b, rel_tol=1e-6)
           for key in ("mean", "std") for a, b in zip(given[key], recorded[key])):
        raise ValueError(f"method_kwargs.normalization={given} differs from the normalisation the teacher "
                         f"{teacher.path} records ({recorded}), which it was trained with and stage 2 keeps: drop "
                         "the option (it is for a plain solo-learn teacher, which records none)")


def read_teacher(
    path,
    expected: BackboneSpec,
    *,
    given: Optional[Mapping[str, Sequence[float]]] = None,
    dataset: Optional[str] = None,
    trust: bool = False,
) -> LoadedEncoder:
    """`load_teacher` as stage 2 reads its teacher (`solo-ncp train`, and `reproduce`'s check of
    --teacher before any step): a checkpoint without solo-ncp metadata with `given` (the config's
    method_kwargs.normalization, {"mean", "std"} of [0, 1] pixels), else with `dataset`'s registered
    statistics; `given` must agree with what a solo-ncp checkpoint records (`check_given_normalization`)."""
    normalization = given
    if normalization is None and dataset in DATASETS:
        normalization = {"mean": DATASETS[dataset].mean, "std": DATASETS[dataset].std}
    teacher = load_teacher(path, expected, normalization=normalization, trust=trust)
    check_given_normalization(teacher, given)
    return teacher


def init_student(encoder: nn.Module, teacher: LoadedEncoder, dual_bn: bool) -> nn.Module:
    """Copies the teacher's backbone weights into `encoder` (the host's own backbone module) and,
    if `dual_bn`, splits its BatchNorms into clean/adversarial pairs (both start as stage 1's)."""
    load_weights(encoder, copy.deepcopy(teacher.model.backbone.state_dict()), "stage-1 encoder")
    return convert_dual_bn(encoder) if dual_bn else encoder


def resolve_k(k: Optional[int], k_file: Optional[str]) -> Tuple[int, Dict]:
    """(K, what select-k recorded of its sweep): K from the config ({}), or from the `k.json` that
    `solo-ncp select-k` wrote (its "dataset", "ckpt" and "ckpt_sha256", each None in files written
    before it was recorded)."""
    if k is not None and k_file is not None:
        raise ValueError("give either method_kwargs.k or method_kwargs.k_file, not both")
    selection = {}
    if k_file is not None:
        try:
            selection = read_selection_file(Path(k_file))
        except ValueError as err:
            raise ValueError(f"method_kwargs.k_file: {err}") from None
        k = selection["k"]
    if k is None:
        raise ValueError(
            "NCP needs the number of clusters: set method_kwargs.k (paper: 70 / 150 / 215 for "
            "CIFAR-10 / CIFAR-100 / STL-10) or method_kwargs.k_file=<select-k out>/k.json"
        )
    if int(k) < 2:
        raise ValueError(f"k={k} must be >= 2")
    return int(k), selection
