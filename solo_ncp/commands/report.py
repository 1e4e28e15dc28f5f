"""`solo-ncp report`: mean ± std tables (layout of the paper's Tables 2 and 3) over run folders."""
import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="folders holding metrics.json (one per seed/method) or poc.json (Table 1)")
    parser.add_argument("--out", default=None, help="write the markdown here as well")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from solo_ncp.eval import aggregate
    from solo_ncp.io import atomic_write_text, check_writable

    if args.out:
        check_writable(Path(args.out).parent)
    table = aggregate(args.runs)
    print(table)
    if args.out:
        atomic_write_text(args.out, table)
    return 0
