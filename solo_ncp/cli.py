"""`solo-ncp <command> ...`: the console script. Bad input ends with one `error:` line (exit 2);
set SOLO_NCP_DEBUG=1 to see the traceback."""
import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

COMMANDS = {
    "pretrain": ("pretrain", "stage 1: SimCLR (or any solo-learn method) from a config"),
    "select-k": ("select_k", "choose K by the cosine silhouette of spherical k-means (Fig. 2)"),
    "train": ("train", "stage 2: ncp (NCP-ACL) or deacl from a stage-1 checkpoint"),
    "eval": ("eval", "SLF/ALF linear head on a frozen encoder, then SA, PGD-20 RA, AutoAttack AA"),
    "report": ("report", "mean ± std tables (paper's Tables 2 and 3) over eval run folders"),
    "demo": ("demo", "the whole pipeline at CPU scale on Fashion-MNIST (make demo)"),
    "poc": ("poc", "Table 1: random noise vs a perturbation toward the neighbouring cluster"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="solo-ncp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = importlib.import_module(f"solo_ncp.commands.{module}")
        command.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        command = importlib.import_module(f"solo_ncp.commands.{COMMANDS[args.command][0]}")
        return command.run(args)
    except (ValueError, FileNotFoundError, ImportError, ArithmeticError) as err:
        if os.environ.get("SOLO_NCP_DEBUG"):
            raise
        print(f"solo-ncp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
