"""`solo-ncp eval`: fine-tune on the encoder (SLF or ALF head on the frozen encoder, or AFF of encoder
and head), then SA, PGD-20 RA and AutoAttack AA on the test set, through each BN branch of a
dual-BN encoder with its own head (`--bn both`, the default). Writes into --out: metrics.json, the
head of each branch (head_<bn>.pt, an nn.Linear state dict on raw features), for AFF the fine-tuned
encoder (encoder_<bn>.pt, Normalize + backbone state dict), and AutoAttack's per-attack log
(autoattack_<bn>.log); single-BN encoders drop the _<bn> suffix. The files an earlier eval wrote
there (`output_files`) are removed before the first is written; other files stay. Prints a Table-2
style row per branch and the seconds each part took per branch (also in metrics.json:
branches[i]["timings_s"])."""
import argparse
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from solo_ncp.commands._encoder import (
    add_encoder_arguments,
    add_head_arguments,
    at_most_int32,
    check_data_options,
    check_head_arguments,
    check_pgd_step,
    claimed_out,
    dataset_of,
    device_of,
    evaluation_splits,
    fine_tune_record,
    finite_number,
    head_config,
    load_args_encoder,
    note_single_bn,
    path_text,
    whole_number,
)
from solo_ncp.eval.batch_sizes import (
    AUTO,
    CUDA_AA_BATCH,
    CUDA_PGD_BATCH,
    BatchOption,
    attack_batch_size,
    parse_batch_option,
)
from solo_ncp.eval.protocol import (
    AA_ATTACKS,
    AA_VERSIONS,
    DEACL_VALUES,
    LOSSES,
    MODES,
    NCP_SETTINGS,
    RA_COUNTING,
    TEST_PGD_STEPS,
    check_autoattack_classes,
    check_loss,
    default_loss,
)
from solo_ncp.models.branches import BRANCHES, DEFAULT_BN
from solo_ncp.threat_model import (DEFAULT_EPS, NORMS, check_attack_sizes, check_l2_reach, default_alpha,
                                   warn_of_budget)

BOTH = "both"
BRANCH_ORDER = (DEFAULT_BN,) + tuple(branch for branch in BRANCHES if branch != DEFAULT_BN)
"""Order in which `--bn both` evaluates the branches; the first is copied to metrics.json's
top-level "bn"/"metrics" for readers of the one-branch layout."""
TIMED_PARTS = (("fine_tune", "fine-tune"), ("pgd", "PGD-{steps}"), ("autoattack", "AutoAttack"))
"""timings_s keys of a branch, in the order they run, with their printed names."""


def _deacl_table() -> str:
    rows = [f"  {setting}: ours {ours}; DeACL {deacl}" for setting, (ours, deacl) in DEACL_VALUES.items()]
    return "defaults (ours) beside DeACL's adv_finetune.py:\n" + "\n".join(rows)


def batch_option(text: str) -> BatchOption:
    """argparse type of --pgd-batch-size and --aa-batch-size: `parse_batch_option`'s auto or
    integer, the integer up to 2**31 - 1 (`at_most_int32`)."""
    value = parse_batch_option(text)
    return value if value == AUTO else at_most_int32(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _deacl_table()
    add_encoder_arguments(parser, BRANCHES + (BOTH,), BOTH,
                          f"BN branch of a dual-BN encoder: {BOTH} (default) evaluates each with its "
                          f"own head, {DEFAULT_BN} first; single-BN encoders are evaluated once")
    add_head_arguments(parser)
    parser.add_argument("--mode", choices=MODES, default="slf",
                        help="slf / alf: linear head on the frozen encoder, clean / adversarial "
                             "images; aff: adversarial full fine-tuning (encoder and head)")
    parser.add_argument("--loss", choices=LOSSES, default=None,
                        help="alf/aff loss (default: ce for alf, the paper's; trades for aff, DeACL's)")
    parser.add_argument("--beta", type=finite_number, default=None,
                        help="TRADES weight (default 6; --loss trades only)")
    parser.add_argument("--out", required=True, type=path_text, help="run folder for metrics.json, heads and logs")
    parser.add_argument("--norm", default="Linf", metavar="{" + ",".join(NORMS) + "}",
                        help="threat model of PGD (RA, and ALF/AFF's training examples) and AutoAttack "
                             "(default Linf, the paper's)")
    parser.add_argument("--eps", type=finite_number, default=None,
                        help="budget in [0, 1] pixel units (default: "
                             + ", ".join(f"{norm} {eps:.4g}" for norm, eps in DEFAULT_EPS.items())
                             + "; L2 over the whole image)")
    parser.add_argument("--alpha", type=finite_number, default=None,
                        help="PGD step in [0, 1] pixel units (default: 2/255 for Linf, eps / 4 for L2)")
    parser.add_argument("--pgd-steps", type=whole_number, default=TEST_PGD_STEPS, help="RA attack steps (PGD-20)")
    for option, what, cuda_default in (("--pgd-batch-size", "PGD (SA and RA)", CUDA_PGD_BATCH),
                                       ("--aa-batch-size", "AutoAttack", CUDA_AA_BATCH)):
        parser.add_argument(option, type=batch_option, default=AUTO,
                            help=f"images per {what} batch: {AUTO} (default) is {cuda_default} on CUDA, "
                                 "--batch-size elsewhere")
    parser.add_argument("--aa-n", type=whole_number, default=None,
                        help="AutoAttack on the first N test images (default: all; 0 skips it)")
    parser.add_argument("--aa-version", choices=AA_VERSIONS, default="standard",
                        help="AutoAttack version (custom: the attacks of --aa-attacks)")
    parser.add_argument("--aa-attacks", nargs="+", choices=AA_ATTACKS, default=None,
                        help="attacks of --aa-version custom")
    parser.add_argument("--method", default=None, help="row label (default: from the checkpoint)")


def check_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the problem and the fix for every option no run can use (no I/O)."""
    check_head_arguments(args)
    check_data_options(args)
    device_of(args)
    check_loss(args.mode, args.loss, args.beta)
    if args.cache_features and args.mode != "slf":
        raise ValueError(f"--cache-features is SLF only: --mode {args.mode} attacks images through the "
                         "encoder; drop --cache-features")
    if args.norm not in NORMS:
        raise ValueError(f"--norm {args.norm!r} is not a threat model solo-ncp attacks in: pass "
                         f"--norm {' or --norm '.join(NORMS)}")
    check_pgd_step(args.alpha)
    if args.eps is None:
        args.eps = DEFAULT_EPS[args.norm]
    if args.alpha is None:
        args.alpha = default_alpha(args.norm, args.eps)
    check_attack_sizes(args.norm, args.eps, args.alpha)
    for option, value in (("--pgd-batch-size", args.pgd_batch_size), ("--aa-batch-size", args.aa_batch_size)):
        if value != AUTO and value < 1:
            raise ValueError(f"{option} must be >= 1 (or {AUTO}), got {value}")
    if args.pgd_steps < 1:
        raise ValueError(f"--pgd-steps must be >= 1 (the paper's RA uses 20), got {args.pgd_steps}")
    if args.aa_n is not None and args.aa_n < 0:
        raise ValueError(f"--aa-n must be >= 0 (0 skips AutoAttack; leave it out for the whole test "
                         f"set), got {args.aa_n}")
    if args.aa_n and args.test_n is not None and args.aa_n > args.test_n:
        raise ValueError(f"--aa-n={args.aa_n} is larger than the test set ({args.test_n} images): "
                         "lower --aa-n or raise --test-n")
    if (args.aa_version == "custom") != (args.aa_attacks is not None):
        raise ValueError("--aa-attacks goes with --aa-version custom, and custom needs --aa-attacks")


BRANCH_FILES = {"head": ("head", ".pt"), "encoder": ("encoder", ".pt"),
                "autoattack_log": ("autoattack", ".log")}
"""metrics.json's names of a branch's files -> (stem, suffix) of the file in --out."""


def encoder_settings(meta: Mapping) -> Dict:
    """What the encoder's checkpoint says NCP's ablations varied: {"k", "strategy", "neighbor_rank",
    "k_source" ("k_file": the silhouette's K from select-k, "k": set by hand)}, and its other stage-2
    settings (`NCP_SETTINGS`' keys); None where it does not say (a stage-1 or DeACL encoder, an
    older checkpoint)."""
    perturbation = meta.get("perturbation") or {}
    return {"k": meta.get("k"), **{key: perturbation.get(key)
                                   for key in ("strategy", "neighbor_rank", "k_source", *NCP_SETTINGS)}}


def branch_file(key: str, bn: Optional[str]) -> str:
    """`<stem>_<bn><suffix>` of BRANCH_FILES[key] for BN branch `bn`; `<stem><suffix>` for None."""
    stem, suffix = BRANCH_FILES[key]
    return f"{stem}_{bn}{suffix}" if bn else f"{stem}{suffix}"


def output_files() -> List[str]:
    """Every file eval may write into --out: metrics.json and each branch file, for each BN branch
    and for a single-BN encoder."""
    from solo_ncp.eval.results import METRICS_FILE

    return [METRICS_FILE, *(branch_file(key, bn) for key in BRANCH_FILES for bn in (None, *BRANCHES))]


def load_branches(args: argparse.Namespace) -> List:
    """LoadedEncoders to evaluate: the --bn branch, or with --bn both each branch of a dual-BN
    encoder (BRANCH_ORDER) and the one encoder of a single-BN checkpoint or export."""
    encoder = load_args_encoder(args)
    if args.bn != BOTH:
        note_single_bn(args, encoder, "it is evaluated once (metrics.json: bn null)")
        return [encoder]
    if len(encoder.branches) < 2:
        print(f"[solo-ncp] {args.ckpt} is a single-BN encoder: --bn both evaluates it once")
        return [encoder]
    return [encoder] + [load_args_encoder(args, bn, note=False) for bn in BRANCH_ORDER[1:]]


def attack_batch_sizes(args: argparse.Namespace) -> dict:
    """{"pgd": --pgd-batch-size, "aa": --aa-batch-size}, `auto` resolved for --device (see
    solo_ncp.eval.batch_sizes)."""
    device = device_of(args)
    return {"pgd": attack_batch_size(args.pgd_batch_size, device, CUDA_PGD_BATCH, args.batch_size),
            "aa": attack_batch_size(args.aa_batch_size, device, CUDA_AA_BATCH, args.batch_size)}


def evaluate_branch(args: argparse.Namespace, encoder, cfg, spec, train_set, test_set, aa_n: int,
                    batch_sizes: dict, folder: Path) -> dict:
    """Fine-tune and evaluate one branch, attacking in `batch_sizes` (`attack_batch_sizes`); save
    its head (and AFF encoder) and AutoAttack log into `folder`. Returns metrics.json's branch
    entry {"bn", "metrics", "history", "files", "timings_s"},
    timings_s: seconds of fine-tuning (feature extraction included), PGD (SA and RA) and, when
    run, AutoAttack."""
    from solo_ncp.eval import evaluate, fine_tune
    from solo_ncp.eval.timing import timed
    from solo_ncp.io import atomic_torch_save

    device, timings = device_of(args), {}
    with timed(timings, "fine_tune", device):
        tuned = fine_tune(encoder.model, train_set, spec.num_classes, cfg, device=device,
                          cache_features=args.cache_features)
    files = {"head": branch_file("head", encoder.bn)}
    saved = {"head": tuned.head}
    if cfg.mode == "aff":
        files["encoder"] = branch_file("encoder", encoder.bn)
        saved["encoder"] = tuned.encoder
    for key, module in saved.items():
        atomic_torch_save({k: v.detach().cpu() for k, v in module.state_dict().items()}, folder / files[key])
    if aa_n:
        files["autoattack_log"] = branch_file("autoattack_log", encoder.bn)
    aa_log_path = folder / files["autoattack_log"] if aa_n else None
    metrics = evaluate(tuned.classifier, test_set, norm=args.norm, eps=args.eps, alpha=args.alpha,
                       steps=args.pgd_steps,
                       batch_size=batch_sizes["pgd"], aa_batch_size=batch_sizes["aa"], aa_n=aa_n,
                       aa_version=args.aa_version, aa_attacks=args.aa_attacks, aa_log_path=aa_log_path,
                       device=device, seed=args.seed, timings=timings)
    metrics.update(train_loss=tuned.history[-1]["loss"], train_acc=tuned.history[-1]["acc"])
    return {"bn": encoder.bn, "metrics": metrics, "history": tuned.history, "files": files,
            "timings_s": timings}


def timing_line(branch: dict, pgd_steps: int) -> str:
    """'[solo-ncp] <bn>: seconds fine-tune 1.23, PGD-20 4.56, AutoAttack 7.89' (parts that ran)."""
    seconds = branch["timings_s"]
    parts = ", ".join(f"{name.format(steps=pgd_steps)} {seconds[key]:.2f}" for key, name in TIMED_PARTS
                      if key in seconds)
    return f"[solo-ncp] {branch['bn'] or 'encoder'}: seconds {parts}"


def method_name(args: argparse.Namespace, encoders) -> str:
    """The row label: --method, else the checkpoint's method."""
    return args.method or encoders[0].meta.get("method", "encoder")


def metrics_record(args: argparse.Namespace, cfg, spec, encoders, branches: List[dict], aa_n: int,
                   batch_sizes: dict, train_n: int, test_n: int) -> dict:
    """metrics.json's content (`solo_ncp.eval.results` reads it)."""
    from solo_ncp.models.checkpoint import source_record

    return {
        "schema": 2,
        "method": method_name(args, encoders),
        "dataset": spec.name,
        "mode": args.mode,
        "loss": cfg.loss,
        "beta": cfg.beta,
        "head": cfg.head,
        "seed": args.seed,
        "branches": branches,
        "bn": branches[0]["bn"],
        "metrics": branches[0]["metrics"],
        "ra_counting": RA_COUNTING.format(ra=f"PGD-{args.pgd_steps}"),
        "threat_model": args.norm,
        "settings": {
            "fine_tune": fine_tune_record(cfg),
            "cache_features": args.cache_features,
            "ra": {"norm": args.norm, "eps": args.eps, "alpha": args.alpha, "steps": args.pgd_steps,
                   "batch_size": batch_sizes["pgd"]},
            "aa": {"version": args.aa_version, "attacks": args.aa_attacks, "norm": args.norm, "eps": args.eps,
                   "n": aa_n,
                   "batch_size": batch_sizes["aa"]},
            "train_n": train_n,
            "test_n": test_n,
        },
        "checkpoint": {**source_record(encoders[0]), "path": str(args.ckpt)},
        "encoder": encoder_settings(encoders[0].meta),
    }


def run(args: argparse.Namespace) -> int:
    from solo_ncp.eval import format_row
    from solo_ncp.eval.results import METRICS_FILE, attack_texts
    from solo_ncp.io import atomic_write_json, staged_outputs

    check_arguments(args)
    warn_of_budget(args.norm, args.eps)
    out = Path(args.out) / METRICS_FILE
    with claimed_out(args, METRICS_FILE, output_files(), reads={"--ckpt": args.ckpt}):
        encoders = load_branches(args)
        spec = dataset_of(args, encoders[0])
        check_l2_reach(args.norm, args.eps, (3, spec.image_size, spec.image_size), "--eps")
        cfg = head_config(args, spec, args.mode, loss=args.loss or default_loss(args.mode),
                          beta=args.beta, norm=args.norm, eps=args.eps, alpha=args.alpha)
        train_set, test_set = evaluation_splits(args, spec)
        aa_n = len(test_set) if args.aa_n is None else args.aa_n
        if aa_n > len(test_set):
            raise ValueError(f"--aa-n={aa_n} is larger than the test set ({len(test_set)} images)")
        if aa_n:
            check_autoattack_classes(args.aa_version, args.aa_attacks, spec.num_classes)
        batch_sizes = attack_batch_sizes(args)
        with staged_outputs(args.out, output_files(), METRICS_FILE) as staging:
            branches = [evaluate_branch(args, encoder, cfg, spec, train_set, test_set, aa_n, batch_sizes, staging)
                        for encoder in encoders]
            record = metrics_record(args, cfg, spec, encoders, branches, aa_n, batch_sizes, len(train_set),
                                    len(test_set))
            atomic_write_json(staging / METRICS_FILE, record)
        method = method_name(args, encoders)
        print("| Method | SA(%) | RA(%) | AA(%) |\n|---|---|---|---|")
        for branch in branches:
            label = method if branch["bn"] is None else f"{method} ({branch['bn']} BN)"
            print(format_row(label, branch["metrics"]))
        attacks = attack_texts(record["settings"])
        print(f"[solo-ncp] measured: {args.mode.upper()}, {cfg.head} head; RA {attacks['ra']}; "
              f"AA {attacks['aa'] if aa_n else 'not run'}")
        for branch in branches:
            m = branch["metrics"]
            print(f"[solo-ncp] {branch['bn'] or 'encoder'}: {args.mode.upper()} final epoch training loss "
                  f"{m['train_loss']:.4f}, training accuracy {m['train_acc']:.2f}%")
        for branch in branches:
            print(timing_line(branch, args.pgd_steps))
        print(f"[solo-ncp] SA/RA on {len(test_set)} test images, AA on {aa_n}; wrote {out}")
        return 0
