"""One --out folder holds one command's result: `solo-ncp eval` refuses an export folder and
`solo-ncp export` an eval folder (and both a poc or select-k folder), before any work and with or
without --overwrite, which replaces only the command's own earlier result; no command removes or
replaces the file it reads as --ckpt. Before, eval into an export folder deleted its encoder.pt
(export.json still named it), and export into an AFF eval folder replaced the fine-tuned encoder.pt."""
import hashlib
import json
from pathlib import Path

import pytest

from solo_ncp.cli import main
from tests.test_eval_cli import plant_dual_bn

pytestmark = pytest.mark.usefixtures("single_thread")

EVAL = ["--dataset", "digits", "--epochs", "1", "--train-n", "32", "--test-n", "8", "--batch-size", "32",
        "--pgd-steps", "1", "--aa-n", "0"]


def contents(folder: Path) -> dict:
    """{name: sha256 of its bytes, or "folder"} of every entry in `folder`, hidden ones too."""
    return {path.name: "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in folder.iterdir()}


def refused(argv, capsys) -> str:
    """The error line of `solo-ncp <argv>`, which must exit 2."""
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def held(folder: Path, other: str, record: str, command: str) -> str:
    return (f"error: --out {folder} holds the result of `solo-ncp {other}` ({record}): `solo-ncp {command}` does "
            f"not write into another command's folder (--overwrite replaces only an earlier `solo-ncp {command}` "
            f"result); choose another --out (solo-ncp {command})")


@pytest.fixture(scope="module")
def dual_bn_ckpt(digits_simclr_ckpt, tmp_path_factory) -> Path:
    return plant_dual_bn(digits_simclr_ckpt, tmp_path_factory.mktemp("planted") / "dual.ckpt")


@pytest.fixture(scope="module")
def adv_export(dual_bn_ckpt, tmp_path_factory) -> Path:
    """An export of the adv branch, as the defect's `export --bn adv`."""
    out = tmp_path_factory.mktemp("exports") / "adv"
    assert main(["export", "--ckpt", str(dual_bn_ckpt), "--bn", "adv", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def aff_eval(digits_simclr_ckpt, tmp_path_factory) -> Path:
    """An AFF eval of a single-BN encoder: its fine-tuned encoder is encoder.pt, an export's name."""
    out = tmp_path_factory.mktemp("evals") / "aff"
    assert main(["eval", "--ckpt", str(digits_simclr_ckpt), "--mode", "aff", *EVAL, "--out", str(out)]) == 0
    assert {"encoder.pt", "head.pt", "metrics.json"} <= set(contents(out))
    return out


@pytest.mark.parametrize("ckpt, extra", [
    ("export", ["--cache-features"]),
    ("export", ["--cache-features", "--overwrite"]),
    ("export/encoder.pt", ["--bn", "adv", "--overwrite"]),
    ("dual", ["--bn", "adv", "--mode", "aff", "--overwrite"]),
], ids=["export", "export --overwrite", "its encoder.pt --overwrite", "checkpoint aff --overwrite"])
def test_eval_into_an_export_folder_is_refused_and_leaves_every_file(ckpt, extra, adv_export, dual_bn_ckpt,
                                                                     tmp_path, capsys):
    """The defect: eval exited 0 and removed encoder.pt, which export.json names."""
    before = contents(adv_export)
    assert {"encoder.pt", "export.json", "solo_learn.ckpt", "model.py"} <= set(before)
    path = dual_bn_ckpt if ckpt == "dual" else adv_export / ckpt[len("export/"):]
    line = refused(["eval", "--ckpt", str(path), *EVAL, *extra, "--out", str(adv_export)], capsys)
    assert line == held(adv_export, "export", "export.json", "eval"), line
    assert contents(adv_export) == before
    # the export still evaluates (before: "checkpoint .../encoder.pt does not exist")
    assert main(["eval", "--ckpt", str(adv_export), *EVAL, "--cache-features", "--out", str(tmp_path / "e")]) == 0


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--head", "EVAL"], ["--head", "EVAL", "--overwrite"]],
                         ids=["plain", "--overwrite", "--head", "--head --overwrite"])
def test_export_into_an_eval_folder_is_refused_and_leaves_every_file(extra, aff_eval, digits_simclr_ckpt,
                                                                     tmp_path, capsys):
    """The reverse: export replaced AFF's encoder.pt, and a later `export --head` of that folder then
    failed with "classifier ... does not fit the backbone"."""
    before = contents(aff_eval)
    extra = [str(aff_eval) if arg == "EVAL" else arg for arg in extra]
    line = refused(["export", "--ckpt", str(digits_simclr_ckpt), *extra, "--out", str(aff_eval)], capsys)
    assert line == held(aff_eval, "eval", "metrics.json", "export"), line
    assert contents(aff_eval) == before
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(digits_simclr_ckpt), "--head", str(aff_eval), "--out", str(out)]) == 0
    assert json.loads((out / "export.json").read_text())["classifier"]["encoder"].endswith("encoder.pt")


@pytest.mark.parametrize("record, other", [("poc.json", "poc"), ("k.json", "select-k")])
def test_a_poc_or_select_k_folder_is_refused_by_eval_and_export(record, other, digits_simclr_ckpt, tmp_path,
                                                                capsys):
    folder = tmp_path / other
    folder.mkdir()
    (folder / record).write_text("{}\n")
    before = contents(folder)
    for command, extra in (("eval", EVAL), ("export", [])):
        for overwrite in ([], ["--overwrite"]):
            argv = [command, "--ckpt", str(digits_simclr_ckpt), *extra, *overwrite, "--out", str(folder)]
            assert refused(argv, capsys) == held(folder, other, record, command)
    assert contents(folder) == before


@pytest.mark.parametrize("command, extra", [("poc", ["--k", "3", *EVAL[:8]]),
                                            ("select-k", ["--dataset", "digits", "--k-min", "2", "--k-max", "3",
                                                          "--k-step", "1"])])
@pytest.mark.parametrize("record, other", [("metrics.json", "eval"), ("export.json", "export")])
def test_poc_and_select_k_refuse_an_eval_or_export_folder(command, extra, record, other, digits_simclr_ckpt,
                                                          tmp_path, capsys):
    folder = tmp_path / other
    folder.mkdir()
    (folder / record).write_text("{}\n")
    before = contents(folder)
    for overwrite in ([], ["--overwrite"]):
        argv = [command, "--ckpt", str(digits_simclr_ckpt), *extra, *overwrite, "--out", str(folder)]
        assert refused(argv, capsys) == held(folder, other, record, command)
    assert contents(folder) == before


def test_eval_overwrite_into_its_own_eval_folder_still_works(digits_simclr_ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(digits_simclr_ckpt), "--mode", "aff", *EVAL, "--out", str(out)]) == 0
    line = refused(["eval", "--ckpt", str(digits_simclr_ckpt), *EVAL, "--out", str(out)], capsys)
    assert line.startswith(f"error: {out / 'metrics.json'} exists: pass --overwrite"), line
    assert main(["eval", "--ckpt", str(digits_simclr_ckpt), *EVAL, "--seed", "3", "--overwrite",
                 "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert (record["mode"], record["seed"]) == ("slf", 3)
    assert sorted(contents(out)) == ["head.pt", "metrics.json"]  # AFF's encoder.pt went with its result


def test_export_overwrite_into_its_own_export_still_works(dual_bn_ckpt, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(dual_bn_ckpt), "--bn", "adv", "--out", str(out)]) == 0
    line = refused(["export", "--ckpt", str(dual_bn_ckpt), "--bn", "clean", "--out", str(out)], capsys)
    assert line.startswith(f"error: {out / 'export.json'} exists: pass --overwrite"), line
    encoder = contents(out)["encoder.pt"]
    assert main(["export", "--ckpt", str(dual_bn_ckpt), "--bn", "clean", "--overwrite", "--out", str(out)]) == 0
    assert json.loads((out / "export.json").read_text())["bn"] == "clean"
    assert contents(out)["encoder.pt"] != encoder


def test_no_command_removes_or_replaces_the_checkpoint_it_reads(adv_export, aff_eval, tmp_path, capsys):
    """--ckpt inside --out, as a file the command writes there (directly or through a link) or as
    the folder itself, is refused even with --overwrite; its files stay byte for byte."""
    export, evaluated = contents(adv_export), contents(aff_eval)
    link = tmp_path / "link.ckpt"
    link.symlink_to(adv_export / "solo_learn.ckpt")
    rows = [
        (["export", "--ckpt", str(adv_export)], adv_export,
         f"--ckpt {adv_export} is the --out folder: `solo-ncp export`"),
        (["export", "--ckpt", str(adv_export / "solo_learn.ckpt")], adv_export,
         f"--ckpt {adv_export / 'solo_learn.ckpt'} is a file `solo-ncp export` writes in --out {adv_export}: "
         "`solo-ncp export`"),
        (["export", "--ckpt", str(link)], adv_export,
         f"--ckpt {link} is a file `solo-ncp export` writes in --out {adv_export}: `solo-ncp export`"),
        (["eval", "--ckpt", str(aff_eval / "encoder.pt"), *EVAL], aff_eval,
         f"--ckpt {aff_eval / 'encoder.pt'} is a file `solo-ncp eval` writes in --out {aff_eval}: `solo-ncp eval`"),
    ]
    for argv, out, says in rows:
        command = argv[0]
        line = refused([*argv, "--overwrite", "--out", str(out)], capsys)
        assert line == (f"error: {says} would remove or replace the file it reads; choose another --out "
                        f"(solo-ncp {command})"), line
    assert (contents(adv_export), contents(aff_eval)) == (export, evaluated)


def test_result_records_are_the_files_each_command_writes_last():
    """io.RESULT_RECORDS names each command's own record, which is among the files it writes."""
    from solo_ncp.cluster.select_k import K_SELECTION_FILES
    from solo_ncp.commands.eval import output_files
    from solo_ncp.commands.poc import POC_FILES, POC_JSON
    from solo_ncp.eval.results import K_FILE, METRICS_FILE, POC_FILE
    from solo_ncp.io import RESULT_RECORDS
    from solo_ncp.models.checkpoint import EXPORT_INFO
    from solo_ncp.models.export import EXPORT_FILES

    assert RESULT_RECORDS == {METRICS_FILE: "eval", EXPORT_INFO: "export", POC_JSON: "poc", K_FILE: "select-k"}
    assert POC_FILE == POC_JSON
    for record, files in ((METRICS_FILE, output_files()), (EXPORT_INFO, EXPORT_FILES), (POC_JSON, POC_FILES),
                          (K_FILE, K_SELECTION_FILES)):
        assert record in files and not (set(RESULT_RECORDS) - {record}) & set(files)


@pytest.mark.parametrize("command", ["eval", "poc", "select-k", "export"])
def test_a_command_writing_into_a_folder_another_one_is_writing_into_is_refused_before_any_work(
        command, digits_simclr_ckpt, tmp_path, capsys):
    """The defect: a second eval into the --out of one still running emptied its staging folder;
    both exited 0, and the first's metrics.json named a head.pt that was gone. The lock taken here
    stands for the first command's (flock refuses another open of the file, in this process too)."""
    import os

    from solo_ncp.io import folder_lock

    out = tmp_path / "out"
    needed = {"export": [], "poc": ["--dataset", "digits", "--k", "2"]}.get(command, ["--dataset", "digits"])
    with folder_lock(out):
        line = refused([command, "--ckpt", str(digits_simclr_ckpt), *needed, "--out", str(out)], capsys)
        assert line == (f"error: {out} is in use by process {os.getpid()} (lock file {out / '.lock'}): wait until "
                        f"it ends (solo-ncp {command})")
        assert [path.name for path in out.iterdir()] == [".lock"]
