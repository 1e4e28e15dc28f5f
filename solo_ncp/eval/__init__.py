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
The names below are imported on first use (solo_ncp/_lazy.py).
"""
from solo_ncp._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "solo_ncp.eval.autoattack": ("AutoAttackResult", "autoattack_accuracy"),
    "solo_ncp.eval.heads": ("PreconditionedLinear", "feature_affine"),
    "solo_ncp.eval.linear": ("FineTuneConfig", "FineTuned", "fine_tune", "pad_crop_flip"),
    "solo_ncp.eval.poc": ("format_poc_table", "poc_table"),
    "solo_ncp.eval.protocol": ("default_loss", "default_lr"),
    "solo_ncp.eval.report": ("aggregate", "format_row", "mean_std"),
    "solo_ncp.eval.results": ("load_runs",),
    "solo_ncp.eval.robust": ("evaluate",),
    "solo_ncp.eval.trades": ("trades_loss",),
    "solo_ncp.models.branches": ("DEFAULT_BN",),
    "solo_ncp.models.inference": ("eval_mode", "extract_features"),
})
