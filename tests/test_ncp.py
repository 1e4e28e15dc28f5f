"""Stage 2 (ncp / deacl): modes and branches of the attack, the loss, the method through
`solo-ncp train` on digits, resume, DDP centroids, bad input."""
import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from solo_ncp.attacks import ncp_objective
from solo_ncp.methods.stage2_hooks import Stage2Hooks
from solo_ncp.models import load_encoder
from solo_ncp.models.checkpoint import (CLUSTERING_STATE_KEY, encoder_state_dict, read_checkpoint,
                                        split_state_dict)
from solo_ncp.models.inference import eval_mode
from solo_ncp.models.dual_bn import DualBatchNorm2d, bn_branch, convert_dual_bn
from solo_ncp.models.normalize import Normalize
from solo_ncp.ncp import Stage2Config, adversarial_examples, cluster_epoch, gather_rows, stage2_step
from tests.conftest import KILLED_RUN_EPOCHS, SMALL_BACKBONE, train_stage2
from tests.test_dual_bn import tiny_cnn
from tests.test_two_hosts import ENCODER_PREFIX


def tiny_student():
    torch.manual_seed(0)
    return nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), convert_dual_bn(tiny_cnn())).train()


def test_pgd_runs_in_eval_mode_through_the_adversarial_bn():
    student = tiny_student()
    student(torch.rand(8, 3, 8, 8))  # some running statistics
    calls = {"clean": 0, "adv": 0}
    for m in student.modules():
        if isinstance(m, DualBatchNorm2d):
            for branch in calls:
                getattr(m, branch).register_forward_hook(
                    lambda mod, inp, out, b=branch: calls.__setitem__(b, calls[b] + 1))
    stats = {k: v.clone() for k, v in student.state_dict().items()}
    x = torch.rand(6, 3, 8, 8)
    centroids = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    objective = ncp_objective(student, centroids[[0] * 6], centroids[[1] * 6], "iii")
    cfg = Stage2Config(steps=3)
    x_adv = adversarial_examples(student, x, objective, cfg)
    assert calls["adv"] > 0 and calls["clean"] == 0
    assert all(torch.equal(stats[k], v) for k, v in student.state_dict().items())
    assert student.training and all(m.training for m in student.modules())
    assert (x_adv - x).abs().max() <= cfg.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad(), eval_mode(student), bn_branch(student, "adv"):
        assert objective(x_adv).mean() > objective(x).mean()


@pytest.mark.parametrize("perturbation", ["ncp", "deacl"])
def test_stage2_step_trains_every_student_parameter_and_leaves_the_teacher_alone(perturbation):
    """The loss values themselves are checked against oracles in test_stage2_oracles.py."""
    student = tiny_student()
    teacher = nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), tiny_cnn()).eval().requires_grad_(False)
    cfg = Stage2Config(perturbation=perturbation, lam=6.0, steps=2)
    centroids = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    out = stage2_step(student, teacher, torch.rand(8, 3, 8, 8), cfg, centroids=centroids)
    out.losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert not out.eval_features.requires_grad
    assert (out.centroid_changed is None) == (perturbation == "deacl")


def test_stage2_config_rejects_bad_values():
    with pytest.raises(ValueError, match="strategy='iv'"):
        Stage2Config(strategy="iv")
    with pytest.raises(ValueError, match="neighbor_rank=1"):
        Stage2Config(neighbor_rank=1)
    with pytest.raises(ValueError, match="perturbation='fgsm'"):
        Stage2Config(perturbation="fgsm")


class ClusteringHost(Stage2Hooks):
    """The stage-2 hooks' clustering methods on a plain object: one process (no DDP), CPU, f2 =
    `tiny_student()` whose clean and adversarial BN branches differ, so encoding through the wrong
    branch shows too."""

    def __init__(self, images: torch.Tensor, cluster_features: str, batch_size: int):
        student = tiny_student()
        student(torch.rand(16, 3, 8, 8))  # clean running statistics move away from (0, 1)
        with torch.no_grad():
            for m in student.modules():
                if isinstance(m, DualBatchNorm2d):
                    m.adv.weight.mul_(3.0)
        self.normalize, self.encoder = student
        self.stage2 = Stage2Config(cluster_bn="clean")
        self.trainer = SimpleNamespace(world_size=1, global_rank=0)
        self.device = torch.device("cpu")
        self.cluster_features = cluster_features
        self.bank = None
        self.k, self.k_source = 2, "k"
        self.val_robust_data = None  # no robust monitor
        self.set_cluster_data(TensorDataset(images, torch.zeros(len(images), dtype=torch.long)),
                              batch_size=batch_size)


def encoded_one_by_one(host: Stage2Hooks, indices) -> torch.Tensor:
    """(len(indices), D): f2 of each training image `indices[j]` encoded alone (eval mode,
    cluster_bn branch): the row that belongs to that dataset index, whatever any loader's order."""
    student = host.student()
    with torch.no_grad(), eval_mode(student), bn_branch(student, host.stage2.cluster_bn):
        return torch.cat([student(host.cluster_data[int(i)][0][None]) for i in indices])


IMAGES = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def test_full_pass_features_are_in_dataset_order():
    """Without DDP, batches of 4 (three loader batches): row i is image i's feature."""
    host = ClusteringHost(IMAGES, "full_pass", batch_size=4)
    features, from_bank = host._features_to_cluster()
    torch.testing.assert_close(features, encoded_one_by_one(host, range(len(IMAGES))))
    assert from_bank == 0.0


def test_encoding_indices_out_of_order_returns_each_index_its_own_row():
    """The loader then runs in the order of `indices`, not the dataset's: each returned row
    must still be the feature of the index at its position."""
    host = ClusteringHost(IMAGES, "full_pass", batch_size=3)
    indices = torch.tensor([7, 2, 9, 0, 5, 3])
    torch.testing.assert_close(host._encode(indices), encoded_one_by_one(host, indices))


def test_gather_rows_without_ddp_puts_rows_at_their_indices():
    rows = torch.tensor([[7.0], [2.0], [9.0], [0.0]])
    gathered = gather_rows(rows, torch.tensor([7, 2, 9, 0]), 10)
    assert gathered[[0, 2, 7, 9]].flatten().tolist() == [0.0, 2.0, 7.0, 9.0]


def test_memory_bank_keeps_seen_rows_and_encodes_the_missing_ones_in_their_rows():
    """Rows 0, 2, 3, 6, 9 were seen (the bank holds marker values there); 1, 4, 5, 7, 8 were
    not and must be f2 of those very images."""
    host = ClusteringHost(IMAGES, "memory_bank", batch_size=2)
    host.bank = 1000.0 + torch.arange(10 * 4, dtype=torch.float32).view(10, 4)
    host.bank_seen = torch.zeros(10, dtype=torch.bool)
    seen, missing = [0, 2, 3, 6, 9], [1, 4, 5, 7, 8]
    host.bank_seen[seen] = True
    features, from_bank = host._features_to_cluster()
    assert torch.equal(features[seen], host.bank[seen])
    torch.testing.assert_close(features[missing], encoded_one_by_one(host, missing))
    assert from_bank == 0.5


def _metrics(run: Path):
    rows = []
    for path in sorted((run / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def test_one_ncp_epoch_clusters_trains_the_student_and_keeps_the_teacher(digits_ncp_ckpt,
                                                                         digits_simclr_ckpt):
    ckpt = read_checkpoint(digits_ncp_ckpt)
    stage1 = encoder_state_dict(read_checkpoint(digits_simclr_ckpt))
    teacher = split_state_dict(ckpt, "teacher.backbone.")
    assert teacher.keys() == stage1.keys()
    assert all(torch.equal(teacher[k], stage1[k]) for k in stage1)  # bit-identical
    student = split_state_dict(ckpt, ENCODER_PREFIX)
    assert not torch.equal(student["conv1.weight"], stage1["conv1.weight"])
    assert "bn1.adv.running_mean" in student and "bn1.clean.running_mean" in student
    centroids = ckpt["state_dict"]["centroids"]
    assert centroids.shape == (10, 512)
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(10))
    assert int(ckpt["state_dict"]["clustered_epoch"]) == 0
    meta = ckpt["solo_ncp"]
    assert meta["method"] == "ncp" and meta["dual_bn"] and meta["k"] == 10
    assert len(meta["teacher"]["sha256"]) == 64

    logged = {k for row in _metrics(digits_ncp_ckpt.parent) for k, v in row.items() if v}
    for key in ("train_distill_loss_epoch", "train_robust_loss_epoch", "cluster_time_s",
                "cluster_encode_time_s", "cluster_objective", "cluster_size_min",
                "cluster_size_median", "cluster_size_max", "train_adv_centroid_changed_epoch",
                "train_cos_clean_own_epoch", "train_cos_clean_nbr_epoch", "train_cos_adv_own_epoch",
                "train_cos_adv_nbr_epoch"):
        assert key in logged, key
    # the first epoch runs at the config's lr (warmup_epochs=0), not at warmup_start_lr
    lrs = {k: float(v) for row in _metrics(digits_ncp_ckpt.parent) for k, v in row.items()
           if k.startswith("lr-") and v}
    assert max(lrs.values()) == pytest.approx(0.5), lrs


def test_ncp_checkpoint_loads_for_evaluation_through_either_branch(digits_ncp_ckpt):
    x = torch.rand(4, 3, 8, 8)
    clean, adv = (load_encoder(digits_ncp_ckpt, bn=b) for b in ("clean", "adv"))
    assert (clean.bn, adv.bn) == ("clean", "adv")
    assert not torch.allclose(clean.model(x), adv.model(x))


def test_killed_run_resumes_with_its_centroids_optimizer_and_epoch(tmp_path, digits_small_simclr_ckpt):
    """SIGKILL a real `solo-ncp train` after its first checkpoint (the small backbone,
    `KILLED_RUN_EPOCHS` epochs of 4 steps), then resume it to the end."""
    from tests.conftest import DIGITS_STAGE2, ROOT

    teacher = digits_small_simclr_ckpt
    args = ["name=r", f"max_epochs={KILLED_RUN_EPOCHS}", f"method_kwargs.cluster_every={KILLED_RUN_EPOCHS}",
            *SMALL_BACKBONE]
    argv = [sys.executable, "-m", "solo_ncp.cli", "train", "--config",
            str(ROOT / "zoo_configs/fashionmnist/ncp.yaml"), *DIGITS_STAGE2,
            f"checkpoint.dir={tmp_path}", f"method_kwargs.teacher_ckpt={teacher}", *args]
    last = tmp_path / "r" / "last.ckpt"
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed = read_checkpoint(last)
    assert killed["epoch"] < KILLED_RUN_EPOCHS - 1

    assert train_stage2(tmp_path, teacher, *args, resume=True) == 0
    final = read_checkpoint(last)
    assert final["epoch"] == KILLED_RUN_EPOCHS - 1
    assert final["lr_schedulers"][0]["last_epoch"] == KILLED_RUN_EPOCHS
    # only epoch 0 clusters (cluster_every = max_epochs): its centroids came back from the checkpoint
    assert int(final["state_dict"]["clustered_epoch"]) == 0
    assert torch.equal(final["state_dict"]["centroids"], killed["state_dict"]["centroids"])
    for key in killed["state_dict"]:
        if key.startswith("teacher."):
            assert torch.equal(final["state_dict"][key], killed["state_dict"][key])
    conv1 = ENCODER_PREFIX + "conv1.weight"
    assert not torch.equal(final["state_dict"][conv1], killed["state_dict"][conv1])


def test_memory_bank_clusters_the_previous_epoch_features(tmp_path, digits_small_simclr_ckpt,
                                                          monkeypatch):
    """250 images in batches of 64 with drop-last: 3 x 64 = 192 are seen in epoch 0. Epoch 0
    clusters a full pass; epoch 1 clusters the bank, whose seen rows are the features epoch 0's
    steps remembered for those dataset indices, and whose other rows are f2 of those images at
    clustering time, each encoded alone here."""
    import solo_ncp.methods.stage2_hooks as hooks

    remembered, encoded, clustered = [], [], []
    real_remember, real_encode, real_cluster = (hooks.Stage2Hooks._remember,
                                                hooks.Stage2Hooks._encode, hooks.cluster_epoch)

    def recording_remember(self, indexes, features):
        remembered.append((indexes.clone(), features.clone()))
        return real_remember(self, indexes, features)

    def recording_encode(self, indices):
        encoded.append((indices.clone(), encoded_one_by_one(self, indices)))
        return real_encode(self, indices)

    def recording_cluster(features, *args, **kwargs):
        clustered.append(features.clone())
        return real_cluster(features, *args, **kwargs)

    monkeypatch.setattr(hooks.Stage2Hooks, "_remember", recording_remember)
    monkeypatch.setattr(hooks.Stage2Hooks, "_encode", recording_encode)
    monkeypatch.setattr(hooks, "cluster_epoch", recording_cluster)
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "max_epochs=2", "name=bank",
                        "data.subset=250", "method_kwargs.cluster_features=memory_bank",
                        "method_kwargs.assign=index", *SMALL_BACKBONE) == 0
    (all_indices, full_pass), (missing, missing_rows) = encoded
    assert torch.equal(all_indices, torch.arange(250))
    torch.testing.assert_close(clustered[0], full_pass)
    seen = torch.cat([indexes for indexes, _ in remembered[:3]])
    assert len(remembered) == 6 and len(seen) == len(set(seen.tolist())) == 192
    assert sorted(missing.tolist()) == sorted(set(range(250)) - set(seen.tolist()))
    torch.testing.assert_close(clustered[1][missing], missing_rows)
    for indexes, features in remembered[:3]:
        assert torch.equal(clustered[1][indexes], features)
    from_bank = [float(r["cluster_from_bank"]) for r in _metrics(tmp_path / "bank")
                 if r.get("cluster_from_bank")]
    assert from_bank == [0.0, pytest.approx(192 / 250)]


def test_assign_index_takes_each_samples_neighbour_among_the_other_clusters(tmp_path, digits_small_simclr_ckpt,
                                                                           monkeypatch):
    """assign=index: a sample's own cluster is its k-means label, which is not always its nearest
    centroid (Lloyd stops before a last assignment); here every 5th label is moved to the
    2nd-nearest centroid. The epoch's stored neighbour must be the nearest centroid other than
    the own one (found here by sorting each row's similarities), so never the own one."""
    import solo_ncp.methods.stage2_hooks as hooks

    clustered = []
    real_cluster = hooks.cluster_epoch

    def relabelled_cluster(features, *args, **kwargs):
        clusters = real_cluster(features, *args, **kwargs)
        second = (features @ clusters.centroids.T).argsort(dim=1, descending=True)[:, 1]
        labels = clusters.labels.clone()
        labels[::5] = second[::5]
        clustered.append((features.clone(), clusters.centroids.clone(), labels))
        return dataclasses.replace(clusters, labels=labels)

    monkeypatch.setattr(hooks, "cluster_epoch", relabelled_cluster)
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "max_epochs=1", "name=index",
                        "data.subset=250", "method_kwargs.assign=index", *SMALL_BACKBONE) == 0
    assigned = read_checkpoint(tmp_path / "index" / "last.ckpt")[CLUSTERING_STATE_KEY]["assigned"]
    (features, centroids, labels), = clustered
    similarities = (features @ centroids.T).tolist()
    expected = [max((c for c in range(len(row)) if c != own), key=row.__getitem__)
                for row, own in zip(similarities, labels.tolist())]
    assert assigned[:, 0].tolist() == labels.tolist()
    assert assigned[:, 1].tolist() == expected


def test_memory_bank_rows_are_the_steps_features_of_the_same_samples(tmp_path, digits_small_simclr_ckpt,
                                                                     monkeypatch):
    """No augmentation, so each training batch is a set of dataset images: every f2(x) a step
    computed in epoch 0 must be the row that epoch 1 clusters for the image it came from (found
    as the unique nearest image of the un-augmented training set)."""
    import solo_ncp.methods.stage2_hooks as hooks

    seen, clustered = [], []
    real_step, real_cluster = hooks.stage2_step, hooks.cluster_epoch

    def recording_step(student, teacher, x, *args, **kwargs):
        out = real_step(student, teacher, x, *args, **kwargs)
        seen.append((x.detach().clone(), out.eval_features.clone()))
        return out

    def recording_cluster(features, *args, **kwargs):
        clustered.append(features.clone())
        return real_cluster(features, *args, **kwargs)

    monkeypatch.setattr(hooks, "stage2_step", recording_step)
    monkeypatch.setattr(hooks, "cluster_epoch", recording_cluster)
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "max_epochs=2", "name=bank",
                        "method_kwargs.cluster_features=memory_bank",
                        "augmentations.0.pad_crop.padding=0",
                        "augmentations.0.horizontal_flip.prob=0.0", *SMALL_BACKBONE) == 0
    from solo_ncp.launch.data import config_dataset
    from solo_ncp.config import load_config
    from tests.conftest import DIGITS_STAGE2, ROOT

    cfg = load_config(ROOT / "zoo_configs/fashionmnist/ncp.yaml", DIGITS_STAGE2)
    images = torch.stack([x for x, _ in config_dataset(cfg, "pretrain", None)]).flatten(1)
    epoch0 = seen[:len(seen) // 2]
    assert len(clustered) == 2 and sum(len(x) for x, _ in epoch0) == len(images)
    for x, features in epoch0:
        # the training transform passes through 8-bit PIL images: matches are within 1/255 a pixel
        distance, index = torch.cdist(x.flatten(1), images).topk(2, dim=1, largest=False)
        assert distance[:, 0].max() < 0.05 and distance[:, 1].min() > 0.5
        torch.testing.assert_close(clustered[1][index[:, 0]], features)


@pytest.mark.parametrize("method, overrides, k", [("deacl", [], 0),
                                                   ("ncp", ["method_kwargs.dual_bn=false"], 10)])
def test_single_bn_stage2_trains_and_saves_one_bn(tmp_path, digits_small_simclr_ckpt, method, overrides, k):
    """`deacl` as published (no clusters), and `ncp` with `dual_bn: false` (DeACL's joint batch)."""
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "max_epochs=1", "name=d", *overrides,
                        *SMALL_BACKBONE, method=method) == 0
    ckpt = read_checkpoint(tmp_path / "d" / "last.ckpt")
    assert ckpt["solo_ncp"]["method"] == method and not ckpt["solo_ncp"]["dual_bn"]
    assert ckpt["state_dict"]["centroids"].shape[0] == k
    student = split_state_dict(ckpt, ENCODER_PREFIX)
    assert "bn1.running_mean" in student and not any(".adv." in key for key in student)
    assert load_encoder(tmp_path / "d" / "last.ckpt").bn is None
    clustered = any("cluster_time_s" in r and r["cluster_time_s"] for r in _metrics(tmp_path / "d"))
    assert clustered == (k > 0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method_kwargs.teacher_ckpt=/nonexistent/last.ckpt"], "does not exist"),
        (["backbone.kwargs.cifar=false"], "cifar stem: True"),
        (["method_kwargs.k=null"], "number of clusters"),
        (["method_kwargs.k=5000"], "K=5000 clusters (method_kwargs.k) but the training set has only 256 images: lower K"),
        (["method_kwargs.dual_bn=false", "method_kwargs.cluster_bn=adv"],
         "cluster_bn='adv' needs dual_bn: true"),
    ],
)
def test_bad_stage2_input_is_one_clear_error(tmp_path, digits_simclr_ckpt, capsys, overrides,
                                             message):
    args = [o for o in overrides if not o.startswith("method_kwargs.teacher_ckpt")]
    teacher = next((o.split("=", 1)[1] for o in overrides if o.startswith("method_kwargs.teacher")),
                   digits_simclr_ckpt)
    assert train_stage2(tmp_path, teacher, "max_epochs=1", "name=bad", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("trained_on", ["fashionmnist", "digits"])
def test_a_teacher_trained_on_another_dataset_is_noted(tmp_path, digits_simclr_ckpt, capsys, trained_on):
    """Stage 2 on digits from a teacher whose metadata says it was trained on `trained_on`: a note
    only for another dataset (the run goes on: a transfer may be meant). K=5000 stops the command
    after the teacher is read."""
    from solo_ncp.models.checkpoint import META_KEY

    checkpoint = torch.load(digits_simclr_ckpt, map_location="cpu", weights_only=True)
    assert checkpoint[META_KEY]["dataset"] == "digits"
    checkpoint[META_KEY]["dataset"] = trained_on
    teacher = tmp_path / "teacher.ckpt"
    torch.save(checkpoint, teacher)
    assert train_stage2(tmp_path, teacher, "max_epochs=1", "name=other", "method_kwargs.k=5000") == 2
    note = (f"[solo-ncp] note: the teacher {teacher} was trained on fashionmnist, stage 2 runs on digits "
            "(through the teacher's normalisation)")
    assert (note in capsys.readouterr().out) == (trained_on != "digits")


@pytest.mark.parametrize("chosen_on", ["fashionmnist", "digits"])
def test_a_k_file_chosen_on_another_dataset_is_noted(tmp_path, digits_simclr_ckpt, capsys, chosen_on):
    """A k.json of select-k on `chosen_on` for a stage 2 on digits: a note only for another dataset.
    Its K (5000) stops the command once the method is built."""
    import json

    k_file = tmp_path / "k.json"
    k_file.write_text(json.dumps({"k": 5000, "scores": {"5000": 0.1}, "dataset": chosen_on, "seed": 0, "n": 10}))
    assert train_stage2(tmp_path, digits_simclr_ckpt, "max_epochs=1", "name=kf", "method_kwargs.k=null",
                        f"method_kwargs.k_file={k_file}") == 2
    note = f"[solo-ncp] note: method_kwargs.k_file {k_file} chose K=5000 on fashionmnist, stage 2 runs on digits"
    assert (note in capsys.readouterr().out) == (chosen_on != "digits")


@pytest.mark.parametrize("chosen_by", ["teacher", "another encoder", "not recorded"])
def test_a_k_file_chosen_on_another_encoder_is_noted(tmp_path, digits_simclr_ckpt, capsys, chosen_by):
    """A k.json whose sweep ran on another encoder's features than the run's teacher (its sha256,
    computed here from the files' bytes): a note naming both; none for the teacher's own, nor for a
    k.json written before select-k recorded it. Its K (5000) stops the command once the method is
    built."""
    import hashlib
    import json

    other = tmp_path / "other.ckpt"
    other.write_bytes(b"another encoder")
    sha = {"teacher": hashlib.sha256(digits_simclr_ckpt.read_bytes()).hexdigest(),
           "another encoder": hashlib.sha256(b"another encoder").hexdigest(), "not recorded": None}
    record = {"k": 5000, "scores": {"5000": 0.1}, "dataset": "digits", "seed": 0, "n": 10,
              "ckpt": str(other if chosen_by == "another encoder" else digits_simclr_ckpt)}
    k_file = tmp_path / "k.json"
    k_file.write_text(json.dumps({**record, **({"ckpt_sha256": sha[chosen_by]} if sha[chosen_by] else {})}))
    assert train_stage2(tmp_path, digits_simclr_ckpt, "max_epochs=1", "name=kf", "method_kwargs.k=null",
                        f"method_kwargs.k_file={k_file}") == 2
    note = (f"[solo-ncp] note: method_kwargs.k_file {k_file} chose K=5000 on the features of {other} "
            f"(sha256 {sha['another encoder'][:12]}...), not of this run's teacher {digits_simclr_ckpt} "
            f"({sha['teacher'][:12]}...): the paper chooses K on the teacher's own features "
            "(solo-ncp select-k --ckpt <teacher>)")
    out = capsys.readouterr().out
    assert (note in out) == (chosen_by == "another encoder")
    assert ("chose K=5000 on the features" in out) == (chosen_by == "another encoder")


@pytest.mark.parametrize("clean_steps, message", [
    (4, "loss is nan at epoch 1, step 0: training stopped, last.ckpt of an earlier epoch is kept"),
    (0, "loss is nan at epoch 0, step 0: training stopped, no checkpoint was written yet"),
])
def test_nan_loss_stops_with_one_error_and_keeps_what_was_written(tmp_path, digits_small_simclr_ckpt,
                                                                  capsys, monkeypatch,
                                                                  clean_steps, message):
    """A loss that turns NaN after `clean_steps` steps (4 steps an epoch; fault injected into the
    real step) stops the run with one clear error; the first epoch's checkpoint, if it was
    written, is left in place and finite."""
    import solo_ncp.methods.stage2_hooks as ncp_method

    calls = []
    real_step = ncp_method.stage2_step

    def poisoned_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) > clean_steps:
            out.losses["loss"] = out.losses["loss"] * float("nan")
        return out

    monkeypatch.setattr(ncp_method, "stage2_step", poisoned_step)
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "max_epochs=3", "name=n", *SMALL_BACKBONE) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    last = tmp_path / "n" / "last.ckpt"
    assert last.exists() == (clean_steps > 0)
    if clean_steps:
        kept = read_checkpoint(last)
        assert kept["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in kept["state_dict"].values()
                   if v.is_floating_point())


def _ddp_worker(rank: int, world: int, port: str, features: torch.Tensor, out: str):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        shard = torch.arange(rank, features.shape[0], world)
        gathered = gather_rows(features[shard], shard, features.shape[0])
        # different seeds per rank: identical centroids can only come from the broadcast
        clusters = cluster_epoch(gathered, 4, seed=rank)
        torch.save({"gathered": gathered, "centroids": clusters.centroids,
                    "labels": clusters.labels}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_hold_identical_centroids(tmp_path):
    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    features = centres.repeat_interleave(25, dim=0) + 0.05 * torch.randn(100, 16)
    port = str(29500 + os.getpid() % 1000)
    mp.spawn(_ddp_worker, args=(2, port, features, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["gathered"], features) and torch.equal(r1["gathered"], features)
    assert torch.equal(r0["centroids"], r1["centroids"]) and torch.equal(r0["labels"], r1["labels"])
    single = cluster_epoch(features, 4, seed=0)
    assert torch.equal(single.centroids, r0["centroids"])


@pytest.mark.parametrize("export", [True, False])
def test_a_teacher_that_is_a_folder_is_refused_naming_the_file_to_pass(tmp_path, export):
    """An export folder loads as an encoder, but a run records its teacher file's sha256: before,
    `[Errno 21] Is a directory` after the teacher had loaded."""
    from solo_ncp.models.backbones import BackboneSpec
    from solo_ncp.models.checkpoint import CheckpointError
    from solo_ncp.ncp.teacher import load_teacher

    if export:
        (tmp_path / "export.json").write_text("{}")
    with pytest.raises(CheckpointError) as caught:
        load_teacher(tmp_path, BackboneSpec())
    assert str(caught.value) == (
        f"teacher {tmp_path} is a folder, not a file: stage 2 starts from a stage-1 checkpoint file"
        f"{' (an export: its solo_learn.ckpt is one)' if export else ''}; pass `solo-ncp pretrain`'s last.ckpt")
