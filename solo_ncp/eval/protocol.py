"""The evaluation protocol's names and defaults: the paper's Appendix A.3, with DeACL's values beside.

Plain Python (no torch), so the command line, the report and the trainer share one table.

Modes: "slf" standard linear fine-tuning (clean images, frozen encoder), "alf" adversarial linear
fine-tuning (adversarial images, frozen encoder), "aff" adversarial full fine-tuning (encoder and
head trained on adversarial images, encoder in train mode; DeACL's adv_finetune.py, not in the
NCP-ACL paper). Losses of alf/aff: "ce", cross-entropy on PGD examples that maximise it
(Appendix A.3.2), or "trades", CE(clean) + beta * KL(p_clean || p_adv) on PGD examples that
maximise that KL (Zhang et al., 2019, as DeACL's trades/trades.py).
"""
from typing import Dict, Mapping, Optional, Tuple

STAGE2_METHODS = ("ncp", "deacl")
"""The methods of stage 2 (adversarial training from a stage-1 teacher), as checkpoints record
them (`solo_ncp` metadata's "method"); a stage-1 encoder records its solo-learn method (simclr) or,
as a plain solo-learn checkpoint, none."""
NCP_SETTINGS = {"lam": 6.0, "norm": "Linf", "eps": 8 / 255, "alpha": 2 / 255, "steps": 5, "assign": "nearest",
                "dual_bn": True, "cluster_bn": "clean"}
"""Stage 2's settings besides those NCP's ablations vary (strategy, neighbor_rank, K), at ours (the
paper's where it gives them): `Stage2Config`'s defaults. An NCP checkpoint records them, and a row
of Tables 4 and 5 or Fig. 3 is of an encoder at these only (a variant such as cluster_bn adv is not)."""
MODES = ("slf", "alf", "aff")
LOSSES = ("ce", "trades")
PAPER_HEAD = "paper"
"""The head of the paper's protocol (Appendix A.3: a linear layer on the raw features, SGD): what the
paper's tables, `reproduce`'s evaluations named by their mode alone and metrics.json files that
name no head use."""
HEADS = ("whitened", "standardized", PAPER_HEAD)
"""Linear heads (solo_ncp.eval.heads): "whitened" (default) and "standardized" train on features
preconditioned with training-set statistics (ZCA whitening / per-dimension standardisation), folded
into the saved Linear afterwards; "paper" is Appendix A.3's head on raw features."""
DEFAULT_HEAD = "whitened"

TRADES_BETA = 6.0
"""TRADES weight beta when --loss trades (DeACL's adv_finetune.py, TRADES' CIFAR-10 value)."""

PAPER_LR: Dict[str, float] = {"cifar10": 0.1, "cifar100": 10.0, "stl10": 10.0}
"""Appendix A.3.1 (SLF) learning rates of the paper's head; A.3.2 gives ALF's for CIFAR-10 only
(0.1, "the same settings"): ALF on the other datasets assumes the SLF table."""
PAPER_LR_OTHER = 0.1
"""Paper head on a dataset the paper does not use (Fashion-MNIST, digits)."""
PRECONDITIONED_LR = 0.1
"""SLF/ALF learning rate of the whitened and standardised heads on every dataset: their inputs have
unit scale whatever the encoder, so the CIFAR-10 value serves all."""
AFF_LR = 0.01
"""AFF learning rate (encoder and head): DeACL's adv_finetune.py; the paper has no AFF."""

EPOCHS = 25
MILESTONES: Tuple[int, ...] = (15, 20)
GAMMA = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 2e-4
BATCH_SIZE = 512
CROP_PADDING = 4
"""Zero padding (pixels) before the head's random crop on images of CROP_PADDING_SIDE px or more
(DeACL's adv_finetune.py: RandomCrop(32 or 96, padding=4) + flip; the paper's A.3 names none)."""
CROP_PADDING_SIDE = 32
TRAIN_PGD_STEPS = 10
"""PGD steps of ALF/AFF training examples (Appendix A.3.2: 10-step L-inf PGD, eps 8/255, step 2/255)."""
TEST_PGD_STEPS = 20
"""PGD steps of the robust accuracy RA (Section 4.1: PGD-20)."""

AA_VERSIONS = ("standard", "plus", "rand", "custom")
"""pyautoattack 0.2's `version` names; "custom" runs the attacks named in `attacks`."""
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
"""pyautoattack 0.2's attack names (its AttackName), for version "custom"."""
VERSION_ATTACKS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
                   "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
                   "rand": ("apgd-ce", "apgd-dlr")}
"""The attacks each of pyautoattack 0.2's versions runs (its `_set_version`)."""
FEWEST_CLASSES = {"apgd-dlr": 3, "apgd-t": 10, "fab-t": 10}
"""The fewest classes an attack runs on (2 for the others): the DLR loss reads the 3rd-largest
logit; APGD-T and FAB-T attack 9 target classes in every version (its `n_target_classes`)."""


def check_autoattack_classes(version: str, attacks, num_classes: int) -> None:
    """ValueError, before any work, where AutoAttack `version` (or "custom" `attacks`) runs an
    attack on fewer classes than it needs (`FEWEST_CLASSES`): pyautoattack only warns, then fails
    with an IndexError inside the attack once an image survives APGD-CE."""
    ran = tuple(attacks) if version == "custom" else VERSION_ATTACKS[version]
    short = [attack for attack in ran if num_classes < FEWEST_CLASSES.get(attack, 2)]
    if short:
        fit = [attack for attack in AA_ATTACKS if num_classes >= FEWEST_CLASSES.get(attack, 2)]
        needs = ", ".join(f"{attack} {FEWEST_CLASSES[attack]}" for attack in short)
        raise ValueError(f"AutoAttack {version} runs attacks this dataset's {num_classes} classes are too few for "
                         f"(fewest classes: {needs}; APGD-T and FAB-T attack 9 target classes): run "
                         f"--aa-version custom --aa-attacks {' '.join(fit)} (not AutoAttack's standard "
                         "version: say so beside its AA), or skip AutoAttack with --aa-n 0")


def best_k(scores: Dict[int, float]) -> int:
    """The K select-k chooses from `scores` ({K: silhouette}, Fig. 2): the highest silhouette, the
    smallest such K on ties."""
    if not scores:
        raise ValueError("scores is empty: run sweep_k over at least one K first")
    return max(sorted(scores), key=lambda k: scores[k])


POC_ROWS = {"random_noise": "random noise", "nbr": "δ_nbr"}
"""Rows of Table 1 (`solo-ncp poc`): poc.json key -> label."""


def nbr_target(n: int) -> str:
    """The cluster δ_nbr pushes toward, by its rank `n`: 2 -> "2nd nearest cluster" (11 -> "11th")."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} nearest cluster"


def encoder_text(settings: Mapping) -> str:
    """"stage-1 encoder (single BN)" or "stage-2 encoder (ncp, adv BN branch)": the encoder a poc
    result's `settings` (its `method` and `bn`) says it measured."""
    branch = (f"{settings['bn']} BN branch" if settings.get("bn") else "single BN" if "bn" in settings
              else "BN branch not recorded")
    method = settings.get("method")
    return f"stage-2 encoder ({method}, {branch})" if method in STAGE2_METHODS else f"stage-1 encoder ({branch})"


def two_decimals(value: float) -> str:
    """A table's number: 2 decimals, and a value that rounds to zero as 0.00 (not -0.00)."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text

RA_COUNTING = (
    "a test image counts as robust only if it is classified correctly both clean and under "
    "attack ({ra} for RA, AutoAttack for AA); RA and AA are percentages of all evaluated images"
)
"""How RA and AA count an image; `{ra}`: the PGD attack behind RA as run ("PGD-20": its recorded steps)."""

DEACL_VALUES: Dict[str, Tuple[str, str]] = {
    "SLF learning rate": ("0.1 (whitened/standardized head); paper head 0.1 CIFAR-10, 10 CIFAR-100/STL-10",
                          "0.1 (raw features)"),
    "ALF loss, learning rate": ("CE on PGD-10 (Appendix A.3.2), learning rate as SLF's", "TRADES beta 6, 0.01"),
    "AFF loss, learning rate": ("TRADES beta 6, 0.01 (DeACL's; not in the paper)", "TRADES beta 6, 0.01"),
    "epochs, schedule": ("25, x0.1 at epochs 15 and 20", "25, x0.1 at epochs 15 and 20"),
    "momentum, weight decay, batch": ("0.9, 2e-4, 512", "0.9, 2e-4, 512"),
    "training attack": ("PGD-10, eps 8/255, step 2/255, uniform random start",
                        "PGD-10, eps 8/255, step 2/255; TRADES starts at x + 0.001 N(0, 1)"),
    "encoder mode (SLF/ALF)": ("eval, frozen", "train (BN running statistics drift), frozen weights"),
    "head training images": ("pad 4 (under 32 px: 4 x side / 32, 1 at 8 px), random crop, horizontal flip "
                             "(none with --cache-features)",
                             "pad 4, random crop, horizontal flip"),
    "head kept": ("last epoch", "last epoch"),
    "RA counted as": ("correct on the clean image and on its PGD-20 image",
                      "correct on the PGD-20 image"),
    "RA, AA": ("PGD-20; AutoAttack standard on the whole test set",
               "PGD-20; AutoAttack standard on the whole test set"),
}
"""Setting -> (solo-ncp's default, DeACL's adv_finetune.py @ 3fb81e3)."""


def head_crop_padding(image_size: int) -> int:
    """Padding of the head's pad-crop-flip on `image_size`-px images: CROP_PADDING at 32 px and
    above (CIFAR, STL-10: DeACL's 4), else the same fraction of the side, rounded half up (28 px: 4,
    8 px: 1): 4 pixels of an 8-px digit shift it by half its width."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    side = min(image_size, CROP_PADDING_SIDE)
    return (2 * CROP_PADDING * side + CROP_PADDING_SIDE) // (2 * CROP_PADDING_SIDE)


def default_loss(mode: str) -> str:
    """"ce" for slf and alf (the paper's), "trades" for aff (DeACL's)."""
    _check_mode(mode)
    return "trades" if mode == "aff" else "ce"


def default_lr(dataset: str, mode: str, head: str) -> float:
    """Learning rate when none is given: AFF_LR for aff; else PAPER_LR (paper head) or
    PRECONDITIONED_LR (whitened/standardized heads). dataset: a registry name, case-insensitive."""
    _check_mode(mode)
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if mode == "aff":
        return AFF_LR
    if head != PAPER_HEAD:
        return PRECONDITIONED_LR
    return PAPER_LR.get(dataset.lower(), PAPER_LR_OTHER)


def check_loss(mode: str, loss: Optional[str], beta: Optional[float]) -> None:
    """ValueError naming the fix for a loss/beta that does not fit the mode.

    loss None means the mode's default; beta only goes with loss "trades" and must be >= 0.
    """
    _check_mode(mode)
    if loss is not None and loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if mode == "slf" and (loss not in (None, "ce") or beta is not None):
        given = f"--loss {loss}" if loss not in (None, "ce") else "--beta"
        needs = "--mode alf or aff" if given.startswith("--loss") else "--mode alf or aff (with --loss trades)"
        raise ValueError(f"{given} needs {needs}: SLF trains on clean images only")
    if beta is not None and (loss or default_loss(mode)) != "trades":
        raise ValueError(f"--beta is the TRADES weight: pass --loss trades with it, or drop --beta "
                         f"(mode {mode} uses the {loss or default_loss(mode)} loss)")
    if beta is not None and beta < 0:
        raise ValueError(f"--beta must be >= 0, got {beta}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
