"""Host-independent core of stage 2 (NCP-ACL and DeACL): loss, per-epoch clustering, one
training step, teacher loading. Plain torch; the solo-learn method classes only wire it in."""
from solo_ncp.ncp.clustering import (
    KMEANS_INITS,
    EpochClusters,
    broadcast_buffers,
    cluster_epoch,
    gather_rows,
)
from solo_ncp.ncp.losses import ncp_acl_loss, neg_cosine
from solo_ncp.ncp.step import Stage2Config, StepOutput, adversarial_examples, stage2_step
from solo_ncp.ncp.teacher import check_given_normalization, init_student, load_teacher, read_teacher, resolve_k

__all__ = [
    "EpochClusters",
    "KMEANS_INITS",
    "Stage2Config",
    "StepOutput",
    "adversarial_examples",
    "broadcast_buffers",
    "check_given_normalization",
    "cluster_epoch",
    "gather_rows",
    "init_student",
    "load_teacher",
    "read_teacher",
    "ncp_acl_loss",
    "neg_cosine",
    "resolve_k",
    "stage2_step",
]
