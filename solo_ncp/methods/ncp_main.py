"""NCP-ACL stage 2 (and DeACL) as a solo-learn main method: one `cfg`,
`add_and_assert_specific_cfg`, Lightning 2 hooks. Everything else is shared with solo-learn
1.0.2's adapter (`stage2_hooks`, `stage2_options`) and the framework-free core (`solo_ncp.ncp`).

Built by `solo-ncp train` or by solo-learn main's own main_pretrain.py (after `import solo_ncp`):
in the latter, the clustering pass encodes main_pretrain.py's own training set, and batches that
its pipelines normalised are mapped back to [0, 1] pixels (PGD budgets are in pixel units).
"""
from omegaconf import DictConfig, OmegaConf
from solo.methods.base import BaseMethod

from solo_ncp.config import check_stage2_crop_size, unread_key_error
from solo_ncp.methods.main_host import cifar_stem, main_pretrain_images, match_stem, stem_key_hidden
from solo_ncp.methods.stage2_hooks import Stage2Hooks
from solo_ncp.methods.stage2_options import DEACL_OPTION_NAMES, OPTION_NAMES, take_options
from solo_ncp.models.backbones import BackboneSpec


class NCP(Stage2Hooks, BaseMethod):
    """`ncp` on solo-learn main: `cfg.method_kwargs` holds the options of `stage2_options.OPTIONS`;
    `backbone.kwargs.cifar` chooses the ResNet stem (see `main_host`); the encoder is
    `self.backbone`."""

    backbone_attr = "backbone"

    def __init__(self, cfg: DictConfig):
        cifar = cifar_stem(cfg)
        with stem_key_hidden(cfg):
            super().__init__(cfg)
        match_stem(self, cifar)
        spec = BackboneSpec.from_kwargs(self.backbone_name, {**self.backbone_args, "cifar": cifar})
        options = OmegaConf.to_container(self.cfg.method_kwargs, resolve=True)
        self.setup_stage2(spec, options, dataset=self.cfg.data.dataset)

    @staticmethod
    def add_and_assert_specific_cfg(cfg: DictConfig) -> DictConfig:
        """Fills `method_kwargs` with the options' defaults; unknown or bad values are errors."""
        cfg = super(NCP, NCP).add_and_assert_specific_cfg(cfg)
        check_stage2_crop_size(cfg)
        given = OmegaConf.to_container(cfg.method_kwargs, resolve=True)
        options = take_options(given)
        if given:
            raise unread_key_error(f"method_kwargs.{sorted(given)[0]}",
                                   [f"method_kwargs.{name}" for name in OPTION_NAMES], cfg.method)
        cfg.method_kwargs = options
        return cfg

    def forward(self, X):
        return self.stage2_forward(X)

    def setup(self, stage: str) -> None:
        """Without `set_cluster_data` (main_pretrain.py), clusters main_pretrain.py's training set."""
        super().setup(stage)
        if stage == "fit" and self.cluster_data is None:
            self.set_cluster_data(main_pretrain_images(self.cfg), int(self.cfg.optimizer.batch_size),
                                  int(OmegaConf.select(self.cfg, "data.num_workers", default=4)))


class DeACL(NCP):
    """DeACL (Zhang et al. 2022) at equal budget: the same class with Eq. 2's perturbation (away
    from the teacher's representation), no clustering: the options of the clustering are not read."""

    perturbation = "deacl"
    option_names = DEACL_OPTION_NAMES
