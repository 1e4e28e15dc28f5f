"""NCP-ACL stage 2 (and DeACL) as a solo-learn 1.0.2 method: keyword arguments,
`add_model_specific_args`, Lightning 1.9 hooks. Everything else is shared with solo-learn main's
adapter (`stage2_hooks`, `stage2_options`) and the framework-free core (`solo_ncp.ncp`)."""
import argparse

from solo.methods.base import BaseMethod

from solo_ncp.methods.stage2_hooks import Stage2Hooks
from solo_ncp.methods.stage2_options import DEACL_OPTION_NAMES, add_arguments, take_options
from solo_ncp.models.backbones import BackboneSpec


class NCP(Stage2Hooks, BaseMethod):
    """`ncp` on solo-learn 1.0.2: BaseMethod's keyword arguments plus the options of
    `stage2_options.OPTIONS`; the encoder is `self.encoder`."""

    backbone_attr = "encoder"

    def __init__(self, **kwargs):
        options = take_options(kwargs)
        super().__init__(**kwargs)
        spec = BackboneSpec.from_kwargs(self.encoder_name, self.backbone_args)
        self.setup_stage2(spec, options, dataset=self.extra_args.get("dataset"))

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = super(NCP, NCP).add_model_specific_args(parent_parser)
        add_arguments(parent_parser.add_argument_group("ncp"))
        return parent_parser

    def base_forward(self, X):
        return self.stage2_forward(X)


class DeACL(NCP):
    """DeACL (Zhang et al. 2022) at equal budget: the same class with Eq. 2's perturbation (away
    from the teacher's representation), no clustering: the options of the clustering are not read."""

    perturbation = "deacl"
    option_names = DEACL_OPTION_NAMES
