"""Overrides in Hydra's grammar: `load_config` resolves a zoo config and its overrides to what
solo-learn main's main_pretrain.py composes with Hydra (`--config-path --config-name`), and refuses
what Hydra refuses, naming the closest existing key."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from solo_ncp._host import current_host
from solo_ncp.config import LAUNCHER_KEYS, ConfigError, load_config

ZOO = Path(__file__).resolve().parents[1] / "zoo_configs"
CONFIGS = sorted(ZOO.glob("*/*.yaml"))

OVERRIDE_SETS = {
    "change": ["max_epochs=2", "optimizer.lr=0.1", "augmentations.0.crop_size=8",
               "data.dataset=digits", "seed=null", "precision=16-mixed"],
    "add": ["+knn_eval.k=3", "+scheduler.lr_decay_steps=[1,2]", "++optimizer.lr=1e-3", "++name=n",
            "+auto_umap={enabled: false, dir: [x, 'y z']}", "+optimizer.kwargs.nesterov=true"],
    "delete": ["~auto_resume", "~checkpoint.frequency", "~seed=5"],
    "quoted": ["checkpoint.dir='/tmp/a b'", "name=${method}-x", "++wandb.project='2024'"],
    "launcher": ["+data.subset=10", "++limit_train_batches=0.5", "+backbone.kwargs.cifar=false"],
}
REFUSED = {
    "unknown key": ["max_epoch=2"],
    "add over a value": ["+max_epochs=3"],
    "delete a missing key": ["~nope"],
    "delete another value": ["~max_epochs=1"],
    "no value": ["max_epochs"],
    "sweep": ["max_epochs=1,2"],
}


def hydra_compose(path: Path, overrides):
    """What main_pretrain.py's `@hydra.main` hands its body for `--config-path <folder>
    --config-name <file>` and `overrides`, unlocked as main_pretrain.py unlocks it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(path.parent), version_base="1.2"):
        cfg = compose(config_name=path.stem, overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg


@pytest.mark.parametrize("overrides", OVERRIDE_SETS.values(), ids=OVERRIDE_SETS)
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_overrides_resolve_as_solo_learn_mains_hydra_loading(path, overrides):
    """Same file, same overrides: the same values."""
    ours = load_config(path, overrides)
    theirs = hydra_compose(path, overrides)
    assert OmegaConf.to_container(ours, resolve=True) == OmegaConf.to_container(theirs, resolve=True)


@pytest.mark.parametrize("overrides", REFUSED.values(), ids=REFUSED)
def test_what_hydra_refuses_is_refused(overrides):
    path = ZOO / "cifar10/simclr.yaml"
    with pytest.raises(Exception):
        hydra_compose(path, overrides)
    with pytest.raises(ConfigError, match="override"):
        load_config(path, overrides)


@pytest.mark.parametrize(
    "config, override, closest",
    [
        ("simclr", "max_epoch=2", "max_epochs"),
        ("ncp", "method_kwargs.lamda=3", "method_kwargs.lam"),
        ("simclr", "optimizer.batchsize=64", "optimizer.batch_size"),
        ("simclr", "augmentations.0.cropsize=8", "augmentations.0.crop_size"),
    ],
)
def test_an_unknown_key_names_the_closest_one_and_the_plus(config, override, closest):
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / f"cifar10/{config}.yaml", [override])
    message = str(err.value)
    assert f"did you mean `{closest}`?" in message and f"write +{override}" in message
    assert "\n" not in message


def test_values_are_typed_as_hydra_types_them():
    cfg = load_config(ZOO / "cifar10/ncp.yaml", [
        "max_epochs=3", "optimizer.lr=1e-3", "method_kwargs.dual_bn=false", "method_kwargs.k=null",
        "+method_kwargs.k_file='runs/k 1/k.json'", "devices=[0,1]", "name='007'",
        "++method_kwargs.lam=3", "~method_kwargs.assign"])
    assert cfg.max_epochs == 3 and cfg.optimizer.lr == 1e-3 and cfg.method_kwargs.dual_bn is False
    assert cfg.method_kwargs.k is None and cfg.method_kwargs.k_file == "runs/k 1/k.json"
    assert list(cfg.devices) == [0, 1] and cfg.name == "007" and cfg.method_kwargs.lam == 3
    assert "assign" not in cfg.method_kwargs
    assert not any(key.startswith(("+", "~")) for key in cfg) and "+method_kwargs" not in cfg


@pytest.mark.parametrize("key, value", [("data.subset", "100"), ("backbone.kwargs.cifar", "false"),
                                        ("limit_train_batches", "2"), ("data.val", "false")])
def test_launcher_keys_take_key_value_as_plus_plus(key, value):
    """solo-ncp's own keys, absent from the zoo files: `key=value` reads as `++key=value`."""
    path = ZOO / "cifar10/simclr.yaml"
    assert key in LAUNCHER_KEYS and OmegaConf.select(OmegaConf.load(path), key) is None
    ours = load_config(path, [f"{key}={value}"])
    assert ours == hydra_compose(path, [f"++{key}={value}"])


def test_an_unknown_launcher_key_names_the_launcher_key():
    with pytest.raises(ConfigError, match="did you mean `data.subset`"):
        load_config(ZOO / "cifar10/simclr.yaml", ["data.subst=5"])


@pytest.mark.parametrize(
    "config, override, key, closest",
    [
        ("simclr", "+unknown.key=1", "unknown.key", None),
        ("simclr", "++unknown.key=1", "unknown.key", None),
        ("ncp", "+method_kwargs.lamda=3", "method_kwargs.lamda", "method_kwargs.lam"),
        ("ncp", "++method_kwargs.lamda=3", "method_kwargs.lamda", "method_kwargs.lam"),
        ("simclr", "+method_kwargs.temprature=0.2", "method_kwargs.temprature",
         "method_kwargs.temperature"),
        ("simclr", "++optimizer.weight_decy=0", "optimizer.weight_decy", "optimizer.weight_decay"),
        ("simclr", "+augmentations.0.rrc.crop_min_scal=0.2", "augmentations.0.rrc.crop_min_scal",
         "augmentations.0.rrc.crop_min_scale"),
        ("simclr", "+knn_evl={enabled: true}", "knn_evl.enabled", "knn_eval.enabled"),
    ],
)
def test_a_key_nothing_reads_is_refused_naming_the_closest_read_key(config, override, key, closest):
    """Hydra adds these keys; nothing reads them, so a run would silently train without them
    (`+method_kwargs.lamda=3` at lambda 6)."""
    path = ZOO / f"cifar10/{config}.yaml"
    assert OmegaConf.select(hydra_compose(path, [override]), key) is not None
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    message = str(err.value)
    assert message.startswith(f"`{key}` is not read by solo-ncp or {config} on ")
    assert (f"did you mean `{closest}`?" if closest else "the closest key read is `") in message
    assert "\n" not in message


def test_an_unread_method_option_lists_the_methods_options_and_means_none_of_them():
    """`pgd_steps` is an ncp option, not SimCLR's: no option of SimCLR is meant (a shared
    `method_kwargs.` once made `supervised` a "did you mean"), so the message lists SimCLR's: those
    of solo-learn's SimCLR (proj_hidden_dim, proj_output_dim, temperature, on 1.0.2 supervised)."""
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", ["+method_kwargs.pgd_steps=2"])
    options = "proj_hidden_dim, proj_output_dim, " + ("" if current_host().is_main else "supervised, ") + "temperature"
    assert str(err.value).endswith(f"(`method_kwargs` takes {options}): remove it or correct its name")
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", ["method_kwargs.pgd_steps=2"])
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize("key, candidates, expected", [
    ("method_kwargs.lamda", ["method_kwargs.lam", "method_kwargs.eps", "max_epochs"], ("method_kwargs.lam", True)),
    ("method_kwargs.pgd_steps", ["method_kwargs.supervised", "method_kwargs.temperature", "method_kwargs"],
     ("method_kwargs.supervised", False)),
    ("optimiser.lr", ["optimizer.lr", "optimizer.name", "max_epochs"], ("optimizer.lr", True)),
    ("knn_evl.enabled", ["knn_eval.enabled", "knn_eval.k", "name"], ("knn_eval.enabled", True)),
    ("unknown.key", ["name"], ("name", False)),
    ("knn_eval2.x", ["knn_eval.k"], ("knn_eval.k", False)),
    ("max_epoch", ["max_epochs", "method_kwargs.max_epoch2"], ("max_epochs", True)),
    ("a.b", [], (None, False)),
])
def test_closest_key_compares_names_within_a_block_and_blocks_across(key, candidates, expected):
    from solo_ncp.config.schema import closest_key

    assert closest_key(key, candidates) == expected


@pytest.mark.parametrize("override", ["~method_kwargs.temperature", "method_kwargs.temperature=null",
                                      "~method_kwargs.proj_output_dim"])
def test_an_option_solo_learns_method_cannot_do_without_is_refused_when_left_out(override):
    """SimCLR takes proj_output_dim, proj_hidden_dim and temperature without a default (1.0.2's
    `__init__`; main asserts them present): without one it failed with a TypeError (1.0.2) or
    omegaconf's missing-key error (main) while the model was built."""
    key = override.lstrip("~").split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", [override])
    assert str(err.value) == (f"simclr on {current_host().api} needs `{key}`, which the config leaves out or "
                              f"sets to null: give it a value (++{key}=<value>)")


def test_the_options_solo_learns_simclr_cannot_do_without():
    from solo_ncp.config import method_class
    from solo_ncp.config.schema import required_method_keys

    assert set(required_method_keys(method_class("simclr"))) == {
        "method_kwargs.proj_output_dim", "method_kwargs.proj_hidden_dim", "method_kwargs.temperature"}
    assert required_method_keys(method_class("ncp")) == ()


@pytest.mark.parametrize("override, message", [
    ("method_kwargs.temperature=abc", "method_kwargs.temperature='abc' must be a number, as the config file's 0.5 is"),
    ("method_kwargs.temperature='0.2'", "method_kwargs.temperature='0.2' must be a number, as the config file's "
                                        "0.5 is: in quotes it is text; drop the quotes (method_kwargs.temperature=0.2)"),
    ("method_kwargs.proj_output_dim=[64]", "method_kwargs.proj_output_dim=[64] must be a number, as the config "
                                           "file's 128 is"),
    ("optimizer.kwargs.momentum=true", "optimizer.kwargs.momentum=True must be a number, as the config file's 0.9 is"),
    ("optimizer.kwargs.clip_lr=yes", "optimizer.kwargs.clip_lr='yes' must be true or false, as the config "
                                     "file's true is"),
    ("optimizer.kwargs.clip_lr=0", "optimizer.kwargs.clip_lr=0 must be true or false, as the config file's true is"),
    # SimCLR builds nn.Linear(hidden, 64.0), which fails (torch.empty takes whole numbers only)
    ("method_kwargs.proj_output_dim=64.0", "method_kwargs.proj_output_dim=64.0 must be a whole number: the method "
                                           "takes it as written, and 64.0 is a float; write method_kwargs.proj_output_dim=64"),
])
def test_an_override_keeps_the_kind_of_a_solo_learn_or_torch_option(override, message):
    """These options reach solo-learn's method or torch's optimizer unconverted: text for
    SimCLR's temperature failed at the first training step."""
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", [override])
    assert str(err.value) == message


FILE_KINDS = {  # the cifar10/simclr.yaml line replaced -> the error: solo-learn 1.0.2's SimCLR parses
    # --temperature with type=float and --proj_output_dim with type=int (its add_model_specific_args);
    # main's SimCLR.__init__ reads them as `temperature: float` and `proj_output_dim: int`
    ("temperature: 0.5", "temperature: abc"): "method_kwargs.temperature='abc' must be a number",
    ("temperature: 0.5", "temperature: '0.2'"): "method_kwargs.temperature='0.2' must be a number: in quotes it "
                                                "is text; drop the quotes (method_kwargs.temperature=0.2)",
    ("proj_output_dim: 128", "proj_output_dim: 12.5"): "method_kwargs.proj_output_dim=12.5 must be a whole number",
    ("proj_output_dim: 128", "proj_output_dim: 128.0"): "method_kwargs.proj_output_dim=128.0 must be a whole number: "
                                                        "the method takes it as written, and 128.0 is a float; write "
                                                        "method_kwargs.proj_output_dim=128",
    ("temperature: 0.5", "temperature: 1"): None,
}


@pytest.mark.parametrize("lines", FILE_KINDS, ids=[new for _, new in FILE_KINDS])
def test_a_solo_learn_option_of_another_kind_in_the_file_is_refused_before_any_work(lines, tmp_path):
    """A config FILE (not an override) giving SimCLR's options text or a fraction: the kinds its host
    declares (1.0.2's argument types, main's annotations) refuse it at loading; it failed when the
    model was built or at the first step, with a TypeError traceback."""
    old, new = lines
    text = (ZOO / "cifar10/simclr.yaml").read_text()
    assert text.count(old) == 1
    (tmp_path / "simclr.yaml").write_text(text.replace(old, new))
    if FILE_KINDS[lines] is None:
        assert OmegaConf.select(load_config(tmp_path / "simclr.yaml", []), "method_kwargs.temperature") == 1
        return
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "simclr.yaml", [])
    assert str(err.value) == FILE_KINDS[lines]


@pytest.mark.parametrize("override, value", [("method_kwargs.temperature=1", 1),
                                             ("max_epochs=2.0", 2.0),
                                             ("optimizer.kwargs.momentum=null", None),
                                             ("optimizer.kwargs.clip_lr=false", False)])
def test_an_override_of_the_same_kind_or_null_is_taken(override, value):
    cfg = load_config(ZOO / "cifar10/simclr.yaml", [override])
    assert OmegaConf.select(cfg, override.split("=")[0]) == value


def test_the_methods_own_options_are_its_classs_on_this_host():
    """Read from solo-learn's source: SimCLR's options are proj_hidden_dim, proj_output_dim and
    temperature on both hosts, plus `supervised` on 1.0.2; BYOL on main also reads `momentum.*`;
    solo-ncp's methods declare theirs (`normalization` has no 1.0.2 command-line argument), deacl
    those of ncp but the clustering's."""
    from solo_ncp.config import method_class, method_keys
    from solo_ncp.methods.stage2_options import OPTIONS

    def options(method):
        return {k.split(".", 1)[1] for k in method_keys(method_class(method))
                if k.startswith("method_kwargs.")}

    main = current_host().is_main
    assert options("simclr") == {"proj_hidden_dim", "proj_output_dim", "temperature",
                                 *(() if main else ("supervised",))}
    assert options("ncp") == {o.name for o in OPTIONS} > {"normalization", "lam", "k", "kmeans_seed"}
    assert options("deacl") == options("ncp") - {"k", "k_file", "strategy", "neighbor_rank", "assign", "cluster_every",
                                                 "cluster_features", "kmeans_max_iter", "kmeans_backend",
                                                 "kmeans_seed", "kmeans_init", "kmeans_n_init"}
    momentum = {"momentum.base_tau", "momentum.final_tau", "momentum.classifier"}
    assert (momentum <= set(method_keys(method_class("byol")))) == main


@pytest.mark.parametrize("override, message", [
    ("max_epochs=abc", "max_epochs='abc' must be a whole number"),
    ("max_epochs=2.5", "max_epochs=2.5 must be a whole number"),
    ("optimizer.lr=fast", "optimizer.lr='fast' must be a number"),
    ("+data.val=no", "data.val='no' must be true or false"),
    ("augmentations.0.crop_size=[8]", "augmentations.0.crop_size=[8] must be a whole number"),
])
def test_a_value_of_another_kind_names_key_value_and_kind(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", [override])
    assert str(err.value) == message


FMNIST = ZOO / "fashionmnist/simclr.yaml"
ONE_ENTRY = "give the entry's index (0, its only entry)"


@pytest.mark.parametrize("overrides, message", [
    (["augmentations.rrc.enabled=false"],
     f"`augmentations` is a list: {ONE_ENTRY}, e.g. augmentations.0.rrc.enabled=false"),
    (["augmentations.crop_size=8"], f"`augmentations` is a list: {ONE_ENTRY}, e.g. augmentations.0.crop_size=8"),
    (["augmentations.x.crop_size=8"], f"`augmentations` is a list: {ONE_ENTRY}, e.g. augmentations.0.crop_size=8"),
    (["++augmentations.rrc.enabled=false"],
     f"`augmentations` is a list: {ONE_ENTRY}, e.g. ++augmentations.0.rrc.enabled=false"),
    (["~augmentations.x"], f"`augmentations` is a list: {ONE_ENTRY}, e.g. ~augmentations.0"),
    (["augmentations.5.crop_size=8"], f"`augmentations` has no entry 5: {ONE_ENTRY}, e.g. augmentations.0.crop_size=8"),
    (["+augmentations.1.crop_size=8"],
     f"`augmentations` has no entry 1: {ONE_ENTRY}, e.g. +augmentations.0.crop_size=8"),
    (["devices=[0,1]", "devices.x=1"], "`devices` is a list: give the entry's index (0 to 1), e.g. devices.0=1"),
    (["augmentations=[]", "augmentations.0.crop_size=8"],
     "`augmentations` is an empty list, with no entry to change: give the whole list (augmentations=[...])"),
])
def test_a_key_into_a_list_by_no_entrys_index_names_the_list_and_its_indices(overrides, message):
    """Hydra refuses these too, with a TypeError (`Index 'rrc' (str) is not an int`), a ValueError
    (`invalid literal for int()`) or `list index out of range`."""
    with pytest.raises(Exception):
        hydra_compose(FMNIST, overrides)
    with pytest.raises(ConfigError) as err:
        load_config(FMNIST, overrides)
    assert str(err.value) == f"override {overrides[-1]!r}: {message}"


def test_a_key_left_out_of_a_list_is_one_error_line_of_the_cli(capsys):
    from solo_ncp.cli import main

    assert main(["pretrain", "--config", "fashionmnist/simclr", "data.subset=128", "max_epochs=1",
                 "augmentations.rrc.enabled=false"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: override 'augmentations.rrc.enabled=false': `augmentations` is a list: {ONE_ENTRY}, e.g. "
        "augmentations.0.rrc.enabled=false (solo-ncp pretrain)"]


@pytest.mark.parametrize("override, key, value, kind", [
    ("augmentations.0.color_jitter.brightness='0.4'", "augmentations.0.color_jitter.brightness", "0.4", "a number"),
    ("augmentations.0.crop_size='28'", "augmentations.0.crop_size", "28", "a whole number"),
    ("scheduler.warmup_epochs='0'", "scheduler.warmup_epochs", "0", "a number"),
    ('max_epochs="7"', "max_epochs", "7", "a whole number"),
    ("++data.val='false'", "data.val", "false", "true or false"),
])
def test_a_number_in_quotes_is_text_refused_saying_to_drop_the_quotes(override, key, value, kind):
    """Hydra reads a quoted value as text: solo-learn main would get the string '28'."""
    assert OmegaConf.select(hydra_compose(FMNIST, [override]), key) == value
    with pytest.raises(ConfigError) as err:
        load_config(FMNIST, [override])
    assert str(err.value) == f"{key}='{value}' must be {kind}: in quotes it is text; drop the quotes ({key}={value})"


def test_a_number_in_quotes_in_the_file_is_refused_too(tmp_path):
    path = tmp_path / "simclr.yaml"
    path.write_text(FMNIST.read_text().replace("max_epochs: 100", "max_epochs: '7'"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == ("max_epochs='7' must be a whole number: in quotes it is text; drop the quotes "
                              "(max_epochs=7)")


@pytest.mark.parametrize("override, reason", [
    ("max_epochs=[1,", "no viable alternative at input '[1,'"),
    ("augmentations.-1.crop_size=8", "token recognition error at: '.', character 14"),
    ("name='run", "token recognition error at: ''run', character 6"),
])
def test_an_override_hydra_cannot_parse_names_hydras_reason(override, reason):
    with pytest.raises(ConfigError) as err:
        load_config(FMNIST, [override])
    assert str(err.value) == (f"override {override!r} is not key=value, +key=value, ++key=value or ~key "
                              f"(Hydra's grammar: {reason})")


@pytest.mark.parametrize("override", ["=1", "+=1", "++=1", "~=1", "~"])
def test_an_override_without_a_key_is_refused_plainly(override):
    with pytest.raises(ConfigError) as err:
        load_config(FMNIST, [override])
    assert str(err.value) == (f"override {override!r} names no key: write key=value, +key=value, ++key=value or "
                              "~key with the key's dotted name (optimizer.lr=0.1)")


@pytest.mark.skipif(not current_host().is_main, reason="solo-learn main's annotations; 1.0.2's kinds are its argument types")
def test_main_kinds_are_its_int_and_float_annotations_not_its_bool_ones():
    """Read by hand from solo-learn main's dino.py: `student_temperature: float`, `num_prototypes:
    int`, and `clip_grad: bool` / `freeze_last_layer: bool`, which hold a float threshold and an
    epoch count (defaults 0 and 1), so a bool annotation must not refuse `clip_grad: 3.0`."""
    from solo_ncp.config import method_class, method_keys
    from solo_ncp.config.schema import NUMBER, WHOLE

    keys = method_keys(method_class("dino"))
    assert keys["method_kwargs.student_temperature"] == NUMBER
    assert keys["method_kwargs.num_prototypes"] == WHOLE
    assert keys["method_kwargs.clip_grad"] is None and keys["method_kwargs.freeze_last_layer"] is None


@pytest.mark.skipif(not current_host().is_main, reason="solo-learn main's defaults; 1.0.2's momentum options are arguments")
@pytest.mark.parametrize("override, message", [
    ("+momentum.base_tau=abc", "momentum.base_tau='abc' must be a number"),
    ("+momentum.final_tau='1.0'", "momentum.final_tau='1.0' must be a number: in quotes it is text; drop the "
                                  "quotes (momentum.final_tau=1.0)"),
    ("+momentum.classifier=1", "momentum.classifier=1 must be true or false"),
])
def test_mains_momentum_options_take_the_kind_of_the_default_main_fills_in(override, message):
    """Main annotates none of them; its BaseMomentumMethod fills in base_tau 0.99, final_tau 1.0
    and classifier False (read by hand from base.py). `base_tau=abc` was a TypeError traceback at
    the first step."""
    with pytest.raises(ConfigError) as err:
        load_config(FMNIST, ["method=byol", "~method_kwargs.temperature", "+method_kwargs.pred_hidden_dim=64", override])
    assert str(err.value) == message
    load_config(FMNIST, ["method=byol", "~method_kwargs.temperature", "+method_kwargs.pred_hidden_dim=64",
                         "+momentum.base_tau=1", "+momentum.classifier=true"])


@pytest.mark.parametrize("override, instead", [
    ("+data.fraction=0.5", "data.subset=<number of images> (a fixed random subset, drawn with data.subset_seed)"),
    ("+resume_from_checkpoint=runs/x/last.ckpt", "the command's --resume (it continues the run folder's last.ckpt)"),
    ("+data.no_labels=true", "none: custom data is an ImageFolder of class sub-folders (README, custom data)"),
])
def test_a_key_of_mains_that_solo_ncp_replaces_names_the_replacement(override, instead):
    """It named the closest key by spelling (`accumulate_grad_batches` for resume_from_checkpoint)."""
    key = override[1:].split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", [override])
    assert str(err.value) == (f"`{key}` is solo-learn main's, not read by solo-ncp or simclr on "
                              f"{current_host().api}: solo-ncp's is {instead}; remove it")


@pytest.mark.parametrize("method, what", [("base", "the base class of solo-learn's methods"),
                                          ("linear", "solo-learn's linear evaluation model")])
def test_solo_learns_base_and_linear_are_no_method_to_train(method, what):
    """`method=linear` failed with a TypeError traceback; `method=base` trained the online classifier
    alone and wrote an untrained encoder as a stage-1 checkpoint."""
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", [f"method={method}"])
    message = str(err.value)
    assert message.startswith(f"method={method} is {what}")
    offered = message.split("choose one of ")[1].split(", ")
    assert {"simclr", "ncp", "deacl"} <= set(offered) and not {"base", "linear"} & set(offered)


def test_the_options_solo_learns_byol_cannot_do_without_include_its_bases():
    """Read from solo-learn's source. 1.0.2: BYOL.__init__(proj_output_dim, proj_hidden_dim,
    pred_hidden_dim, **kwargs) and BaseMomentumMethod.__init__(base_tau_momentum,
    final_tau_momentum, momentum_classifier, **kwargs): leaving out a base's failed with a TypeError
    traceback. main: BYOL asserts its three options; the momentum keys have defaults."""
    from solo_ncp.config import method_class
    from solo_ncp.config.schema import required_method_keys

    own = {"method_kwargs.proj_output_dim", "method_kwargs.proj_hidden_dim", "method_kwargs.pred_hidden_dim"}
    bases = set() if current_host().is_main else {
        "method_kwargs.base_tau_momentum", "method_kwargs.final_tau_momentum", "method_kwargs.momentum_classifier"}
    assert set(required_method_keys(method_class("byol"))) == own | bases


@pytest.mark.skipif(not current_host().is_main, reason="solo-learn main's momentum block")
def test_a_momentum_method_without_a_momentum_block_takes_mains_defaults():
    """main's BaseMomentumMethod fills momentum.base_tau (0.99), final_tau (1.0) and classifier
    (False) into the block, and failed with omegaconf's ConfigAttributeError where there was none."""
    from solo_ncp.launch.methods import build_method

    cfg = load_config(ZOO / "fashionmnist/simclr.yaml", [
        "method=byol", "~method_kwargs.temperature", "+method_kwargs.pred_hidden_dim=64", "data.dataset=digits",
        "augmentations.0.crop_size=8", "method_kwargs.proj_hidden_dim=64", "method_kwargs.proj_output_dim=32"])
    assert "momentum" not in cfg
    model = build_method(cfg)
    assert (model.momentum_updater.base_tau, model.momentum_updater.final_tau) == (0.99, 1.0)


@pytest.mark.parametrize("name", ["cosine", "reduce", "exponential", "foo", "none", "step", "warmup_cosine"])
def test_a_scheduler_the_host_does_not_build_is_refused_at_loading(name):
    """Read from each host's BaseMethod.configure_optimizers: 1.0.2 builds warmup_cosine, cosine,
    step and none; main warmup_cosine, step and none (it lists reduce and exponential, then raises
    for them). Any other failed with the host's own ValueError once data and run folder were made,
    and main's message named cosine, which it does not build, leaving out none."""
    builds = {"warmup_cosine", "step", "none"} | (set() if current_host().is_main else {"cosine"})
    if name in builds:
        assert load_config(ZOO / "cifar10/simclr.yaml", [f"scheduler.name={name}"]).scheduler.name == name
        return
    with pytest.raises(ConfigError) as err:
        load_config(ZOO / "cifar10/simclr.yaml", [f"scheduler.name={name}"])
    assert str(err.value) == (f"scheduler.name='{name}' is no scheduler of {current_host().api}: choose one of "
                              f"{', '.join(['warmup_cosine'] + ([] if current_host().is_main else ['cosine']) + ['step', 'none'])}")
