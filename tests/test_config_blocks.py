"""Blocks of a config and Hydra's composition: an override or a file that turns a block (`optimizer`,
the list of blocks `augmentations`) into a value, null or another shape is one error naming the
block's keys and the fix (solo-learn main's config-group choices, `augmentations=symmetric`, are
written so); a `defaults:` list that composes group files is refused naming them, Hydra's own keys
(`hydra:`, `hydra.run.dir=.`, `hydra/job_logging=disabled`) are dropped as Hydra drops them; a value
holding `=` unquoted names the quoting Hydra needs. The expected keys are read from the YAML here."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from solo_ncp.config import ConfigError, load_config

from tests.test_overrides import hydra_compose

ZOO = Path(__file__).resolve().parents[1] / "zoo_configs"
SIMCLR, NCP = ZOO / "fashionmnist/simclr.yaml", ZOO / "fashionmnist/ncp.yaml"
GROUPS = ("Hydra config groups (augmentations=symmetric, optimizer=sgd) are solo-learn main's Hydra "
          "defaults, not supported by solo-ncp: inline the group's file")


def file_block(path: Path, key: str):
    """The plain value of dotted `key` in the YAML file `path` (list entries by index)."""
    node = yaml.safe_load(path.read_text())
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def first_leaf(node, prefix: str):
    """(dotted key, value) of the first key holding neither a block nor a list, in file order."""
    for name, child in (node.items() if isinstance(node, dict) else enumerate(node)):
        if isinstance(child, (dict, list)):
            found = first_leaf(child, f"{prefix}.{name}")
            if found:
                return found
        else:
            return f"{prefix}.{name}", child


def as_override(value) -> str:
    """`value` as a command line writes it (true, null, 0.5)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def block_message(path: Path, line: str, key: str, given: str) -> str:
    """The refusal of override `line` replacing the block `key` of `path` with `given`."""
    block = file_block(path, key)
    value = yaml.safe_load(line.split("=", 1)[1])
    if isinstance(block, dict):
        what, names = "a block", list(block)
    else:
        what = f"a list of {len(block)} block{'s' * (len(block) != 1)}"
        names = list(dict.fromkeys(name for entry in block for name in entry))
    if isinstance(value, str) and isinstance(block, dict) and "name" in block:
        example = f"{key}.name={value}"
    else:
        leaf, leaf_value = first_leaf(block, key)
        example = f"{leaf}={as_override(leaf_value)}"
    fix = f"set its keys one by one ({example})"
    if value is None:
        fix = f"delete it with ~{key}, or {fix}"
    elif isinstance(value, str):
        fix += f"; {GROUPS}"
    return (f"override {line!r}: `{key}` is {what} in the config, holding {', '.join(names)}, and {given} "
            f"cannot replace it: {fix}")


@pytest.mark.parametrize("path, line, key, given", [
    (NCP, "augmentations=symmetric", "augmentations", "a value"),
    (NCP, "augmentations=[1,2]", "augmentations", "a list of values"),
    (SIMCLR, "augmentations={crop_size: 8}", "augmentations", "a block of keys"),
    (SIMCLR, "optimizer=sgd", "optimizer", "a value"),
    (SIMCLR, "+optimizer=sgd", "optimizer", "a value"),
    (SIMCLR, "++optimizer=[1]", "optimizer", "a list"),
    (SIMCLR, "backbone=resnet18", "backbone", "a value"),
    (SIMCLR, "scheduler=warmup_cosine", "scheduler", "a value"),
    (SIMCLR, "data=null", "data", "null"),
    (SIMCLR, "optimizer.kwargs=null", "optimizer.kwargs", "null"),
    (NCP, "augmentations.0=null", "augmentations.0", "null"),
    (NCP, "augmentations.0.rrc=true", "augmentations.0.rrc", "a value"),
])
def test_an_override_replacing_a_block_by_another_shape_names_its_keys_and_the_fix(path, line, key, given):
    """Each failed later with a traceback: `'str' object has no attribute '_is_none'`, KeyError
    'optimizer.name', a TypeError, or omegaconf's error (`augmentations.0=null`)."""
    with pytest.raises(ConfigError) as err:
        load_config(path, [line])
    assert str(err.value) == block_message(path, line, key, given)


def test_the_block_refusal_is_one_error_line_of_the_cli(capsys):
    from solo_ncp.cli import main

    line = "augmentations=symmetric"
    assert main(["pretrain", "--config", "fashionmnist/simclr", "data.subset=128", "max_epochs=1", line]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {block_message(SIMCLR, line, 'augmentations', 'a value')} (solo-ncp pretrain)"
    assert "Traceback" not in "\n".join(err) and sum(row.startswith("error:") for row in err) == 1


def test_deleting_a_block_solo_ncp_needs_names_the_override():
    """`~data` left `data.dataset` out and failed with KeyError 'data.dataset'."""
    with pytest.raises(ConfigError) as err:
        load_config(SIMCLR, ["~data"])
    assert str(err.value) == ("override '~data' leaves the config without `data.dataset`, which it needs: "
                              "give it a value")


@pytest.mark.parametrize("overrides, key, expected", [
    (["+auto_umap={enabled: false}", "auto_umap={enabled: true}"], "auto_umap", {"enabled": True}),
    (["+scheduler.lr_decay_steps=[1,2]", "scheduler.lr_decay_steps=[3]"], "scheduler.lr_decay_steps", [3]),
    (["optimizer={lr: 0.2, batch_size: 64}"], "optimizer.lr", 0.2),
    (["augmentations=[{rrc: {enabled: true}, crop_size: 28, num_crops: 2}]"], "augmentations",
     [{"rrc": {"enabled": True}, "crop_size": 28, "num_crops": 2}]),
    (["augmentations=[]"], "augmentations", []),
])
def test_a_block_replaced_by_one_of_its_shape_is_taken_as_hydra_takes_it(overrides, key, expected):
    ours = load_config(SIMCLR, overrides)
    assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydra_compose(SIMCLR, overrides))
    selected = OmegaConf.select(ours, key)
    assert (OmegaConf.to_container(selected) if OmegaConf.is_config(selected) else selected) == expected


@pytest.mark.parametrize("block, value", [("optimizer", "sgd"), ("augmentations", "symmetric")])
def test_a_value_where_the_file_needs_a_block_is_one_error(tmp_path, block, value):
    """`optimizer: sgd` written in the file failed later with a KeyError. The message lists what
    solo-ncp reads under the block: at least the keys the bundled file has there."""
    text = SIMCLR.read_text()
    assert f"\n{block}:\n" in text
    path = tmp_path / "simclr.yaml"
    path.write_text(text.replace(f"\n{block}:\n", f"\n{block}: {value}\nunused_{block}:\n"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    needed, each, where = (("a list of blocks", " in each entry", "a list of blocks, one per entry, under")
                           if block == "augmentations" else ("a block of keys", "", "its keys under"))
    match = re.fullmatch(
        re.escape(f"config {path}: `{block}` is a value ({block}: {value}), but solo-ncp reads it as {needed} "
                  f"(`{block}` takes ") + "(.+)" +
        re.escape(f"{each}): write {where} `{block}:`; {GROUPS}"), str(err.value))
    assert match, str(err.value)
    takes = match.group(1).split(", ")
    bundled = file_block(SIMCLR, block)
    assert takes == sorted(takes) and set(bundled[0] if isinstance(bundled, list) else bundled) <= set(takes)


MAIN_HEADER = """defaults:
  - _self_
  - augmentations: symmetric.yaml
  - wandb: private.yaml
  - override hydra/hydra_logging: disabled
  - override hydra/job_logging: disabled

# disable hydra outputs
hydra:
  output_subdir: null
  run:
    dir: .

"""
"""The head of solo-learn main's scripts/pretrain/cifar/*.yaml."""


def main_style_config(folder: Path, header: str, groups: bool) -> Path:
    """fashionmnist/simclr as solo-learn main's scripts/ write it: `header`, without the
    `augmentations` list (in augmentations/symmetric.yaml beside it where `groups`)."""
    config = yaml.safe_load(SIMCLR.read_text())
    augmentations = config.pop("augmentations")
    path = folder / "simclr.yaml"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    if groups:
        (folder / "augmentations").mkdir()
        (folder / "augmentations/symmetric.yaml").write_text(yaml.safe_dump(augmentations, sort_keys=False))
        (folder / "wandb").mkdir()
        (folder / "wandb/private.yaml").write_text("enabled: False\nproject: solo-learn\n")
    return path


@pytest.mark.parametrize("groups", [True, False], ids=["group files beside", "copied alone"])
def test_a_defaults_list_composing_group_files_names_them_to_inline(tmp_path, groups):
    """It was refused as `defaults.0` with "the closest key read is `data.val`"."""
    path = main_style_config(tmp_path, MAIN_HEADER, groups)
    entries = [entry for entry in yaml.safe_load(path.read_text())["defaults"]
               if isinstance(entry, dict) and not next(iter(entry)).startswith("override hydra/")]
    assert entries == [{"augmentations": "symmetric.yaml"}, {"wandb": "private.yaml"}]
    where = (lambda name: str(tmp_path / name)) if groups else \
        (lambda name: f"solo-learn's scripts/<task>/<dataset>/{name}")
    inline = "; ".join(f"`{group}: {option}` -> the keys of {where(f'{group}/{option}')} under `{group}:`"
                       for entry in entries for group, option in entry.items())
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"config {path} holds Hydra's `defaults` list: solo-ncp reads one self-contained file, not Hydra's "
        f"defaults list: inline the listed group files ({inline}) and delete `defaults` (its `_self_` and "
        "`override hydra/...` entries may stay)")


def test_the_defaults_refusal_is_one_error_line_of_the_cli(tmp_path, capsys):
    from solo_ncp.cli import main

    path = main_style_config(tmp_path, MAIN_HEADER, groups=True)
    assert main(["pretrain", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: config {path} holds Hydra's `defaults` list: solo-ncp reads one "
                              "self-contained file") and err[-1].endswith("(solo-ncp pretrain)")
    assert "Traceback" not in "\n".join(err) and sum(row.startswith("error:") for row in err) == 1


INLINED_HEADER = MAIN_HEADER.replace("  - augmentations: symmetric.yaml\n  - wandb: private.yaml\n", "")
"""main's head once its groups are inlined: `_self_`, Hydra's own logging groups and `hydra:`."""


@pytest.mark.parametrize("overrides", [
    [], ["hydra.run.dir=/tmp/elsewhere", "hydra/job_logging=default", "++hydra.output_subdir=null", "max_epochs=3"],
])
def test_hydras_own_keys_are_dropped_as_hydra_drops_them(tmp_path, overrides):
    """`hydra.output_subdir` was refused ("the closest key read is method_kwargs.proj_output_dim"),
    `hydra.run.dir=.` needed a `+`. Hydra hands main_pretrain.py a cfg without `hydra` and
    `defaults`: solo-ncp reads the same values."""
    path = tmp_path / "simclr.yaml"
    path.write_text(INLINED_HEADER + SIMCLR.read_text())
    ours = load_config(path, overrides)
    assert "hydra" not in ours and "defaults" not in ours
    assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydra_compose(path, overrides))


def test_a_config_group_override_is_refused_saying_so():
    line = "augmentations/extra=symmetric"
    with pytest.raises(ConfigError) as err:
        load_config(SIMCLR, [line])
    assert str(err.value) == (f"override {line!r}: `augmentations/extra` is a Hydra config group: {GROUPS}, or "
                              "set its keys one by one (augmentations.extra.<key>=<value>)")


CKPT = "/tmp/x/simclr-ep=0.ckpt"
"""A checkpoint named as solo-learn main's Checkpointer names them."""


def test_an_unquoted_equals_sign_in_a_value_names_the_quoting_hydra_needs():
    line = f"method_kwargs.teacher_ckpt={CKPT}"
    with pytest.raises(ConfigError) as err:
        load_config(NCP, [line])
    assert str(err.value) == (
        f"override {line!r} is not key=value, +key=value, ++key=value or ~key (Hydra's grammar: mismatched input "
        f"'=' expecting <EOF>): an `=` in a value needs the value quoted, as Hydra requires: "
        f"method_kwargs.teacher_ckpt='{CKPT}' (in a shell, quote it once more so the quotes arrive: "
        f"\"method_kwargs.teacher_ckpt='{CKPT}'\")")


def test_the_quoted_value_the_fix_names_is_read_as_hydra_reads_it():
    quoted = [f"method_kwargs.teacher_ckpt='{CKPT}'"]
    assert load_config(NCP, quoted).method_kwargs.teacher_ckpt == CKPT
    assert hydra_compose(NCP, quoted).method_kwargs.teacher_ckpt == CKPT


def test_the_shell_form_of_the_fix_arrives_as_the_quoted_override_for_a_value_with_a_quote():
    """A value holding `'` as well as `=`: the fix's shell form, run through bash, hands over the
    override Hydra reads back as the value (the suggestion was 'key="...it's..."', which bash
    cannot parse). The fix is override_of's quoting, the one reproduce writes its paths with."""
    value = "/tmp/it's/simclr-ep=0.ckpt"
    with pytest.raises(ConfigError) as err:
        load_config(NCP, [f"method_kwargs.teacher_ckpt={value}"])
    shell = str(err.value).rsplit("quote it once more so the quotes arrive: ", 1)[1][:-1]
    arrived = subprocess.run(["bash", "-c", f"printf %s {shell}"], capture_output=True, text=True, check=True).stdout
    assert load_config(NCP, [arrived]).method_kwargs.teacher_ckpt == value


def test_the_quoting_fix_is_one_error_line_of_the_cli(capsys):
    from solo_ncp.cli import main

    assert main(["train", "--config", "fashionmnist/ncp", f"method_kwargs.teacher_ckpt={CKPT}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f": an `=` in a value needs the value quoted, as Hydra requires: "
                            f"method_kwargs.teacher_ckpt='{CKPT}' (in a shell, quote it once more so the "
                            f"quotes arrive: \"method_kwargs.teacher_ckpt='{CKPT}'\") (solo-ncp train)")
    assert err[-1].startswith("error: override ") and sum(row.startswith("error:") for row in err) == 1
