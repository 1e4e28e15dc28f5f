"""Evaluation of encoders: features, fine-tuning (SLF/ALF heads, AFF), SA/RA/AA, Table 1 PoC, reports.

Framework-free: torch, numpy, tqdm and the standard library (pyautoattack is imported lazily).
Every model passed here maps [0, 1] images to features or logits with normalisation inside it.

Default BN branch for evaluating dual-BN encoders: DEFAULT_BN = "adv".
NCP-ACL trains with dual BN (Appendix A.2.2, after Jiang et al., 2020) and does not say which
branch is evaluated; both reference codebases evaluate the adversarial one:
- ACL (VITA-Group/Adversarial-Contrastive-Learning): train_simCLR.py builds the encoder with
  bn_names = ['normal', 'pgd'] (index 1 = adversarial examples), and readme.md fine-tunes and
  evaluates with `train_trades.py ... --cvt_state_dict --bnNameCnt 1`, whose cvt_state_dict
  keeps only `bn_list.1`; index 0 is used only for the clean pseudo-label model of the
  semi-supervised stage.
- DeACL (pantheon5100/DeACL): adv_slf.py maps both `.bn_list.0` and `.bn_list.1` onto the
  single-BN ResNet's keys, so `bn_list.1`, loaded later, overwrites the clean branch; and
  solo/models/multi_bn_resnet.py defaults `forward(x, bn_name="pgd")`. (Its released training
  code uses a single-BN ResNet, so the branch question only arises for dual-BN checkpoints.)
The clean branch stays available ("clean"); `solo-ncp eval --bn both` (its default) evaluates
each branch with its own head, and the checkpoint loader applies the choice.
"""
from solo_ncp.eval.autoattack import AutoAttackResult, autoattack_accuracy
from solo_ncp.eval.heads import PreconditionedLinear, feature_affine
from solo_ncp.eval.linear import FineTuneConfig, FineTuned, fine_tune, pad_crop_flip
from solo_ncp.eval.poc import format_poc_table, poc_table
from solo_ncp.eval.protocol import default_loss, default_lr
from solo_ncp.eval.report import aggregate, format_row, load_runs, mean_std
from solo_ncp.eval.robust import evaluate
from solo_ncp.eval.trades import trades_loss
from solo_ncp.models.dual_bn import DEFAULT_BN
from solo_ncp.models.inference import eval_mode, extract_features

__all__ = [
    "DEFAULT_BN",
    "AutoAttackResult",
    "FineTuneConfig",
    "FineTuned",
    "PreconditionedLinear",
    "aggregate",
    "autoattack_accuracy",
    "default_loss",
    "default_lr",
    "evaluate",
    "eval_mode",
    "extract_features",
    "feature_affine",
    "fine_tune",
    "format_poc_table",
    "format_row",
    "load_runs",
    "mean_std",
    "pad_crop_flip",
    "poc_table",
    "trades_loss",
]
