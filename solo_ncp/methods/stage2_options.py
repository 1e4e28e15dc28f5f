"""The options of solo-ncp's stage-2 methods (`ncp`, `deacl`), one table read two ways: as
keyword arguments with solo-learn 1.0.2's argparse arguments (`add_arguments`), or as
`cfg.method_kwargs` on solo-learn main; each value checked, with one error naming it and what it
takes (`take_options`)."""
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from solo_ncp.attacks.objectives import NCP_STRATEGIES
from solo_ncp.config.ranges import AT_LEAST_0, AT_LEAST_1, POSITIVE, SEED, Bound
from solo_ncp.models.dual_bn import BRANCHES
from solo_ncp.ncp import KMEANS_INITS
from solo_ncp.ncp.step import ASSIGNMENTS
from solo_ncp.threat_model import NORMS, check_budget


CLUSTER_FEATURES = ("full_pass", "memory_bank")
KMEANS_BACKENDS = ("auto", "torch", "kmcuda")


@dataclass(frozen=True)
class Option:
    """One stage-2 option: `method_kwargs.<name>` in a config, `--<name>` on solo-learn 1.0.2's
    command line (booleans: `--<name>` when off by default, `--no_<name>` when on; dicts: config
    files only). `bound`: the range of a number."""

    name: str
    type: type
    default: Any = None
    choices: Tuple[str, ...] = ()
    required: bool = False
    bound: Optional[Bound] = None


AT_LEAST_2 = Bound(2)
OPTIONS = (
    Option("teacher_ckpt", str, required=True),
    Option("k", int, bound=AT_LEAST_2),
    Option("k_file", str),
    Option("lam", float, 6.0, bound=AT_LEAST_0),
    Option("norm", str, "Linf", NORMS),
    Option("eps", float, 8 / 255, bound=AT_LEAST_0),
    Option("alpha", float, 2 / 255, bound=POSITIVE),
    Option("pgd_steps", int, 5, bound=AT_LEAST_1),
    Option("strategy", str, "iii", NCP_STRATEGIES),
    Option("neighbor_rank", int, 2, bound=AT_LEAST_2),
    Option("assign", str, "nearest", ASSIGNMENTS),
    Option("cluster_every", int, 1, bound=AT_LEAST_1),
    Option("cluster_features", str, "full_pass", CLUSTER_FEATURES),
    Option("kmeans_max_iter", int, 100, bound=AT_LEAST_1),
    Option("kmeans_backend", str, "torch", KMEANS_BACKENDS),
    Option("kmeans_seed", int, 0, bound=SEED),
    Option("kmeans_init", str, "afk-mc2", KMEANS_INITS),
    Option("kmeans_n_init", int, 1, bound=AT_LEAST_1),
    Option("dual_bn", bool, True),
    Option("cluster_bn", str, "clean", BRANCHES),
    Option("normalization", dict),
    Option("trust_teacher", bool, False),
    Option("val_robust_every", int, 0, bound=AT_LEAST_0),
    Option("val_robust_n", int, 512, bound=AT_LEAST_1),
    Option("val_robust_seed", int, 0, bound=SEED),
    Option("channels_last", bool, False),
    Option("compile", bool, False),
    Option("cudnn_benchmark", bool, False),
)
OPTION_NAMES = tuple(o.name for o in OPTIONS)
CLUSTER_OPTIONS = ("k", "k_file", "strategy", "neighbor_rank", "assign", "cluster_every", "cluster_features",
                   "kmeans_max_iter", "kmeans_backend", "kmeans_seed", "kmeans_init", "kmeans_n_init")
"""The options of the clustering and of the push toward a neighbouring centroid: `ncp` reads them,
`deacl` (no clusters) does not."""
DEACL_OPTION_NAMES = tuple(name for name in OPTION_NAMES if name not in CLUSTER_OPTIONS)
KINDS = {int: "a whole number", float: "a number", str: "a text", bool: "true or false",
         dict: "a block of keys"}
"""What each option type takes, in the words of the refusals."""


def add_arguments(group) -> None:
    """The options as solo-learn 1.0.2's argparse arguments (`add_model_specific_args`)."""
    for o in OPTIONS:
        if o.type is bool:
            flag = f"--no_{o.name}" if o.default else f"--{o.name}"
            group.add_argument(flag, dest=o.name, action="store_false" if o.default else "store_true")
        elif o.type is not dict:
            group.add_argument(f"--{o.name}", type=o.type, default=o.default, required=o.required,
                               choices=o.choices or None)


def _is_type(value, kind: type) -> bool:
    """`value` is of the option type `kind` (an int is a float; a bool is no number)."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def check_option(o: Option, value) -> None:
    """ValueError naming `method_kwargs.<name>`, the value and what the option takes."""
    infinite = o.type is float and _is_type(value, float) and not math.isfinite(value)
    allowed = (f"one of {', '.join(o.choices)}" if o.choices else ("a finite number" if infinite else KINDS[o.type])
               + (f" {o.bound}" if o.bound is not None else ""))
    fits = value in o.choices if o.choices else _is_type(value, o.type) and not infinite and (
        o.bound is None or o.bound.holds(value))
    if not fits:
        raise ValueError(f"method_kwargs.{o.name}={value!r} must be {allowed}")
    if o.name == "normalization":
        check_normalization(value)


def check_normalization(value: Dict) -> None:
    """ValueError unless `value` is {"mean": 3 numbers, "std": 3 numbers > 0}, finite (the RGB
    statistics a plain teacher was trained with)."""
    def numbers(key: str) -> Optional[list]:
        given = value.get(key)
        ok = isinstance(given, (list, tuple)) and len(given) == 3 and all(
            _is_type(v, float) and math.isfinite(v) for v in given)
        return list(given) if ok else None

    mean, std = numbers("mean"), numbers("std")
    if set(value) != {"mean", "std"} or mean is None or std is None or min(std) <= 0:
        raise ValueError(f"method_kwargs.normalization={value!r} must be {{mean: [r, g, b], std: [r, g, b]}}: "
                         "3 finite numbers each, every std > 0 (the RGB statistics the teacher was trained with)")


def take_options(values: Dict) -> Dict[str, Any]:
    """Pops every stage-2 option out of `values` and checks it (`check_option`); an absent or
    null option takes its default."""
    options = {}
    for o in OPTIONS:
        value = values.pop(o.name, None)
        options[o.name] = o.default if value is None else value
        if o.required and (options[o.name] is None or not str(options[o.name]).strip()):
            raise ValueError(f"stage 2 needs method_kwargs.{o.name} (the stage-1 last.ckpt)"
                             + (f", not {options[o.name]!r}" if options[o.name] is not None else ""))
        if options[o.name] is not None:
            check_option(o, options[o.name])
    for size in ("eps", "alpha"):
        check_budget(options["norm"], options[size], f"method_kwargs.{size}")
    return options


def with_defaults(values: Dict) -> Dict[str, Any]:
    """`values` (a config's method_kwargs) with each option's default where it gives none; not
    checked (`take_options` checks them)."""
    return {o.name: values.get(o.name, o.default) for o in OPTIONS}


def check_clusters_fit(k: int, source: str, images: int, held_out: Optional[int] = None) -> None:
    """ValueError naming the option (`source`: "method_kwargs.k", or the k_file's K) when K clusters
    exceed the `images` a training clusters, left after `held_out` images for the robust monitor
    (None: none held out)."""
    if k > images:
        raise ValueError(
            f"K={k} clusters ({source}) but the training set has only {images} images"
            + (f" after method_kwargs.val_robust_n={held_out} held out for the robust monitor" if held_out is not None
               else "")
            + f": lower K{' or method_kwargs.val_robust_n' if held_out is not None else ''}")
