"""The threat models of every attack (RobustBench's and AutoAttack's names) and their default
budgets, in [0, 1] pixel units; importable without torch (the CLI's options use it)."""
import math
from typing import Optional, Sequence

NORMS = ("Linf", "L2")
DEFAULT_EPS = {"Linf": 8 / 255, "L2": 0.5}
"""The budgets of RobustBench's CIFAR tracks: L-inf 8/255 (the paper's), L2 0.5 (per image, over
all C*H*W pixels)."""
LINF_STEP = 2 / 255
"""The paper's L-inf PGD step (Section 4.1, Appendix A.3)."""
L2_STEP_FRACTION = 1 / 4
"""An L2 PGD step is eps / 4, the paper's L-inf step-to-budget ratio (2/255 of 8/255)."""
SIZES_OF_THE_OTHER = {"Linf": 0.25, "L2": 0.1}
"""An eps at or above ("Linf") / below ("L2") this is the size of the other norm's budgets."""


def check_norm(norm: str) -> None:
    """ValueError naming NORMS unless `norm` is one of them."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def default_alpha(norm: str, eps: float) -> float:
    """The PGD step for a `norm` ball of radius `eps`: the paper's 2/255 for L-inf, eps / 4 for L2."""
    check_norm(norm)
    return LINF_STEP if norm == "Linf" else eps * L2_STEP_FRACTION


def check_budget(norm: str, size: float, name: str) -> None:
    """ValueError naming option `name` when an L-inf `size` (a budget eps or a PGD step) is 1 or
    more: in [0, 1] pixel units that spans every value a pixel can take, so it was surely meant in
    1/255 units (8 for 8/255); the message gives the value to pass instead."""
    check_norm(norm)
    if norm == "Linf" and size >= 1:
        meant = (f"for {size:g}/255 pass {name}={size / 255:.6g}" if size / 255 < 1 else
                 "give a size below 1 (8/255 = 0.0313725)")
        raise ValueError(f"{name}={size:g} is an L-inf size in [0, 1] pixel units, where 1 or more "
                         f"spans every value a pixel can take; {meant}")


def check_l2_reach(norm: str, eps: float, image_shape: Sequence[int], name: str) -> None:
    """ValueError naming option `name` when an L2 budget `eps` is at least the distance between the
    two farthest images of `image_shape` ((C, H, W) in [0, 1] pixels): sqrt(C*H*W), 55.4 for
    CIFAR's 3x32x32. Its ball then holds every image, as an L-inf budget of 1 does (`check_budget`),
    so it was surely meant in 1/255 units; the message gives the value to pass instead."""
    check_norm(norm)
    reach = math.sqrt(math.prod(image_shape))
    if norm == "L2" and eps >= reach:
        shape = "x".join(map(str, image_shape))
        raise ValueError(f"{name}={eps:g} is an L2 budget at least the distance between the two farthest "
                         f"{shape} images in [0, 1] pixel units ({reach:.1f}): its ball holds every image; "
                         + (f"for {eps:g}/255 pass {name}={eps / 255:.6g}" if eps / 255 < reach else
                            f"give a budget below {reach:.1f}"))


def check_attack_sizes(norm: str, eps: float, alpha: float) -> None:
    """ValueError naming `--eps` / `--alpha` (a command's budget and PGD step, `norm` sizes in [0, 1]
    pixel units) when either is negative, or an L-inf one is 1 or more (`check_budget`)."""
    check_norm(norm)
    if eps < 0 or alpha < 0:
        name = "L-inf" if norm == "Linf" else norm
        raise ValueError(f"--eps and --alpha are {name} sizes in [0, 1] pixel units and must be >= 0, got "
                         f"{eps}, {alpha} (8/255 = {8 / 255:.5f})")
    check_budget(norm, eps, "--eps")
    check_budget(norm, alpha, "--alpha")


def budget_warning(norm: str, eps: float, l2_switch: Optional[str] = "--norm L2") -> Optional[str]:
    """A warning when `eps` is the size of the other norm's budgets (L2 with 8/255: 16x smaller than
    RobustBench's 0.5; L-inf with 0.5: half the pixel range), else None. `l2_switch`: how this
    command attacks in L2, named in the L-inf warning (None: it attacks in L-inf only)."""
    check_norm(norm)
    if norm == "L2" and eps < SIZES_OF_THE_OTHER["L2"]:
        return (f"L2 eps {eps:.4g} is an L-inf-sized budget ({eps * 255:.3g}/255): tiny in L2, where "
                f"RobustBench's CIFAR budget is {DEFAULT_EPS['L2']:g} over the whole image")
    if norm == "Linf" and eps >= SIZES_OF_THE_OTHER["Linf"]:
        fix = (f"pass {l2_switch} for an L2 budget" if l2_switch else
               f"this command attacks in L-inf only (the paper's budget: {DEFAULT_EPS['Linf'] * 255:.3g}/255)")
        return (f"L-inf eps {eps:.4g} ({eps * 255:.3g}/255) is an L2-sized budget: it lets every pixel "
                f"move by a quarter of its range or more; {fix}")
    return None


def warn_of_budget(norm: str, eps: float, l2_switch: Optional[str] = "--norm L2", option: str = "") -> None:
    """Prints `budget_warning`'s warning, if any, as solo-ncp's `warning:` line (`option`: the
    config key that set eps, named before it)."""
    warning = budget_warning(norm, eps, l2_switch)
    if warning:
        print(f"[solo-ncp] warning: {option + ': ' if option else ''}{warning}")
