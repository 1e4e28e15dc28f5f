"""A config number of the right kind but out of its key's range is refused at loading, naming key,
value and range (`solo_ncp.config.ranges`); its edge values load."""
import pytest

from solo_ncp.config import ConfigError, load_config
from solo_ncp.config.ranges import PASSED_ON, RANGES
from tests.conftest import ROOT

SIMCLR = ROOT / "zoo_configs/fashionmnist/simclr.yaml"
NCP = ROOT / "zoo_configs/fashionmnist/ncp.yaml"

# override out of range -> the refusal, written by hand
REFUSED = {
    "seed=-1": "seed=-1 must be a whole number from 0 to 4294967295",
    "seed=4294967296": "seed=4294967296 must be a whole number from 0 to 4294967295",
    "+data.subset_seed=-3": "data.subset_seed=-3 must be a whole number from 0 to 4294967295",
    "+data.subset=0": "data.subset=0 must be a whole number >= 1",
    "data.num_workers=-1": "data.num_workers=-1 must be a whole number >= 0",
    "optimizer.batch_size=0": "optimizer.batch_size=0 must be a whole number >= 1",
    "optimizer.lr=-0.1": "optimizer.lr=-0.1 must be a number >= 0",
    "optimizer.classifier_lr=-1": "optimizer.classifier_lr=-1 must be a number >= 0",
    "optimizer.weight_decay=-1e-4": "optimizer.weight_decay=-0.0001 must be a number >= 0",
    "scheduler.warmup_epochs=-2": "scheduler.warmup_epochs=-2 must be a number >= 0",
    "scheduler.warmup_start_lr=-1": "scheduler.warmup_start_lr=-1 must be a number >= 0",
    "scheduler.min_lr=-1": "scheduler.min_lr=-1 must be a number >= 0",
    "+knn_eval.k=0": "knn_eval.k=0 must be a whole number >= 1",
    "+limit_train_batches=0": "limit_train_batches=0 must be a number > 0",
    "+limit_val_batches=-1": "limit_val_batches=-1 must be a number >= 0",
    "+limit_train_batches=1.5": "limit_train_batches=1.5 must be a fraction of the batches (at most 1.0) or a "
                                "whole number of them",
    "+log_every_n_steps=0": "log_every_n_steps=0 must be a whole number >= 1",
    "+accumulate_grad_batches=0": "accumulate_grad_batches=0 must be a whole number >= 1",
    "+num_nodes=0": "num_nodes=0 must be a whole number >= 1",
    "augmentations.0.crop_size=0": "augmentations.0.crop_size=0 must be a whole number >= 1",
    "augmentations.0.num_crops=0": "augmentations.0.num_crops=0 must be a whole number >= 1",
    "+augmentations.0.pad_crop.padding=-4": "augmentations.0.pad_crop.padding=-4 must be a whole number >= 0",
    "augmentations.0.rrc.crop_min_scale=0": "augmentations.0.rrc.crop_min_scale=0 must be a number > 0",
    "augmentations.0.rrc.crop_max_scale=-1": "augmentations.0.rrc.crop_max_scale=-1 must be a number > 0",
    "augmentations.0.color_jitter.brightness=-0.4": "augmentations.0.color_jitter.brightness=-0.4 must be a number >= 0",
    "augmentations.0.color_jitter.contrast=-1": "augmentations.0.color_jitter.contrast=-1 must be a number >= 0",
    "augmentations.0.color_jitter.saturation=-1": "augmentations.0.color_jitter.saturation=-1 must be a number >= 0",
    "augmentations.0.color_jitter.hue=0.6": "augmentations.0.color_jitter.hue=0.6 must be a number from 0 to 0.5",
    "augmentations.0.color_jitter.prob=1.5": "augmentations.0.color_jitter.prob=1.5 must be a number from 0 to 1",
    "augmentations.0.grayscale.prob=-0.2": "augmentations.0.grayscale.prob=-0.2 must be a number from 0 to 1",
    "augmentations.0.gaussian_blur.prob=2": "augmentations.0.gaussian_blur.prob=2 must be a number from 0 to 1",
    "augmentations.0.solarization.prob=-1": "augmentations.0.solarization.prob=-1 must be a number from 0 to 1",
    "augmentations.0.equalization.prob=1.01": "augmentations.0.equalization.prob=1.01 must be a number from 0 to 1",
    "augmentations.0.horizontal_flip.prob=-0.5": "augmentations.0.horizontal_flip.prob=-0.5 must be a number from 0 to 1",
    "augmentations.0.rrc.crop_max_scale=0.05": "augmentations.0.rrc.crop_min_scale=0.08 exceeds its crop_max_scale=0.05: "
                                               "the crop's area is drawn from min to max (a fraction of the image)",
    "method_kwargs.proj_output_dim=0": "method_kwargs.proj_output_dim=0 must be a whole number >= 1",
    "method_kwargs.proj_hidden_dim=-8": "method_kwargs.proj_hidden_dim=-8 must be a whole number >= 1",
    "method_kwargs.temperature=0": "method_kwargs.temperature=0 must be a number > 0",
    "method_kwargs.temperature=-0.1": "method_kwargs.temperature=-0.1 must be a number > 0",
}
SIMSIAM = ["method=simsiam", "backbone.name=resnet18", "~method_kwargs.temperature"]
REFUSED_SIMSIAM = {"+method_kwargs.pred_hidden_dim=0": "method_kwargs.pred_hidden_dim=0 must be a whole number >= 1"}
EDGES = ["+limit_train_batches=1e-3", "+limit_train_batches=2.0", "+limit_train_batches=7", "+limit_val_batches=0",
         "seed=0", "seed=4294967295", "+data.subset=1", "data.num_workers=0", "optimizer.batch_size=1",
         "optimizer.lr=0", "optimizer.weight_decay=0", "scheduler.warmup_epochs=0", "+knn_eval.k=1",
         "augmentations.0.color_jitter.hue=0.5", "augmentations.0.color_jitter.prob=1",
         "augmentations.0.horizontal_flip.prob=0", "augmentations.0.rrc.crop_max_scale=0.08",
         "augmentations.0.rrc.crop_min_scale=1e-9", "augmentations.0.num_crops=1", "method_kwargs.proj_output_dim=1",
         "method_kwargs.proj_hidden_dim=1", "method_kwargs.temperature=1e-9"]


@pytest.mark.parametrize("override", REFUSED)
def test_a_number_out_of_its_range_is_refused_naming_key_value_and_range(override):
    with pytest.raises(ConfigError) as err:
        load_config(SIMCLR, [override])
    assert str(err.value) == REFUSED[override]


@pytest.mark.parametrize("override", REFUSED_SIMSIAM)
def test_a_predictor_width_out_of_range_is_refused(override):
    with pytest.raises(ConfigError) as err:
        load_config(SIMCLR, [*SIMSIAM, override])
    assert str(err.value) == REFUSED_SIMSIAM[override]
    load_config(SIMCLR, [*SIMSIAM, "+method_kwargs.pred_hidden_dim=1"])


def test_every_ranged_key_has_a_refused_case():
    refused = {message.split("=")[0] for message in [*REFUSED.values(), *REFUSED_SIMSIAM.values()]}
    assert {key.replace("*", "0") for key in [*RANGES, *PASSED_ON]} <= refused


@pytest.mark.parametrize("override", EDGES)
def test_the_edges_of_each_range_load(override):
    load_config(SIMCLR, [override])


def test_a_stage2_config_is_checked_too():
    with pytest.raises(ConfigError, match=r"^augmentations.0.pad_crop.padding=-1 must be a whole number >= 0$"):
        load_config(NCP, ["augmentations.0.pad_crop.padding=-1"])
