"""NCP-ACL stage 2 (and DeACL) as a solo-learn 1.0.2 method: keyword arguments,
`add_model_specific_args`, Lightning 1.9 hooks. All logic lives in `solo_ncp.ncp`."""
import argparse
import time
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from solo.methods.base import BaseMethod
from solo.utils.metrics import accuracy_at_k
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from solo_ncp.eval.features import extract_features
from solo_ncp.models.backbones import BackboneSpec, features_dim
from solo_ncp.models.normalize import Normalize
from solo_ncp.ncp import (
    Stage2Config,
    cluster_epoch,
    gather_rows,
    init_student,
    load_teacher,
    resolve_k,
    stage2_step,
)
from solo_ncp.attacks import nearest_centroids

CLUSTER_FEATURES = ("full_pass", "memory_bank")


class NCP(BaseMethod):
    """Stage 2 of NCP-ACL: f2 (dual BN) from a frozen stage-1 teacher f1, PGD toward the
    neighbouring cluster, spherical k-means of the whole training set every `cluster_every` epochs.
    """

    perturbation = "ncp"

    def __init__(
        self,
        teacher_ckpt: str,
        k: Optional[int] = None,
        k_file: Optional[str] = None,
        lam: float = 6.0,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        pgd_steps: int = 5,
        strategy: str = "iii",
        neighbor_rank: int = 2,
        assign: str = "nearest",
        cluster_every: int = 1,
        cluster_features: str = "full_pass",
        kmeans_max_iter: int = 100,
        kmeans_backend: str = "auto",
        kmeans_seed: int = 0,
        dual_bn: bool = True,
        normalization: Optional[Dict[str, Sequence[float]]] = None,
        trust_teacher: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cluster_features not in CLUSTER_FEATURES:
            raise ValueError(f"cluster_features={cluster_features!r} is not one of {CLUSTER_FEATURES}")
        if cluster_every < 1:
            raise ValueError(f"cluster_every={cluster_every} must be >= 1")
        self.stage2 = Stage2Config(self.perturbation, strategy, neighbor_rank, lam, eps, alpha,
                                   pgd_steps, assign)
        spec = BackboneSpec(self.encoder_name, bool(self.backbone_args.get("cifar", False)))
        teacher = load_teacher(teacher_ckpt, spec, normalization=normalization, trust=trust_teacher)
        init_student(self.encoder, teacher, dual_bn)
        self.teacher = teacher.model
        self.normalize = Normalize(teacher.normalization["mean"], teacher.normalization["std"])
        self.normalization = teacher.normalization
        self.dual_bn = dual_bn
        self.cluster_every = cluster_every
        self.cluster_features = cluster_features
        self.kmeans = dict(max_iter=kmeans_max_iter, backend=kmeans_backend)
        self.kmeans_seed = kmeans_seed
        self.k = resolve_k(k, k_file) if self.uses_clusters else 0
        self.register_buffer("centroids", torch.zeros(self.k, features_dim(self.encoder)))
        self.register_buffer("clustered_epoch", torch.tensor(-1))
        self.cluster_data: Optional[Dataset] = None
        self.assigned: Optional[torch.Tensor] = None
        self.bank: Optional[torch.Tensor] = None

    @property
    def uses_clusters(self) -> bool:
        return self.perturbation == "ncp"

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = super(NCP, NCP).add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("ncp")
        parser.add_argument("--teacher_ckpt", type=str, required=True)
        parser.add_argument("--k", type=int, default=None)
        parser.add_argument("--k_file", type=str, default=None)
        parser.add_argument("--lam", type=float, default=6.0)
        parser.add_argument("--eps", type=float, default=8 / 255)
        parser.add_argument("--alpha", type=float, default=2 / 255)
        parser.add_argument("--pgd_steps", type=int, default=5)
        parser.add_argument("--strategy", choices=("i", "ii", "iii"), default="iii")
        parser.add_argument("--neighbor_rank", type=int, default=2)
        parser.add_argument("--assign", choices=("nearest", "index"), default="nearest")
        parser.add_argument("--cluster_every", type=int, default=1)
        parser.add_argument("--cluster_features", choices=CLUSTER_FEATURES, default="full_pass")
        parser.add_argument("--kmeans_max_iter", type=int, default=100)
        parser.add_argument("--kmeans_backend", choices=("auto", "torch", "kmcuda"), default="auto")
        parser.add_argument("--kmeans_seed", type=int, default=0)
        parser.add_argument("--no_dual_bn", dest="dual_bn", action="store_false")
        return parent_parser

    def set_cluster_data(self, dataset: Dataset, batch_size: int = 512, num_workers: int = 0):
        """The training set without augmentation, (x in [0, 1], y) in the order of the training
        loader's indices: what the per-epoch clustering encodes."""
        self.cluster_data = dataset
        self.cluster_loader_args = dict(batch_size=batch_size, num_workers=num_workers)

    def student(self) -> nn.Module:
        """f2 as one module (normalisation + encoder); built on the fly so nothing is registered
        twice in the state dict."""
        return nn.Sequential(self.normalize, self.encoder)

    def base_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        """X in [0, 1]: normalisation is part of the model."""
        feats = self.encoder(self.normalize(X))
        return {"logits": self.classifier(feats.detach()), "feats": feats}

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def _encode_training_set(self) -> torch.Tensor:
        """f2 of every training image (eval mode, clean BN, no augmentation), gathered from all
        ranks into (N, D)."""
        if self.cluster_data is None:
            raise ValueError("NCP needs set_cluster_data(dataset) before training (solo-ncp train does it)")
        world, rank = self.trainer.world_size, self.trainer.global_rank
        shard = torch.arange(rank, len(self.cluster_data), world)
        loader = DataLoader(Subset(self.cluster_data, shard.tolist()), shuffle=False,
                            **self.cluster_loader_args)
        features, _ = extract_features(self.student(), loader, device=self.device,
                                       progress=rank == 0)
        return gather_rows(features.to(self.device), shard.to(self.device), len(self.cluster_data))

    def on_train_epoch_start(self):
        epoch = self.current_epoch
        due = epoch % self.cluster_every == 0 or int(self.clustered_epoch) < 0
        due = due or (self.stage2.assign == "index" and self.assigned is None)
        if not self.uses_clusters or not due:
            return
        bank_ready = self.bank is not None and bool(self.bank_seen.all())
        use_bank = self.cluster_features == "memory_bank" and bank_ready
        start = time.perf_counter()
        features = self.bank.clone() if use_bank else self._encode_training_set()
        encode_time = time.perf_counter() - start
        clusters = cluster_epoch(features, self.k, seed=self.kmeans_seed + epoch, **self.kmeans)
        self.centroids.copy_(clusters.centroids)
        self.clustered_epoch.fill_(epoch)
        if self.stage2.assign == "index":
            nbr = nearest_centroids(features, clusters.centroids, self.stage2.neighbor_rank).nbr_index
            self.assigned = torch.stack([clusters.labels, nbr], dim=1)
        stats = {**clusters.stats, "cluster_encode_time_s": encode_time,
                 "cluster_from_bank": float(use_bank)}
        self.log_dict(stats, on_epoch=True, on_step=False, rank_zero_only=True)

    def _remember(self, indexes: torch.Tensor, features: torch.Tensor) -> None:
        """Memory bank: keep this step's clean eval-mode features for the next clustering."""
        if self.bank is None:
            n = len(self.cluster_data)
            self.bank = features.new_zeros((n, features.shape[1]))
            self.bank_seen = torch.zeros(n, dtype=torch.bool, device=features.device)
        indexes, features = self.all_gather(indexes).flatten(0, -1), self.all_gather(features)
        features = features.reshape(-1, features.shape[-1])
        self.bank[indexes] = features
        self.bank_seen[indexes] = True

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        indexes, X, targets = batch
        x = X[0] if isinstance(X, (list, tuple)) else X
        assigned = self.assigned[indexes] if self.assigned is not None else None
        out = stage2_step(self.student(), self.teacher, x, self.stage2,
                          centroids=self.centroids if self.uses_clusters else None,
                          assigned=assigned)
        loss = out.losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"stage-2 loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{batch_idx}: training stopped, the last good checkpoint is kept. Lower "
                "optimizer.lr or lam, or check the stage-1 checkpoint"
            )
        if self.cluster_features == "memory_bank":
            self._remember(indexes, out.eval_features)
        logits = self.classifier(out.eval_features)
        class_loss = F.cross_entropy(logits, targets, ignore_index=-1)
        acc1, acc5 = accuracy_at_k(logits, targets, top_k=(1, min(5, logits.size(1))))
        metrics = {
            "train_loss": loss,
            "train_distill_loss": out.losses["distill"],
            "train_robust_loss": out.losses["robust"],
            "train_class_loss": class_loss,
            "train_acc1": acc1,
            "train_acc5": acc5,
        }
        if out.centroid_changed is not None:
            metrics["train_adv_centroid_changed"] = out.centroid_changed
        self.log_dict(metrics, on_epoch=True, sync_dist=True)
        return loss + class_loss


class DeACL(NCP):
    """DeACL (Zhang et al. 2022) at equal budget: the same class with Eq. 2's perturbation (away
    from the teacher's representation), no clustering."""

    perturbation = "deacl"
