"""What solo-ncp's stage-2 methods (`ncp`, `deacl`) are on every host: the bodies of their
Lightning hooks, spelled the same in Lightning 1.9 and 2. Their options are `stage2_options`.

The host adapters (`ncp.py`, `ncp_main.py`) only pick the base class, read the options and say
where their BaseMethod keeps the encoder; the stage-2 algorithm itself is `solo_ncp.ncp`.
"""
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from solo.utils.metrics import accuracy_at_k
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from solo_ncp.attacks import nearest_centroids
from solo_ncp.data.transforms import find_normalization
from solo_ncp.eval.protocol import NCP_SETTINGS, TEST_PGD_STEPS
from solo_ncp.eval.robust import evaluate
from solo_ncp.models.inference import extract_features
from solo_ncp.io import file_sha256
from solo_ncp.methods.stage2_options import OPTION_NAMES, check_clusters_fit
from solo_ncp.models.backbones import BackboneSpec, features_dim
from solo_ncp.models.checkpoint import CLUSTERING_STATE_KEY, META_KEY, assumed_normalization
from solo_ncp.models.dual_bn import bn_branch
from solo_ncp.models.normalize import Normalize, UnitFeatures
from solo_ncp.ncp import (
    Stage2Config,
    broadcast_buffers,
    cluster_epoch,
    gather_rows,
    init_student,
    read_teacher,
    resolve_k,
    stage2_step,
)
from solo_ncp.ncp.speed import channels_last, compile_forward, use_channels_last
from solo_ncp.threat_model import warn_of_budget

VAL_ROBUST_SEED = 0
"""Seed of the PGD random starts of the robust monitor: the same starts at every evaluation."""
VAL_ROBUST_CLEAN = "val_robust/clean_acc"
VAL_ROBUST_PGD = f"val_robust/pgd{TEST_PGD_STEPS}_acc"
"""The robust monitor's logged metrics (%): what `checkpoint.save_best` keeps the best epoch by."""
HELD_OUT = "held out of the training set"
"""Where the robust monitor's images come from, as checkpoints record it (never the test set)."""
CLUSTERING_TENSORS = ("bank", "bank_seen", "assigned")
"""The attributes of the clustering state a checkpoint keeps (`clustering_state`)."""


def to_pixels(X, normalization: Mapping[str, Sequence[float]]):
    """Undoes `Normalize(mean, std)` on a (B, C, H, W) batch or a list of crops: [0, 1] pixels."""
    if isinstance(X, (list, tuple)):
        return [to_pixels(x, normalization) for x in X]
    mean = X.new_tensor(normalization["mean"]).view(1, -1, 1, 1)
    std = X.new_tensor(normalization["std"]).view(1, -1, 1, 1)
    return (X * std + mean).clamp_(0, 1)


class Stage2Hooks:
    """Stage 2 of NCP-ACL: f2 (dual BN) from a frozen stage-1 teacher f1, PGD toward the
    neighbouring cluster, spherical k-means of the whole training set every `cluster_every` epochs.

    Monitors: the progress bar shows the stage-2 loss (`loss`), its terms (`distill`, `robust`)
    and the online classifier's cross-entropy (`clf_loss`; the classifier reads f2's features
    centred and L2-normalised, `monitor_logits`); `measure_val_robust` logs the online
    classifier's clean and PGD-20 accuracy on `val_robust_n` training images the launcher held out
    (`set_val_robust_data`; solo-ncp train's `RobustMonitor` calls it every `val_robust_every`
    epochs); solo-learn's `knn_eval` scores the encoder's features. The online classifier, the
    validation forward and the k-NN all see f2 in eval mode through the `cluster_bn` branch.

    A mixin placed before the host's `BaseMethod`: the adapter sets `backbone_attr` (the attribute
    holding its BaseMethod's encoder) and calls `setup_stage2` once its BaseMethod is built. Images
    reach the hooks as [0, 1] pixels (normalisation is the model's first layer); batches a loader
    normalised (solo-learn main's pipelines) are mapped back first.
    """

    perturbation = "ncp"
    backbone_attr = "encoder"
    option_names = OPTION_NAMES
    """The `method_kwargs` keys the method reads (`solo_ncp.config.method_keys`)."""

    def setup_stage2(self, spec: BackboneSpec, options: Mapping[str, Any],
                     dataset: Optional[str] = None) -> None:
        """Loads the teacher into a frozen f1 and f2's initial weights; options: `take_options`'s.
        A teacher checkpoint without solo-ncp metadata is normalised with `options["normalization"]`,
        else with solo-ncp's statistics of `dataset`."""
        self.stage2 = Stage2Config(
            perturbation=self.perturbation, strategy=options["strategy"],
            neighbor_rank=options["neighbor_rank"], lam=options["lam"], norm=options["norm"], eps=options["eps"],
            alpha=options["alpha"], steps=options["pgd_steps"], assign=options["assign"],
            dual_bn=options["dual_bn"], cluster_bn=options["cluster_bn"],
        )
        warn_of_budget(options["norm"], options["eps"], "method_kwargs.norm=L2", "method_kwargs.eps")
        teacher = read_teacher(options["teacher_ckpt"], spec, given=options["normalization"], dataset=dataset,
                               trust=options["trust_teacher"])
        assumed = assumed_normalization(teacher)
        if assumed:
            print(f"[solo-ncp] note: teacher {assumed}: if it was trained with others, set "
                  "method_kwargs.normalization={mean: [...], std: [...]}")
        trained_on = teacher.meta.get("dataset")
        if dataset and trained_on and trained_on != dataset:
            print(f"[solo-ncp] note: the teacher {options['teacher_ckpt']} was trained on {trained_on}, stage 2 "
                  f"runs on {dataset} (through the teacher's normalisation)")
        init_student(self.student_backbone, teacher, options["dual_bn"])
        self.teacher = teacher.model
        self.normalize = Normalize(teacher.normalization["mean"], teacher.normalization["std"])
        self.normalization = teacher.normalization
        self.backbone_spec = spec
        self.dataset_name = dataset
        self.teacher_file = {"path": str(options["teacher_ckpt"]),
                             "sha256": file_sha256(options["teacher_ckpt"])}
        self.dual_bn = options["dual_bn"]
        self.channels_last = options["channels_last"]
        self.cudnn_benchmark = options["cudnn_benchmark"]
        if self.channels_last:
            use_channels_last(self.student_backbone, self.teacher)
        if options["compile"]:
            compile_forward(self.student_backbone, self.teacher)
        self.val_robust_every = options["val_robust_every"]
        self.val_robust_n = options["val_robust_n"]
        self.val_robust_seed = options["val_robust_seed"]
        self.val_robust_data: Optional[TensorDataset] = None
        self.val_robust_batch_size = 0
        self.cluster_every = options["cluster_every"]
        self.cluster_features = options["cluster_features"]
        self.kmeans = dict(max_iter=options["kmeans_max_iter"], backend=options["kmeans_backend"],
                           init=options["kmeans_init"], n_init=options["kmeans_n_init"])
        self.kmeans_seed = options["kmeans_seed"]
        self.k, selection = resolve_k(options["k"], options["k_file"]) if self.uses_clusters else (0, {})
        if dataset and selection.get("dataset") and selection["dataset"] != dataset:
            print(f"[solo-ncp] note: method_kwargs.k_file {options['k_file']} chose K={self.k} on "
                  f"{selection['dataset']}, stage 2 runs on {dataset}")
        if selection.get("ckpt_sha256") and selection["ckpt_sha256"] != self.teacher_file["sha256"]:
            print(f"[solo-ncp] note: method_kwargs.k_file {options['k_file']} chose K={self.k} on the features of "
                  f"{selection['ckpt']} (sha256 {selection['ckpt_sha256'][:12]}...), not of this run's teacher "
                  f"{self.teacher_file['path']} ({self.teacher_file['sha256'][:12]}...): the paper chooses K on "
                  "the teacher's own features (solo-ncp select-k --ckpt <teacher>)")
        self.k_source = "k_file" if self.uses_clusters and options["k"] is None else "k"
        rank = self.stage2.neighbor_rank
        if self.uses_clusters and rank > self.k:
            raise ValueError(f"method_kwargs.neighbor_rank={rank} targets the {rank}-th nearest of K "
                             f"centroids (1 is the sample's own), but K = {self.k}: lower "
                             f"neighbor_rank to at most {self.k} or raise K")
        self.register_buffer("centroids", torch.zeros(self.k, features_dim(self.student_backbone)))
        self.register_buffer("clustered_epoch", torch.tensor(-1))
        self.cluster_data: Optional[Dataset] = None
        self.assigned: Optional[torch.Tensor] = None
        self.bank: Optional[torch.Tensor] = None
        self.bank_seen: Optional[torch.Tensor] = None
        self.input_normalization: Dict[str, Optional[Dict]] = {"train": None, "val": None}

    @property
    def student_backbone(self) -> nn.Module:
        return getattr(self, self.backbone_attr)

    @property
    def uses_clusters(self) -> bool:
        return self.perturbation == "ncp"

    def set_cluster_data(self, dataset: Dataset, batch_size: int = 512, num_workers: int = 0):
        """The training set without augmentation, (x in [0, 1], y) in the order of the training
        loader's indices: what the per-epoch clustering encodes. ValueError naming the option when
        K exceeds its images (it failed at the first clustering without naming it), and the robust
        monitor's held-out images (`set_val_robust_data`, called first) where there are some."""
        if self.uses_clusters:
            source = "method_kwargs.k" if self.k_source == "k" else "method_kwargs.k_file's K"
            check_clusters_fit(self.k, source, len(dataset),
                               self.val_robust_n if self.val_robust_data is not None else None)
        self.cluster_data = dataset
        self.cluster_loader_args = dict(batch_size=batch_size, num_workers=num_workers)

    def student(self) -> nn.Module:
        """f2 as one module (normalisation + encoder); built on the fly so nothing is registered
        twice in the state dict."""
        return nn.Sequential(self.normalize, self.student_backbone)

    def stage2_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        """X (B, C, H, W) in [0, 1] -> {"logits", "feats"} through the `cluster_bn` branch, the
        one the online classifier is trained on: the host's forward (validation, k-NN)."""
        with bn_branch(self.student_backbone, self.stage2.cluster_bn):
            feats = self.student_backbone(self.normalize(X))
        return {"logits": self.monitor_logits(feats.detach()), "feats": feats}

    def monitor_logits(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, D) of f2 -> the online classifier's logits (B, classes), on the features
        centred and L2-normalised (`UnitFeatures`)."""
        return self.classifier(UnitFeatures()(features))

    def online_classifier(self) -> nn.Module:
        """[0, 1] images -> logits: normalisation, f2, unit-length features and the online linear
        classifier, one module built on the fly (its dual BNs take the branch the caller chooses)."""
        return nn.Sequential(self.normalize, self.student_backbone, UnitFeatures(), self.classifier)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def checkpoint_meta(self) -> Dict[str, Any]:
        """solo-ncp's metadata of this run, as plain types (read by `solo_ncp.models.load_encoder`)."""
        meta = {
            "format": 1,
            "method": self.perturbation,
            "backbone": self.backbone_spec.to_dict(),
            "normalization": {k: list(v) for k, v in self.normalization.items()},
            "dual_bn": bool(self.dual_bn),
            "k": int(self.k),
            "teacher": dict(self.teacher_file),
        }
        if self.uses_clusters:  # what NCP's ablations (Tables 4, 5, Fig. 3) vary, and the rest, for `report`
            meta["perturbation"] = {"strategy": self.stage2.strategy,
                                    "neighbor_rank": int(self.stage2.neighbor_rank),
                                    "k_source": self.k_source,
                                    **{key: type(default)(getattr(self.stage2, key))
                                       for key, default in NCP_SETTINGS.items()}}
        if self.dataset_name:
            meta["dataset"] = str(self.dataset_name)
        if self.val_robust_every:
            meta["val_robust"] = {"every": int(self.val_robust_every), "n": int(self.val_robust_n),
                                  "seed": int(self.val_robust_seed), "images": HELD_OUT}
        return meta

    def on_save_checkpoint(self, checkpoint: Dict) -> None:
        """Keeps a launcher's metadata (its callback runs first), else adds the method's own, so a
        checkpoint saved by any launcher (e.g. solo-learn main's main_pretrain.py) describes itself;
        and the clustering state the next epochs read (`clustering_state`)."""
        checkpoint.setdefault(META_KEY, self.checkpoint_meta())
        state = self.clustering_state()
        if state:
            checkpoint[CLUSTERING_STATE_KEY] = state

    def on_load_checkpoint(self, checkpoint: Dict) -> None:
        """`check_resumed` on every launcher (solo-learn main's auto_resume; solo-ncp's --resume
        calls it before the run folder is touched); the clustering state comes back with it."""
        super().on_load_checkpoint(checkpoint)
        self.check_resumed(checkpoint.get(META_KEY) or {})
        state = checkpoint.get(CLUSTERING_STATE_KEY) or {}
        for name in CLUSTERING_TENSORS:
            setattr(self, name, state.get(name))

    def clustering_state(self) -> Dict[str, torch.Tensor]:
        """What a resumed run needs beyond the buffers to train on as the run it continues: the
        memory bank (`bank` (N, D) float, `bank_seen` (N,) bool) the next clustering reads, and the
        per-sample clusters of `assign=index` (`assigned` (N, 2) long), which a clustering not due
        yet would otherwise recompute. Empty where the run uses neither."""
        state = {name: getattr(self, name) for name in CLUSTERING_TENSORS}
        return {name: value.detach().cpu() for name, value in state.items() if value is not None}

    def check_resumed(self, meta: Mapping[str, Any]) -> None:
        """Refuses to resume a checkpoint (its solo-ncp metadata `meta`) trained from another
        teacher file, by the other method or with another K than this run's: its teacher weights and
        centroids would replace this run's (another K: a size mismatch traceback), and the metadata
        would name a teacher the run did not learn from."""
        recorded = (meta.get("teacher") or {}).get("sha256")
        if recorded and recorded != self.teacher_file["sha256"]:
            raise ValueError(
                f"the run being resumed was trained from a teacher of sha256 {recorded[:12]}..., but "
                f"method_kwargs.teacher_ckpt={self.teacher_file['path']} is {self.teacher_file['sha256'][:12]}...: "
                "give the teacher it was trained from, or train a new run (another name)")
        method = meta.get("method")
        if isinstance(method, str) and method != self.perturbation:
            raise ValueError(f"the run being resumed was trained by {method}, this run's config trains "
                             f"{self.perturbation}: resume it with a config of method: {method}, or train a new run "
                             "(another name)")
        k = meta.get("k")
        if isinstance(k, int) and not isinstance(k, bool) and k != self.k:
            raise ValueError(f"the run being resumed was trained with K={k} clusters, this run's config gives "
                             f"K={self.k}: set method_kwargs.k={k}, or train a new run (another name)")

    def on_train_start(self) -> None:
        super().on_train_start()
        for name in CLUSTERING_TENSORS:  # a resumed run's come back on the CPU
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(self.device))
        if self.cudnn_benchmark:  # off: left as the Trainer's `benchmark` set it
            torch.backends.cudnn.benchmark = True
        self.input_normalization["train"] = find_normalization(self.trainer.train_dataloader)
        self._check_monitor_data()

    def _check_monitor_data(self) -> None:
        """Refuses the k-NN in a run without validation data (it would keep every training feature,
        never scored) and the robust monitor in a run whose launcher held out no training images."""
        if self.knn_eval and not self.trainer.enable_validation:
            raise ValueError(
                "this run has no validation data for knn_eval.enabled=true to score: set "
                "data.val=true (solo-ncp train; data.val_path for solo-learn's main_pretrain.py), "
                "or turn the k-NN off (knn_eval.enabled=false)"
            )
        if self.val_robust_every and self.val_robust_data is None:
            raise ValueError(
                f"method_kwargs.val_robust_every={self.val_robust_every} measures robust accuracy on "
                "training images held out of training, which `solo-ncp train` sets aside "
                "(method_kwargs.val_robust_n, val_robust_seed) and this launcher did not: train with "
                "`solo-ncp train`, or set method_kwargs.val_robust_every=0"
            )

    def on_validation_start(self) -> None:
        super().on_validation_start()
        self.input_normalization["val"] = find_normalization(self.trainer.val_dataloaders)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training (index, X, y) and validation (X, y) batches, with X back in [0, 1] pixels."""
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        norm = self.input_normalization["train" if self.trainer.training else "val"]
        if norm is None:
            return batch
        if self.trainer.training:
            indexes, X, targets = batch
            return indexes, to_pixels(X, norm), targets
        X, targets = batch
        return to_pixels(X, norm), targets

    def set_val_robust_data(self, dataset: Dataset, batch_size: int) -> None:
        """The robust monitor's images: `dataset` of (x (C, H, W) in [0, 1] pixels, y), training
        images held out of training, read once into memory, scored in batches of `batch_size`."""
        xs, ys = [], []
        for x, y in DataLoader(dataset, batch_size=batch_size):
            xs.append(x)
            ys.append(torch.as_tensor(y))
        self.val_robust_data = TensorDataset(torch.cat(xs), torch.cat(ys))
        self.val_robust_batch_size = batch_size

    def measure_val_robust(self) -> Dict[str, float]:
        """The online classifier's (eval mode, `cluster_bn` branch) clean and PGD-20 accuracy in
        percent on the held-out images, with the method's norm, eps and alpha and the same random
        starts each time (`solo_ncp.eval.robust.evaluate`; a sample is robust if right clean and
        attacked), logged as `val_robust/clean_acc` and `val_robust/pgd20_acc`: {"sa", "ra"}.
        Every rank evaluates the same images, so the mean over ranks that is logged is each
        rank's value."""
        classifier = self.online_classifier()
        with bn_branch(classifier, self.stage2.cluster_bn):
            metrics = evaluate(classifier, self.val_robust_data, norm=self.stage2.norm, eps=self.stage2.eps,
                               alpha=self.stage2.alpha, steps=TEST_PGD_STEPS,
                               batch_size=self.val_robust_batch_size, device=self.device,
                               seed=VAL_ROBUST_SEED, progress=False)
        self.log_dict({VAL_ROBUST_CLEAN: metrics["sa"], VAL_ROBUST_PGD: metrics["ra"]},
                      on_epoch=True, on_step=False, sync_dist=True)
        return {"sa": float(metrics["sa"]), "ra": float(metrics["ra"])}

    def _encode(self, indices: torch.Tensor) -> torch.Tensor:
        """f2 of the training images `indices` (eval mode, cluster_bn branch, no augmentation),
        each rank encoding a shard with rank 0's BN statistics (`broadcast_buffers`), gathered
        into (len(indices), D) on every rank."""
        if self.cluster_data is None:
            raise ValueError("NCP needs set_cluster_data(dataset) before training (solo-ncp train does it)")
        world, rank = self.trainer.world_size, self.trainer.global_rank
        shard = indices[rank::world]
        loader = DataLoader(Subset(self.cluster_data, shard.tolist()), shuffle=False,
                            **self.cluster_loader_args)
        broadcast_buffers(self.student_backbone)
        student = self.student()
        with bn_branch(student, self.stage2.cluster_bn):
            features, _ = extract_features(student, loader, device=self.device,
                                           progress=rank == 0)
        rows = gather_rows(features.to(self.device), shard.to(self.device), len(self.cluster_data))
        return rows[indices.to(self.device)]

    def _features_to_cluster(self) -> Tuple[torch.Tensor, float]:
        """(N, D) features of the training set and the fraction taken from the memory bank. The
        bank holds the clean features of the samples seen since the last clustering; the others
        (a drop-last loader skips some every epoch) are encoded now."""
        n = len(self.cluster_data)
        if self.cluster_features != "memory_bank" or self.bank is None:
            return self._encode(torch.arange(n)), 0.0
        missing = (~self.bank_seen).nonzero().flatten()
        features = self.bank.clone()
        if len(missing):
            features[missing] = self._encode(missing.cpu())
        return features, 1.0 - len(missing) / n

    def on_train_epoch_start(self):
        """Every `cluster_every` epochs: spherical k-means of the whole training set's features
        (`cluster_epoch`; under DDP rank 0's result, broadcast), logged per epoch (identical on
        every rank but the times, whose mean over ranks is logged)."""
        epoch = self.current_epoch
        due = epoch % self.cluster_every == 0 or int(self.clustered_epoch) < 0
        due = due or (self.stage2.assign == "index" and self.assigned is None)
        if not self.uses_clusters or not due:
            return
        start = time.perf_counter()
        features, from_bank = self._features_to_cluster()
        encode_time = time.perf_counter() - start
        if self.bank is not None:
            self.bank_seen.zero_()
        previous = self.centroids if int(self.clustered_epoch) >= 0 else None
        clusters = cluster_epoch(features, self.k, seed=self.kmeans_seed + epoch,
                                 previous_centroids=previous, **self.kmeans)
        self.centroids.copy_(clusters.centroids)
        self.clustered_epoch.fill_(epoch)
        if self.stage2.assign == "index":
            nbr = nearest_centroids(features, clusters.centroids, self.stage2.neighbor_rank,
                                    own_index=clusters.labels).nbr_index
            self.assigned = torch.stack([clusters.labels, nbr], dim=1)
        stats = {**clusters.stats, "cluster_encode_time_s": encode_time,
                 "cluster_from_bank": from_bank}
        self.log_dict(stats, on_epoch=True, on_step=False, sync_dist=True)

    def _remember(self, indexes: torch.Tensor, features: torch.Tensor) -> None:
        """Memory bank: keep this step's eval-mode features (cluster_bn branch) for the next
        clustering, in the rows of the samples' dataset indices."""
        if self.bank is None:
            n = len(self.cluster_data)
            self.bank = features.new_zeros((n, features.shape[1]))
            self.bank_seen = torch.zeros(n, dtype=torch.bool, device=features.device)
        indexes, features = self.all_gather(indexes).flatten(0, -1), self.all_gather(features)
        features = features.reshape(-1, features.shape[-1])
        self.bank[indexes] = features
        self.bank_seen[indexes] = True

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """batch: (indexes (B,), X (B, C, H, W) in [0, 1] or a list of crops, the first used,
        targets (B,)); returns the stage-2 loss plus the online classifier's cross-entropy (the
        classifier learns from eval-mode features, so the sum trains each on its own loss).
        Logged: `train_loss` = the stage-2 loss alone (distill + lam * robust), its terms and
        `train_class_loss`; on the progress bar `loss`, `distill`, `robust` and `clf_loss`."""
        indexes, X, targets = batch
        x = X[0] if isinstance(X, (list, tuple)) else X
        x = channels_last(x) if self.channels_last else x
        assigned = self.assigned[indexes] if self.assigned is not None else None
        out = stage2_step(self.student(), self.teacher, x, self.stage2,
                          centroids=self.centroids if self.uses_clusters else None,
                          assigned=assigned)
        loss = out.losses["loss"]
        if not torch.isfinite(loss):
            kept = ("no checkpoint was written yet" if self.current_epoch == 0
                    else "last.ckpt of an earlier epoch is kept")
            raise FloatingPointError(
                f"stage-2 loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{batch_idx}: training stopped, {kept}. Lower optimizer.lr or "
                "method_kwargs.lam, or check the stage-1 checkpoint"
            )
        if self.cluster_features == "memory_bank":
            self._remember(indexes, out.eval_features)
        logits = self.monitor_logits(out.eval_features)
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
            metrics.update({f"train_cos_{k}": v for k, v in out.centroid_cos.items()})
        self.log_dict(metrics, on_epoch=True, sync_dist=True)
        self.log_dict({"loss": loss, "distill": out.losses["distill"],
                       "robust": out.losses["robust"], "clf_loss": class_loss},
                      prog_bar=True, logger=False, on_step=True, on_epoch=False)
        if self.knn_eval:
            labelled = targets != -1
            self.knn.update(train_features=out.eval_features[labelled],
                            train_targets=targets[labelled])
        return loss + class_loss
