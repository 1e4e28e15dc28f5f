"""`solo-ncp report`: mean ± std tables (the layout of the paper's Tables 1-5) over run folders,
and with --out the paper's figures beside the markdown (Fig. 2 from select-k folders, Fig. 3 from a
K sweep's evaluations)."""
import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="folders holding metrics.json (an evaluation), poc.json "
                                                "(Table 1) or k.json (select-k: Fig. 2)")
    parser.add_argument("--out", default=None, help="write the markdown here, and the figures' PNGs "
                                                    "beside it (fig2.png, fig3_<dataset>_<head>.png)")


FIGURES = ("fig2.png", "fig3_*_*.png")
"""The names of the figures `draw_figures` writes."""


def draw_figures(inputs, folder) -> list:
    """Fig. 2 from the select-k results and one Fig. 3 per dataset and head whose evaluations sweep
    K (the adversarial BN branch, or the only one), as PNGs into `folder`; their paths."""
    from solo_ncp.eval.figures import figure2, figure3, figure3_bars
    from solo_ncp.eval.report import dataset_title

    paths = []
    if inputs.selections:
        paths.append(figure2(inputs.selections, folder / "fig2.png"))
    slf = [run for run in inputs.runs if run.mode == "slf" and run.bn in (None, "adv")]
    for dataset, head in sorted({(run.dataset, run.head) for run in slf}):
        bars = figure3_bars([run for run in slf if (run.dataset, run.head) == (dataset, head)])
        if bars:
            title = f"Fig. 3: {dataset_title(dataset)}, SLF, {head} head, adv BN"
            paths.append(figure3(bars, title, folder / f"fig3_{dataset}_{head}.png"))
    return paths


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from solo_ncp.eval.report import read_report_inputs, tables
    from solo_ncp.io import atomic_write_text, check_writable, wrong_kind

    if args.out:
        problem = Path(args.out).exists() and wrong_kind(args.out, "file")
        if problem:
            raise ValueError(f"--out {args.out} {problem}: pass the markdown file's path, e.g. "
                             f"{Path(args.out) / 'report.md'}")
        check_writable(Path(args.out).parent)
    inputs = read_report_inputs(args.runs)
    table = tables(inputs)
    print(table)
    if args.out:
        folder = Path(args.out).parent
        atomic_write_text(args.out, table)
        drawn = draw_figures(inputs, folder)
        for path in drawn:
            print(f"[solo-ncp] wrote {path}")
        for path in sorted({*folder.glob(FIGURES[0]), *folder.glob(FIGURES[1])} - set(drawn)):
            path.unlink()
            print(f"[solo-ncp] removed {path}: an earlier report's figure, of inputs not given now")
    return 0
