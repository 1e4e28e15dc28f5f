"""`solo-ncp reproduce`: one table over seeds - per seed its own stage 1 (or a shared --teacher), its
own select-k and proof of concept, each stage-2 method, each evaluation through both BN branches -
then `report`. Running the same command again skips finished steps and resumes an interrupted one."""
import argparse
from typing import Optional

from solo_ncp.commands._encoder import path_text
from solo_ncp.launch.reproduce import STAGE1, STAGE2_SCOPE
from solo_ncp.run_files import BEST, LAST

CHECKPOINTS = {"last": LAST, "best": BEST}
"""--checkpoint's choices and the file each one evaluates."""
CHECKED_STEPS = {"select-k": "--select-k-options", "eval": "--eval-options", "poc": "--poc-options"}
"""Commands whose steps' arguments are checked before any step runs -> the option passing them."""


def _names(text: str) -> list:
    """The items of a comma-separated list; an empty one ("ncp,,deacl", "0,") is refused (argparse
    names the option)."""
    names = text.split(",")
    if "" in names:
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item: separate the items by single commas, "
                                         "e.g. ncp,deacl")
    return names


def _seeds(text: str) -> list:
    """Whole numbers from 0 to 2**32 - 1 (a training config's `seed`, numpy's range)."""
    from solo_ncp.config.ranges import SEED

    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        seeds = None
    if seeds is None or not all(SEED.holds(seed) for seed in seeds):
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated whole numbers {SEED}, e.g. 0,1,2; "
                                         f"got {text!r}")
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "overrides (Hydra grammar) go to stage 1 and every stage-2 method; a scope limits one:\n"
        f"  {STAGE1}:max_epochs=20       stage 1 only\n"
        f"  {STAGE2_SCOPE}:max_epochs=3        every stage-2 method\n"
        "  <label>:method_kwargs.lam=2  one method (labels: the config names, or LABEL=CONFIG)\n"
        "data.train_path and data.subset also become --data-dir and --train-n of select-k, poc and eval.\n"
        "example: solo-ncp reproduce --dataset cifar10 --seeds 0,1,2 --methods ncp,deacl \\\n"
        "           --eval slf --eval alf=ncp,deacl --out runs/cifar10 data.train_path=/data")
    parser.add_argument("--dataset", required=True, help="cifar10, cifar100, stl10, fashionmnist, digits")
    parser.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--methods", type=_names, default=["ncp", "deacl"],
                        help="comma-separated stage-2 configs: names in the config folder or YAML "
                             "paths, each optionally LABEL=CONFIG (e.g. ncp,deacl,ncp-advbn=ncp)")
    parser.add_argument("--eval", action="append", default=None, dest="evals",
                        help=f"repeatable: a mode (slf, alf, aff) for every encoder ({STAGE1} and the "
                             "methods), or MODE=enc1,enc2 (default: slf)")
    parser.add_argument("--out", required=True, type=path_text,
                        help="folder of every step (s<seed>/<step>) and the report")
    parser.add_argument("--teacher", default=None, type=path_text,
                        help=f"one stage-1 checkpoint shared by all seeds (no {STAGE1} step; recorded)")
    parser.add_argument("--config-dir", default=None, type=path_text,
                        help="folder of simclr.yaml and the method configs (default: the bundled "
                             "zoo_configs/<dataset>)")
    parser.add_argument("--select-k-options", default="", help='e.g. --select-k-options="--k-min 5 --k-max 60"')
    parser.add_argument("--eval-options", action="append", default=[],
                        help='repeatable; e.g. --eval-options="--test-n 500 --aa-n 1000 --cache-features" '
                             '(the last: SLF only), --eval-options="alf=--epochs 5" (one mode)')
    parser.add_argument("--poc-options", default="", help='e.g. --poc-options="--test-n 500 --cache-features"')
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                        help=f"the checkpoint of each stage-2 run that is evaluated: last ({LAST}, the "
                             f"default) or best ({BEST}: the trainings keep their most robust epoch on "
                             "held-out training images, checkpoint.save_best, with "
                             "method_kwargs.val_robust_every=1 unless set); recorded")
    parser.add_argument("--dry-run", action="store_true", help="print the steps and which are done")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (see below)")


def config_dir(args: argparse.Namespace):
    """--config-dir, or the bundled configs of --dataset; a ValueError naming the bundled datasets
    when --dataset has none."""
    from pathlib import Path

    from solo_ncp.io import wrong_kind
    from solo_ncp.zoo import bundled_datasets, zoo_dir

    if args.config_dir:
        problem = wrong_kind(args.config_dir, "folder")
        if problem:
            raise ValueError(f"--config-dir {args.config_dir} {problem}: pass a folder with "
                             f"{STAGE1}.yaml and the method configs")
        return Path(args.config_dir)
    if args.dataset not in bundled_datasets():
        raise ValueError(f"--dataset {args.dataset} has no bundled configs (bundled: "
                         f"{', '.join(bundled_datasets())}): pass --config-dir, a folder with "
                         f"{STAGE1}.yaml and the method configs")
    return zoo_dir() / args.dataset


def check_step_arguments(steps, num_classes: int, training_images: Optional[int] = None) -> None:
    """Parses each select-k, eval and poc step's argv as that command would and runs its
    `check_arguments` (no I/O), so a bad option passed through --select-k-options, --eval-options
    or --poc-options stops reproduce before the trainings, not after them; an eval's AutoAttack
    must run on the dataset's `num_classes`; select-k's sweep must fit the `training_images` it
    reads (its --train-n of them; None: not known, checked when it runs). poc's --k, read from
    select-k's k.json when poc runs (a placeholder until then), is checked then."""
    import importlib

    from solo_ncp.cli import COMMANDS, build_parser, parse_command
    from solo_ncp.eval.protocol import check_autoattack_classes

    _, parsers = build_parser()
    for step in steps:
        command, *argv = step.argv()
        if command not in CHECKED_STEPS:
            continue
        if argv[:1] == ["--k"] and not argv[1].isdigit():
            argv[1] = "2"
        try:
            args = parse_command(parsers[command], argv)
            importlib.import_module(f"solo_ncp.commands.{COMMANDS[command][0]}").check_arguments(args)
            if command == "eval" and args.aa_n != 0:
                check_autoattack_classes(args.aa_version, args.aa_attacks, num_classes)
            if command == "select-k" and training_images is not None:
                from solo_ncp.commands.select_k import check_sweep_fits

                check_sweep_fits(args, min(training_images, args.train_n or training_images))
        except ValueError as err:
            raise ValueError(f"step {step.name} would fail: {err} (check {CHECKED_STEPS[command]})") from None


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext
    from pathlib import Path

    from solo_ncp.io import check_out_folder, check_writable, folder_lock, resolved
    from solo_ncp.launch.reproduce import build_plan, run_plan

    check_out_folder(args.out, None, [], command="reproduce")  # not a training run's or a result's folder
    # a dry run too: it promises what a real run would do; resolved, so each step's argv (and the
    # done-marker that records it) is the same however --out and --teacher are spelled
    out = resolved(check_writable(Path(args.out)))
    configs = config_dir(args)
    with nullcontext() if args.dry_run else folder_lock(out):  # one reproduce at a time in --out
        plan = build_plan(dataset=args.dataset, seeds=args.seeds, methods=args.methods,
                          evals=args.evals or ["slf"], out=out, overrides=args.overrides,
                          teacher=resolved(args.teacher) if args.teacher else None, config_dir=configs,
                          select_k_options=args.select_k_options, eval_options=args.eval_options,
                          poc_options=args.poc_options, checkpoint=CHECKPOINTS[args.checkpoint])
        check_step_arguments(plan.steps, plan.num_classes, plan.training_images)
        for note in plan.notes:
            print(f"[reproduce] note: {note}")
        rows = run_plan(plan, args.dry_run)
    ran = sum(state == "ran" for _, state, _ in rows)
    if args.dry_run:
        print(f"[reproduce] {len(rows) - sum(s == 'would run' for _, s, _ in rows)} of {len(rows)} "
              f"steps done (dry run: nothing ran)")
        return 0
    print((out / "report" / "report.md").read_text())
    print(f"[reproduce] {ran} step(s) ran, {len(rows) - ran} skipped; report: {out / 'report' / 'report.md'}")
    return 0
