"""Stage-1 crop counts and queue sizes the installed solo-learn fails on at its first step are
refused before the run: each case runs the library with the check switched off (the oracle: it
fails, or trains), then with it on."""
import ast
import inspect
import textwrap

import pytest
from omegaconf import OmegaConf

import solo_ncp.launch.methods as launch_methods
from solo_ncp._host import current_host
from solo_ncp.config import ConfigError, load_config
from tests.conftest import DIGITS_SIMCLR, ROOT
from tests.test_pretrain import method_overrides

MAIN = current_host().is_main
VICREG = ["method=vicreg", "~method_kwargs.temperature"] + (
    [] if MAIN else ["+method_kwargs.sim_loss_weight=25", "+method_kwargs.var_loss_weight=25",
                     "+method_kwargs.cov_loss_weight=1"])
MOCO = ["method=mocov2plus", "+method_kwargs.queue_size=1000"] + (
    ["+momentum.base_tau=0.99", "+momentum.final_tau=1.0"] if MAIN else
    ["+method_kwargs.base_tau_momentum=0.99", "+method_kwargs.final_tau_momentum=1.0",
     "+method_kwargs.momentum_classifier=false"])
ONE_STEP = ["data.subset=128", "limit_train_batches=1", "max_epochs=1", "name=v"]


def config_with_crops(folder, large: int, small: int):
    """The bundled SimCLR config with `large` crops of 8 px and `small` of 6 px (digits' size)."""
    cfg = OmegaConf.load(ROOT / "zoo_configs/fashionmnist/simclr.yaml")
    cfg.augmentations[0].crop_size, cfg.augmentations[0].num_crops = 8, large
    if small:
        cfg.augmentations.append(OmegaConf.merge(cfg.augmentations[0], {"crop_size": 6, "num_crops": small}))
    path = folder / "crops.yaml"
    OmegaConf.save(cfg, path)
    return path


# (method overrides, large, small, whether the installed host's method fails at its first step):
# solo-learn 1.0.2 pairs every crop in VICReg, and all large crops in SimCLR without small ones;
# main pairs the large crops of VICReg; BYOL takes any crops on both.
CASES = {
    "vicreg 2+1": (VICREG, 2, 1, not MAIN),
    "vicreg 3+0": (VICREG, 3, 0, True),
    "simclr 3+0": ([], 3, 0, not MAIN),
    "byol 2+1": (method_overrides("byol"), 2, 1, False),
}


@pytest.mark.parametrize("case", CASES)
def test_crops_a_method_cannot_pair_are_refused_before_the_run(case, tmp_path, capsys, monkeypatch):
    overrides, large, small, fails = CASES[case]
    config = config_with_crops(tmp_path, large, small)
    argv = ["pretrain", "--config", str(config), *DIGITS_SIMCLR[1:], *overrides, *ONE_STEP]
    from solo_ncp.cli import main

    with monkeypatch.context() as unchecked:
        unchecked.setattr(launch_methods, "check_views", lambda cfg, num_crops: None)
        code = main(argv + [f"checkpoint.dir={tmp_path / 'unchecked'}"])
    last = (capsys.readouterr().err.strip().splitlines() or [""])[-1]
    assert (code, "values to unpack" in last) == ((2, True) if fails else (0, False)), last
    code = main(argv + [f"checkpoint.dir={tmp_path / 'checked'}"])
    last = (capsys.readouterr().err.strip().splitlines() or [""])[-1]
    assert code == (2 if fails else 0), last
    if fails:
        assert last.startswith(f"error: method={overrides[0].split('=')[1] if overrides else 'simclr'} on ")
        assert f"the augmentations give {large} large and {small} small" in last
        assert not (tmp_path / "checked").exists()


def test_a_queue_no_step_fills_evenly_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    """MoCo v2+ asserts queue_size % keys == 0 at its first step (keys: 128 a step here): a bare
    AssertionError from inside solo-learn."""
    from solo_ncp.cli import main

    argv = ["pretrain", "--config", str(ROOT / "zoo_configs/fashionmnist/simclr.yaml"), *DIGITS_SIMCLR,
            *MOCO, "backbone.name=resnet18", *ONE_STEP]
    with monkeypatch.context() as unchecked:
        unchecked.setattr(launch_methods, "check_views", lambda cfg, num_crops: None)
        with pytest.raises(AssertionError) as failure:
            main(argv + [f"checkpoint.dir={tmp_path / 'unchecked'}"])
    assert failure.traceback[-1].statement.lines == ["        assert self.queue_size % batch_size == 0  # for simplicity"]
    capsys.readouterr()
    assert main(argv + [f"checkpoint.dir={tmp_path / 'checked'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: method_kwargs.queue_size=1000 is no multiple of the 128 keys each step adds to mocov2plus's "
        "queue (optimizer.batch_size 128 x 1 device(s) x 1 node(s)), which solo-learn asserts at the first "
        "step: set it to a multiple, e.g. 1024 (solo-ncp pretrain)")
    assert not (tmp_path / "checked").exists()
    assert main(argv + ["method_kwargs.queue_size=1024", f"checkpoint.dir={tmp_path / 'fits'}"]) == 0


@pytest.mark.parametrize("overrides, keys", [([], 256), (["devices=2", "num_nodes=3"], 1536)])
def test_the_queue_takes_the_keys_of_every_device(overrides, keys):
    """Keys a step adds: batch 256 x devices x nodes (solo-learn gathers them from every process)."""
    base = [MOCO[0], *MOCO[2:], "optimizer.batch_size=256", *overrides]
    fits = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", base + [f"+method_kwargs.queue_size={keys * 3}"])
    launch_methods.check_views(fits, (2, 0))
    short = load_config(ROOT / "zoo_configs/fashionmnist/simclr.yaml", base + [f"+method_kwargs.queue_size={keys * 3 - 128}"])
    with pytest.raises(ConfigError, match=f"the {keys} keys each step adds.*e.g. {keys * 3}$"):
        launch_methods.check_views(short, (2, 0))


def pairs_two_views(cls: type) -> bool:
    """Whether `cls.training_step`'s source unpacks a value of `out` into two names (`z1, z2 = out["z"]`)."""
    step = vars(cls).get("training_step")
    tree = ast.parse(textwrap.dedent(inspect.getsource(step))) if step else ast.Module(body=[])
    return any(isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple)
               and len(node.targets[0].elts) == 2 and isinstance(node.value, ast.Subscript)
               and getattr(node.value.value, "id", None) == "out" for node in ast.walk(tree))


def test_the_two_view_tables_are_the_methods_whose_step_unpacks_two_views():
    """Read from the installed solo-learn's source: on 1.0.2 SimCLR unpacks two views only without
    small crops (its other branch takes any number), which `check_views` rules apart."""
    from solo_ncp._host import import_solo

    methods = import_solo("solo.methods").METHODS
    read = {name for name, cls in methods.items() if pairs_two_views(cls)}
    table = launch_methods.TWO_VIEW_METHODS_MAIN if MAIN else launch_methods.TWO_VIEW_METHODS_102 | {"simclr"}
    assert read == table
