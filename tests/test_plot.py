"""`solo-ncp plot` and select-k's silhouette.png: the figures draw the values of the files they
read, titled with dataset, N, encoder and seed.

Oracles: the values of each run's Lightning CSV logs read here with the csv module, the digits
split sizes from scikit-learn, the figure's own artists (lines, scatter offsets, tick values,
title text) and the PNG's pixel size read back with matplotlib."""
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.image import imread
from sklearn.datasets import load_digits

from solo_ncp.cli import main, parse_args
from solo_ncp.cluster import select_k
from solo_ncp.commands import plot
from solo_ncp.data.datasets import DIGITS_TEST_EVERY
from solo_ncp.eval import curves as curves_module
from solo_ncp.eval import embedding as embedding_module
from solo_ncp.eval.curves import curve_panels, epoch_series
from solo_ncp.models.checkpoint import META_KEY
from tests.test_data import STL10_IMAGES, write_stl10

DIGITS = load_digits().target
DIGITS_TRAIN_N = int(sum(i % DIGITS_TEST_EVERY != 0 for i in range(len(DIGITS))))


def read_rows(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows, columns) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


def column_by_epoch(rows, column):
    """{epoch: value} of the rows where `column` holds a value."""
    return {int(row["epoch"]): float(row[column]) for row in rows if row.get(column)}


def drawn(figure):
    """{panel title: {curve label: (x values, y values)}} of the figure's lines."""
    return {axes.get_title(): {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                               for line in axes.get_lines()} for axes in figure.axes}


def png_size(path: Path):
    """(width, height) in pixels of a PNG file."""
    height, width = imread(str(path)).shape[:2]
    return width, height


def copied_run(run: Path, dest: Path, config: dict, meta: dict) -> Path:
    """A run folder `dest` holding `run`'s config.yaml updated with `config` (whose method_kwargs
    replace the run's) and its last.ckpt with solo-ncp metadata updated with `meta` (a None value
    removes the entry). Returns `dest`."""
    dest.mkdir(parents=True)
    settings = {**yaml.safe_load((run / "config.yaml").read_text()), **config}
    (dest / "config.yaml").write_text(yaml.safe_dump(settings))
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt[META_KEY] = {key: value for key, value in {**ckpt[META_KEY], **meta}.items() if value is not None}
    torch.save(ckpt, dest / "last.ckpt")
    return dest


# ---------------------------------------------------------------- training curves


def test_stage2_curves_draw_the_logged_losses_objective_and_cosines(digits_ncp_ckpt, tmp_path, capsys):
    run = digits_ncp_ckpt.parent
    assert main(["plot", str(run), "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / "curves.png"))
    assert png_size(tmp_path / "curves.png") == (2 * 780, 1095)  # 2 x 2 panels of 5.2 x 3.4 in, 150 dpi

    _, _, figure = plot.draw_curves(run, plot.run_config(run), tmp_path)
    rows = read_rows(run / "logs" / "version_0" / "metrics.csv")
    expected = {
        "loss terms": ["train_loss", "train_distill_loss", "train_robust_loss"],
        "online accuracy": ["train_acc1"],
        "cluster objective": ["cluster_objective"],
        "centroid cosines": ["train_cos_clean_own", "train_cos_clean_nbr", "train_cos_adv_own",
                             "train_cos_adv_nbr"],
    }
    curves = drawn(figure)
    assert {title: sorted(lines) for title, lines in curves.items()} == \
        {title: sorted(names) for title, names in expected.items()}
    for title, names in expected.items():
        for name in names:
            column = name if name == "cluster_objective" else f"{name}_epoch"
            values = column_by_epoch(rows, column)
            assert list(values) == [0]
            assert curves[title][name] == ([1], [values[0]]), (title, name)
    heading = figure._suptitle.get_text()
    seed = yaml.safe_load((run / "config.yaml").read_text())["seed"]
    for words in ("ncp training curves", "digits", "N = 256 images", "ncp/last.ckpt", f"seed {seed}"):
        assert words in heading, (words, heading)


def test_curves_concatenate_the_attempts_a_later_attempt_replacing_an_epoch(digits_simclr_ckpt, tmp_path):
    """Two attempts as a resume writes them: version_9 logged epochs 0 and 1, version_10 (after it
    in number, before it as text) epoch 1 again, whose values must win."""
    rows = read_rows(digits_simclr_ckpt.parent / "logs" / "version_0" / "metrics.csv")
    columns = list(rows[0])
    run = tmp_path / "run"
    write_rows(run / "logs" / "version_9" / "metrics.csv", rows, columns)
    redone = [{**row, "train_nce_loss_epoch": str(float(row["train_nce_loss_epoch"]) + 1.0)}
              for row in rows if row["epoch"] == "1" and row["train_nce_loss_epoch"]]
    write_rows(run / "logs" / "version_10" / "metrics.csv", redone, columns)
    config = yaml.safe_load((digits_simclr_ckpt.parent / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "seed": 7}))  # a seed no default gives

    _, _, figure = plot.draw_curves(run, plot.run_config(run), run)
    first = column_by_epoch(rows, "train_nce_loss_epoch")
    assert sorted(first) == [0, 1]
    assert drawn(figure)["loss terms"]["train_nce_loss"] == ([1, 2], [first[0], first[1] + 1.0])
    accuracy = column_by_epoch(rows, "train_acc1_epoch")
    assert drawn(figure)["online accuracy"]["train_acc1"] == ([1, 2], [accuracy[0], accuracy[1]])
    heading = figure._suptitle.get_text()
    for words in ("simclr training curves (2 attempts)", "digits", f"N = {DIGITS_TRAIN_N} images",
                  "run/last.ckpt", "seed 7"):
        assert words in heading, (words, heading)
    ticks = [tick for axes in figure.axes for tick in axes.get_xticks()
             if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
    assert ticks and all(float(tick).is_integer() for tick in ticks)


def test_curves_of_an_stl10_run_count_its_105000_image_split_without_reading_it(digits_simclr_ckpt, tmp_path):
    """The title's N of an STL-10 run: train + unlabeled images, from the files' sizes (these files
    fail torchvision's MD5 check: reading them would leave N unknown)."""
    rows = read_rows(digits_simclr_ckpt.parent / "logs" / "version_0" / "metrics.csv")
    run = tmp_path / "run"
    write_rows(run / "logs" / "version_0" / "metrics.csv", rows, list(rows[0]))
    write_stl10(tmp_path / "data")
    config = yaml.safe_load((digits_simclr_ckpt.parent / "config.yaml").read_text())
    config["data"] = {**config["data"], "dataset": "stl10", "train_path": str(tmp_path / "data")}
    (run / "config.yaml").write_text(yaml.safe_dump(config))

    _, _, figure = plot.draw_curves(run, plot.run_config(run), run)
    assert f"stl10, N = {STL10_IMAGES['train'] + STL10_IMAGES['unlabeled']} images" in figure._suptitle.get_text()


def test_the_robust_monitor_and_knn_accuracies_join_the_accuracy_panel():
    series = {"val_robust/clean_acc": {0: 50.0}, "val_robust/pgd20_acc": {0: 20.0},
              "val_knn_acc1": {0: 70.0}, "train_class_loss": {0: 3.0}, "lr-SGD/encoder": {0: 0.1}}
    panels = {panel.title: panel.curves for panel in curve_panels(series)}
    assert panels == {"online accuracy": {"val_knn_acc1": ([1], [70.0]),
                                          "val_robust/clean_acc": ([1], [50.0]),
                                          "val_robust/pgd20_acc": ([1], [20.0])}}


@pytest.mark.parametrize("kind", ["stage-1", "deacl"])
def test_plot_of_a_checkpoint_without_a_recorded_k_asks_for_k(kind, digits_simclr_ckpt, digits_ncp_ckpt,
                                                               tmp_path, capsys):
    """Neither a stage-1 checkpoint nor a deacl one (K recorded as 0: no clusters) records a K to
    mark: one line naming --k."""
    if kind == "stage-1":
        run = digits_simclr_ckpt.parent
    else:  # the ncp run's checkpoint with the metadata a deacl run writes, and a deacl config
        options = {key: value for key, value in yaml.safe_load(
            (digits_ncp_ckpt.parent / "config.yaml").read_text())["method_kwargs"].items()
            if key not in ("k", "k_file")}
        run = copied_run(digits_ncp_ckpt.parent, tmp_path / "deacl",
                         {"method": "deacl", "method_kwargs": options},
                         {"method": "deacl", "k": 0, "perturbation": None})
    code = main(["plot", str(run), "--embedding", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2
    assert (out + err).splitlines() == [
        f"error: {run / 'last.ckpt'} records no K it was trained with (a stage-1 or deacl checkpoint?): "
        "pass --k, the number of clusters to mark (solo-ncp plot)"]


LOG_LINES = ["epoch,lr-SGD,step,train_loss_epoch,train_loss_step", ",0.1,0,,", "0,,0,,2.5", "0,,1,2.25,"]
"""A Lightning CSV log: a learning-rate row without an epoch, a step row, then epoch 0's loss 2.25 on
line 4 (its file's only per-epoch value)."""


def log_with_line_4(line: bytes) -> bytes:
    return "\n".join(LOG_LINES[:3]).encode() + b"\n" + line + b"\n"


def test_a_bom_and_crlf_of_a_spreadsheet_saving_comma_separated_utf8_are_accepted(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(LOG_LINES).encode() + b"\r\n")
    assert epoch_series([path]) == {"train_loss": {0: 2.25}}


@pytest.mark.parametrize("damage, problem", [
    (log_with_line_4(b"0,,1,2.25,,7"), "line 4 has 6 fields, more than the 5 of its header"),
    (log_with_line_4(b"0,,1,2.2\xff,"), "is not UTF-8 text (byte 0xff on line 4)"),
    (log_with_line_4(b"abc,,1,2.25,"), "line 4 has epoch 'abc', not a number"),
    (log_with_line_4(b"0.5,,1,2.25,"), "line 4 has epoch '0.5', not a whole number"),
    (log_with_line_4(b"0,,1,abc,"), "line 4 has train_loss_epoch 'abc', not a number"),
    (b"\xef\xbb\xbf" + "\r\n".join(LOG_LINES).replace(",", ";").encode() + b"\r\n",
     "has no 'step' column in its header: it is not the comma-separated CSV Lightning writes (a spreadsheet "
     "may have saved it again with ';' between fields)"),
    (None, "is a folder, not a file"),
], ids=["extra field", "not utf-8", "epoch not a number", "epoch not whole", "value not a number",
        "semicolons", "folder"])
def test_plot_of_a_damaged_metrics_csv_names_it_the_damage_and_the_fix(damage, problem, tmp_path, capsys):
    attempt = tmp_path / "run" / "logs" / "version_3"
    attempt.mkdir(parents=True)
    path = attempt / "metrics.csv"
    if damage is None:
        path.mkdir()
    else:
        path.write_bytes(damage)
    assert main(["plot", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert (out + err).splitlines() == [
        f"error: {path} {problem}: put back the metrics.csv the run wrote, or delete {attempt} to plot the run "
        "without that attempt (solo-ncp plot)"]


def logged_run(run: Path, log: bytes) -> Path:
    """A run folder `run` whose one attempt logged `log` as its metrics.csv; returns that file."""
    path = run / "logs" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(log)
    return path


KILLED = ("a process killed while writing it can leave it so (Lightning 1.x rewrites the whole file at each save, "
          "2.x when a metric is new), and what it had logged is lost")


@pytest.mark.parametrize("log, problem", [
    (b"", "is empty (0 bytes)"),
    (LOG_LINES[0][:15].encode(), "ends within its header line (15 bytes, no line end)"),
    ("step,val_é".encode()[:-1], "ends within its header line (10 bytes, no line end)"),
    (b"\xef\xbb", "ends within its header line (2 bytes, no line end)"),
], ids=["empty", "cut in its header", "cut within a character", "cut within its BOM"])
def test_plot_of_a_metrics_csv_a_kill_cut_short_says_so_and_that_its_epochs_are_lost(log, problem, tmp_path,
                                                                                      capsys):
    path = logged_run(tmp_path / "run", log)
    assert main(["plot", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert (out + err).splitlines() == [
        f"error: {path} {problem}: {KILLED}: delete {path.parent} to plot the run without that attempt "
        "(solo-ncp plot)"]


@pytest.mark.parametrize("last, kept", [
    (b"0,,3,2.2", {}), (b"2,,3,1.75,", {}), (b"2,,3,1.75,\r", {2: 1.75})],
    ids=["cut within a value", "cut before its line end", "cut within its line end"])
def test_a_metrics_csv_cut_within_its_last_row_is_read_without_that_row_and_names_it(last, kept, tmp_path,
                                                                                       capsys):
    """Lightning writes the file through a buffer, so a kill can cut it anywhere: a value of the last
    line may be cut (epoch 0's 2.25 to 2.2, which would replace it). A line whose line end is whole
    but for its last byte is not cut."""
    path = tmp_path / "metrics.csv"
    path.write_bytes("\r\n".join(LOG_LINES + ["1,,2,2.0,"]).encode() + b"\r\n" + last)
    assert epoch_series([path]) == {"train_loss": {0: 2.25, 1: 2.0, **kept}}
    notes = [] if kept else [f"[solo-ncp] note: {path} ends within line 6 (no line end: a process killed while "
                             "Lightning wrote it can leave it so): plotted without that line"]
    assert capsys.readouterr().out.splitlines() == notes


def test_plot_of_a_run_stopped_in_its_first_epoch_asks_for_it_after_that_epoch(tmp_path, capsys):
    """Its log holds a learning rate and a step's loss, no epoch's: it is not damaged, only early."""
    logged_run(tmp_path / "run", "\r\n".join(LOG_LINES[:3]).encode() + b"\r\n")
    assert main(["plot", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert (out + err).splitlines() == [
        f"error: {tmp_path / 'run'}: its 1 metrics.csv file(s) hold no per-epoch loss, accuracy or cluster "
        "metric yet: plot it after its first epoch (solo-ncp plot)"]


TITLED = {"method": "simclr", "data": {"dataset": "digits", "subset": 100}, "seed": 3}
"""A run config whose title needs no dataset files: N is its data.subset."""


CURVES = "simclr training curves (1 attempt)\n"
"""The first line of the title of TITLED's curves."""


@pytest.mark.parametrize("damage, title", [
    ({}, CURVES + "digits, N = 100 images, encoder run/last.ckpt, seed 3"),
    ({"data": "foo"}, CURVES + "?, N = ? images, encoder run/last.ckpt, seed 3"),
    ({"data": [1, 2]}, CURVES + "?, N = ? images, encoder run/last.ckpt, seed 3"),
    ({"data": {"dataset": "digits", "subset": "abc"}}, CURVES + "digits, N = ? images, encoder run/last.ckpt, seed 3"),
    ({"data": {"dataset": 5, "subset": 100}}, CURVES + "?, N = ? images, encoder run/last.ckpt, seed 3"),
    ({"seed": None}, CURVES + "digits, N = 100 images, encoder run/last.ckpt, seed ?"),
    ({"seed": "abc"}, CURVES + "digits, N = 100 images, encoder run/last.ckpt, seed ?"),
    ({"method": ["simclr"]}, "training curves (1 attempt)\ndigits, N = 100 images, encoder run/last.ckpt, seed 3"),
], ids=["intact", "data text", "data list", "subset text", "dataset number", "seed null", "seed text",
        "method list"])
def test_curves_of_a_damaged_config_title_what_it_lacks_with_a_question_mark(damage, title, tmp_path,
                                                                             monkeypatch, capsys):
    """The curves need nothing of config.yaml: a title fact it lacks or holds malformed is ? (a method,
    left out)."""
    run = tmp_path / "run"
    logged_run(run, "\n".join(LOG_LINES).encode() + b"\n")
    (run / "config.yaml").write_text(yaml.safe_dump({**TITLED, **damage}))
    titles = []
    original = curves_module.plot_panels
    monkeypatch.setattr(curves_module, "plot_panels",
                        lambda panels, title, path: titles.append(title) or original(panels, title, path))
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(run / "curves.png"))
    assert titles == [title]


# ---------------------------------------------------------------- embedding


def test_embedding_marks_every_test_image_by_class_and_the_k_centroids(digits_ncp_ckpt, tmp_path,
                                                                        monkeypatch):
    run = digits_ncp_ckpt.parent
    embedded = []
    original = embedding_module.embed_2d
    monkeypatch.setattr(embedding_module, "embed_2d",
                        lambda vectors, seed: embedded.append(vectors.shape) or original(vectors, seed))
    args = parse_args(["plot", str(run), "--embedding", "--test-n", "64", "--device", "cpu"])
    path, result, figure = plot.draw_embedding(args, run, plot.run_config(run), tmp_path)

    labels = DIGITS[::DIGITS_TEST_EVERY][:64]
    assert [rows for rows, _ in embedded] == [64 + 10]  # features and centroids embedded together
    assert Counter(result.labels.tolist()) == Counter(labels.tolist())
    assert result.points.shape == (64, 2) and result.centroids.shape == (10, 2)
    scatters = {collection.get_label(): collection.get_offsets()
                for collection in figure.axes[0].collections}
    assert {label: len(offsets) for label, offsets in scatters.items() if label.isdigit()} == \
        {str(label): count for label, count in Counter(labels.tolist()).items()}
    centroids = next(offsets for label, offsets in scatters.items() if "centroid" in label)
    np.testing.assert_array_equal(np.asarray(centroids), result.centroids)
    title = figure.axes[0].get_title()
    seed = yaml.safe_load((run / "config.yaml").read_text())["seed"]
    for words in ("t-SNE", "K = 10", "digits", "N = 64 images", "ncp/last.ckpt", f"seed {seed}"):
        assert words in title, (words, title)
    assert path == tmp_path / "embedding.png" and png_size(path) == (1020, 780)


def test_embedding_k_is_the_checkpoints_own_wherever_plot_runs(digits_ncp_ckpt, tmp_path, monkeypatch):
    """A run launched from another folder: its config names method_kwargs.k_file relative to that
    folder, which does not resolve from here. K is the one its checkpoint records (set to 7 here:
    neither the 10 classes nor the fixture's k)."""
    k_file = "runs/ncp/select-k/k.json"
    options = yaml.safe_load((digits_ncp_ckpt.parent / "config.yaml").read_text())["method_kwargs"]
    run = copied_run(digits_ncp_ckpt.parent, tmp_path / "run",
                     {"method_kwargs": {**options, "k": None, "k_file": k_file}}, {"k": 7})
    recorded = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)[META_KEY]["k"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert not Path(k_file).exists()
    figures = []
    original = embedding_module.plot_embedding
    monkeypatch.setattr(embedding_module, "plot_embedding",
                        lambda *a: figures.append(original(*a)) or figures[-1])

    assert main(["plot", str(run), "--embedding", "--test-n", "64", "--device", "cpu",
                 "--out", str(tmp_path / "out")]) == 0
    assert png_size(tmp_path / "out" / "embedding.png") == (1020, 780)
    scatters = {collection.get_label(): collection.get_offsets()
                for collection in figures[0].axes[0].collections}
    centroids = next(offsets for label, offsets in scatters.items() if "centroid" in label)
    assert recorded == 7 and len(centroids) == recorded
    assert f"K = {recorded})" in figures[0].axes[0].get_title()


@pytest.mark.parametrize("damage, problem", [
    ({"data": "foo"}, "has data 'foo', not a block of keys: pass --dataset"),
    ({"data": [1, 2]}, "has data [1, 2], not a block of keys: pass --dataset"),
    ({"data": {"dataset": 5}}, "has data.dataset 5, not a dataset name: pass --dataset"),
    ({"seed": "abc"}, "has seed 'abc', not a whole number in [0, 2**63 - 1]: pass --seed"),
    ({"seed": 2.5}, "has seed 2.5, not a whole number in [0, 2**63 - 1]: pass --seed"),
    ({"seed": -1}, "has seed -1, not a whole number in [0, 2**63 - 1]: pass --seed"),
], ids=["data text", "data list", "dataset number", "seed text", "seed fraction", "seed negative"])
def test_embedding_of_a_damaged_config_names_its_key_and_the_option_to_pass(damage, problem, tmp_path, capsys):
    """--embedding reads the run's dataset and seed where --dataset and --seed are left out."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": "digits"}, "seed": 3, **damage}))
    assert main(["plot", str(run), "--embedding"]) == 2
    out, err = capsys.readouterr()
    assert (out + err).splitlines() == [f"error: {run / 'config.yaml'} {problem} (solo-ncp plot)"]


@pytest.mark.parametrize("options, config, dataset, seed", [
    (["--dataset", "digits", "--seed", "4"], {"data": "foo", "seed": "abc"}, "digits", 4),
    ([], {"data": {"dataset": "digits"}, "seed": None}, "digits", 5),
    ([], {"data": {"dataset": "digits"}}, "digits", 5),
    ([], {"data": {"dataset": "digits"}, "seed": 1e3}, "digits", 1000),
], ids=["options replace damaged keys", "seed null: the training's", "seed left out: the training's", "seed 1e3"])
def test_embedding_options_left_out_are_the_run_configs(options, config, dataset, seed, tmp_path):
    """A config without a seed trained with seed 5, solo-learn's configs' (plot took 0)."""
    args = parse_args(["plot", str(tmp_path), "--embedding", *options])
    plot.fill_from_run(args, tmp_path, config)
    assert (args.ckpt, args.dataset, args.seed) == (str(tmp_path / "last.ckpt"), dataset, seed)


# ---------------------------------------------------------------- select-k


def test_silhouette_plot_has_integer_k_ticks_a_framed_star_and_a_title(tmp_path):
    scores = {2: 0.52, 3: 0.31, 4: 0.47, 5: 0.18}  # the best K at the corner: first and highest
    about = {"dataset": "digits", "seed": 3, "n": 1437, "ckpt": "/runs/simclr-digits/last.ckpt"}
    figure = select_k.plot_scores(scores, 2, tmp_path / "s.png", about)
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks)
    star = next(line for line in axes.get_lines() if line.get_marker() == "*")
    x, y = axes.transData.transform((2, scores[2]))
    radius = star.get_markersize() / 2 * figure.dpi / 72
    box = axes.bbox
    assert box.x0 + radius <= x <= box.x1 - radius and box.y0 + radius <= y <= box.y1 - radius
    for words in ("digits", "N = 1437 images", "simclr-digits/last.ckpt", "seed 3"):
        assert words in axes.get_title(), (words, axes.get_title())
    assert png_size(tmp_path / "s.png") == (825, 570)


@pytest.mark.parametrize("scores, warned", [({2: 0.0, 3: 0.0, 4: 0.0}, True), ({2: 0.0, 3: 0.1, 4: 0.0}, False)],
                         ids=["flat", "a best K"])
def test_select_k_warns_when_every_k_scores_the_same(scores, warned, digits_simclr_ckpt, tmp_path, monkeypatch,
                                                     capsys):
    """A collapsed encoder's features (all one vector) scored 0 at every K: `best K = 2` was printed
    as any other choice, a K of the tie rule, not of the data."""
    import solo_ncp.cluster

    monkeypatch.setattr(solo_ncp.cluster, "sweep_k", lambda *args, **kwargs: dict(scores))
    assert main(["select-k", "--ckpt", str(digits_simclr_ckpt), "--dataset", "digits", "--k-min", "2",
                 "--k-max", "4", "--k-step", "1", "--train-n", "50", "--device", "cpu", "--out", str(tmp_path)]) == 0
    warning = ("[solo-ncp] warning: every K scored silhouette 0.0000: the features show no clusters to choose K by (a "
               "collapsed encoder?), and K is the tie rule's (the smallest), not the data's")
    assert (warning in capsys.readouterr().out.splitlines()) == warned


def test_select_k_titles_its_plot_with_what_k_json_records(digits_simclr_ckpt, tmp_path, monkeypatch):
    figures = []
    original = select_k.plot_scores
    monkeypatch.setattr(select_k, "plot_scores", lambda *a: figures.append(original(*a)) or figures[-1])
    assert main(["select-k", "--ckpt", str(digits_simclr_ckpt), "--dataset", "digits", "--k-min", "2",
                 "--k-max", "5", "--k-step", "1", "--train-n", "200", "--seed", "4", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    title = figures[0].axes[0].get_title()
    for words in ("digits", "N = 200 images", f"{digits_simclr_ckpt.parent.name}/last.ckpt", "seed 4"):
        assert words in title, (words, title)


@pytest.mark.parametrize("label, title, drawn_label, drawn_title", [
    ("run\udcff", "encoder \udcff/last.ckpt, seed 0", "run?", "encoder ?/last.ckpt, seed 0"),
    ("runs/a$\\frac{$b/last.ckpt", "encoder $x$/last.ckpt", "runs/a\\$\\frac{\\$b/last.ckpt",
     "encoder \\$x\\$/last.ckpt"),
], ids=["non-UTF-8", "dollars"])
def test_a_title_or_label_naming_any_path_is_drawn_as_written(tmp_path, label, title, drawn_label, drawn_title):
    """`select-k --ckpt` or `plot` of a folder whose name holds a byte that is not UTF-8 (Python holds
    it as a lone surrogate) failed at the figure, after the work, with matplotlib's TypeError; a path
    or label with `$`s was read as mathtext (two drew what lay between as math, and `a$\\frac{$b`, a
    checkpoint select-k read, failed `report` at Fig. 2 with a ParseSyntaxException)."""
    from solo_ncp.eval.figures import new_figure, save_figure

    figure = new_figure(3, 2)
    axes = figure.add_subplot()
    axes.plot([1, 2], [3, 4], label=label)
    axes.legend()
    figure.suptitle(title)
    assert save_figure(figure, tmp_path / "f.png") == tmp_path / "f.png"
    assert imread(tmp_path / "f.png").shape[:2] == (300, 450)
    assert figure._suptitle.get_text() == drawn_title
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [drawn_label]
