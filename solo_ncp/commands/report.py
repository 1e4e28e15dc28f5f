"""`solo-ncp report`: mean ± std tables (the layout of the paper's Tables 1-5) over run folders,
and with --out the paper's figures beside the markdown (Fig. 2 from select-k folders, Fig. 3 from a
K sweep's evaluations)."""
import argparse

from solo_ncp.commands._encoder import path_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=path_text,
                        help="folders holding metrics.json (an evaluation), poc.json (Table 1) or k.json "
                             "(select-k: Fig. 2)")
    parser.add_argument("--out", default=None, type=path_text,
                        help="write the markdown here, and the figures' PNGs beside it (<name>_fig2.png, "
                             "<name>_fig3_<dataset>_<head>.png, <name>: the markdown's name without .md)")


def own_figures(folder, stem: str) -> list:
    """The names of the figures in `folder` that a report named `<stem>.md` draws (`draw_figures`):
    a second report in the folder has other names, so neither replaces the other's figures."""
    import re

    pattern = re.compile(rf"{re.escape(stem)}_fig(2|3_[^_]+_[^_]+)\.png")
    return sorted(path.name for path in folder.iterdir() if pattern.fullmatch(path.name))


def draw_figures(inputs, folder, stem: str) -> list:
    """Fig. 2 from the select-k results (`<stem>_fig2.png`) and one Fig. 3 per dataset and head whose
    evaluations sweep K (the adversarial BN branch, or the only one; `<stem>_fig3_<dataset>_<head>.png`),
    as PNGs into `folder`; their paths."""
    from solo_ncp.eval.figures import figure2, figure3, figure3_bars
    from solo_ncp.eval.report import dataset_title

    paths = []
    if inputs.selections:
        paths.append(figure2(inputs.selections, folder / f"{stem}_fig2.png"))
    slf = [run for run in inputs.runs if run.mode == "slf" and run.bn in (None, "adv")]
    for dataset, head in sorted({(run.dataset, run.head) for run in slf}):
        bars = figure3_bars([run for run in slf if (run.dataset, run.head) == (dataset, head)])
        if bars:
            title = f"Fig. 3: {dataset_title(dataset)}, SLF, {head} head, adv BN"
            paths.append(figure3(bars, title, folder / f"{stem}_fig3_{dataset}_{head}.png"))
    return paths


REPORT_HEADINGS = (b"## Table ", b"## Fig. ")
"""How a report's markdown starts (`tables`): an existing --out is replaced only when it does."""


def check_out(text: str) -> None:
    """ValueError, before any work, for an --out the report must not write: not a file (or a path
    ending in '/', which names a folder), in a training run's or another command's result folder
    (`check_out_folder`), or an existing file that is no earlier report (it overwrote a metrics.json
    or a checkpoint given as --out)."""
    import os
    from pathlib import Path

    from solo_ncp.io import check_out_folder, check_writable, wrong_kind

    out = Path(text)
    if text.endswith((os.sep, "/")):
        raise ValueError(f"--out {text} ends in '/', so it names a folder: pass the markdown file's path, e.g. "
                         f"{out / 'report.md'}")
    problem = out.exists() and wrong_kind(out, "file")
    if problem:
        raise ValueError(f"--out {out} {problem}: pass the markdown file's path, e.g. {out / 'report.md'}")
    check_out_folder(out.parent, None, [], command="report")
    if out.exists():
        with open(out, "rb") as f:
            start = f.read(max(map(len, REPORT_HEADINGS)))
        if not start.startswith(REPORT_HEADINGS):
            raise ValueError(f"--out {out} exists and is no report of `solo-ncp report` (one starts with a '## Table' "
                             "or '## Fig.' heading): it replaces only an earlier report; choose another --out")
    check_writable(out.parent)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from solo_ncp.eval.figures import check_matplotlib
    from solo_ncp.eval.report import read_report_inputs, tables
    from solo_ncp.io import atomic_write_text, folder_lock, staged_outputs

    out = Path(args.out) if args.out is not None else None
    if out is not None:
        check_out(args.out)
        check_matplotlib()
    inputs = read_report_inputs(args.runs)
    table = tables(inputs)
    print(table)
    if out is not None:
        folder = out.parent
        with folder_lock(folder):  # another report into the folder would empty the staging folder
            earlier = own_figures(folder, out.stem)
            with staged_outputs(folder, [out.name, *earlier], last=out.name) as staging:
                atomic_write_text(staging / out.name, table)
                drawn = [path.name for path in draw_figures(inputs, staging, out.stem)]
        for name in drawn:
            print(f"[solo-ncp] wrote {folder / name}")
        for name in sorted(set(earlier) - set(drawn)):
            print(f"[solo-ncp] removed {folder / name}: an earlier report's figure, of inputs not given now")
    return 0
