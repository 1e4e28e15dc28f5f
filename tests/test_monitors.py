"""Training monitors of stage 2 (`ncp`, `deacl`), checked on one tiny `ncp` run on digits against
oracles computed here from its checkpoint and its CSV log:
- `method_kwargs.val_robust_every`: the online classifier's clean accuracy (a plain forward count)
  and PGD-20 accuracy (a transcription of torchattacks' PGD) on the training images held out of
  training;
- solo-learn's `knn_eval`: scikit-learn's KNeighborsClassifier on the features the k-NN scored,
  which are the checkpoint encoder's on the validation split;
- the progress bar and the log: `loss` is the stage-2 loss alone (Eq. 3 recomputed here from each
  step's batch with a copy of the student), the classifier's CE is `clf_loss`.
"""
import copy
import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from solo_ncp._host import current_host
from solo_ncp.commands.train import stage2_data, weak_augmentation_of
from solo_ncp.config import load_config
from solo_ncp.data import IndexedDataset, get_spec
from solo_ncp.launch.data import config_dataset, eval_loader, held_out_split, train_loader
from solo_ncp.launch.methods import build_method
from solo_ncp.launch.trainer import LAST, build_trainer
from solo_ncp.models import load_encoder
from solo_ncp.models.checkpoint import read_checkpoint
from tests.conftest import DIGITS_STAGE2, ROOT, SMALL_BACKBONE, pretrain, train_stage2
from tests.test_stage2_oracles import eq3_oracle

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = ROOT / "zoo_configs/fashionmnist/ncp.yaml"
LAM, EPS, ALPHA = 6.0, 8 / 255, 2 / 255  # the config's lam, eps, alpha
ROBUST_N, KNN_K, EPOCHS, SUBSET = 64, 5, 2, 576
STEPS = (SUBSET - ROBUST_N) // 64  # per epoch: the training images less those held out, batch 64
MONITORED = [
    "name=monitors", f"max_epochs={EPOCHS}", f"data.subset={SUBSET}", "data.val=true", "log_every_n_steps=1",
    # 16 steps at the config's 0.5 leave the small backbone's classifier too weak for PGD to flip any
    # prediction; at 10, 7 of the 64 held-out images are right and 4 after PGD-20
    "optimizer.classifier_lr=10.0",
    "+method_kwargs.val_robust_every=2", f"+method_kwargs.val_robust_n={ROBUST_N}",
    "+knn_eval.enabled=true", f"+knn_eval.k={KNN_K}", *SMALL_BACKBONE,
]


def build_with_knn(cfg):
    """The method of `cfg`, whose `knn_eval` block turns solo-learn's k-NN on: main reads it
    from the config, 1.0.2 from the keyword arguments solo-ncp's config mapping makes of it."""
    spec = get_spec("digits")
    model = build_method(cfg, (1, 0), normalization={"mean": spec.mean, "std": spec.std})
    assert model.knn_eval and model.knn.k == KNN_K
    return model


def keep_what_knn_scores(knn, seen: dict) -> None:
    """Puts in `seen` the features and labels `knn` holds when it scores validation features
    against training features (the last time's remain); main's k-NN also computes on each batch
    alone (torchmetrics' forward), which is not kept."""
    if knn.train_features and knn.test_features:
        seen.update({name: torch.cat(getattr(knn, name)).cpu() for name in
                     ("train_features", "train_targets", "test_features", "test_targets")},
                    distance=knn.distance_fx, T=knn.T, k=knn.k)


def spy_on_knn(model) -> dict:
    """What `model.knn` scores (`keep_what_knn_scores`), filled in as it computes."""
    seen, compute = {}, model.knn.compute

    def compute_and_keep():
        keep_what_knn_scores(model.knn, seen)
        return compute()

    model.knn.compute = compute_and_keep
    return seen


def metric_rows(folder: Path) -> list:
    """The rows of every attempt's CSV log of the run in `folder`, in attempt order."""
    rows = []
    for path in sorted(folder.glob("logs/version_*/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def recomputing_eq3(real_step, recomputed: list):
    """`stage2_step` that also appends Eq. 3's terms as floats, recomputed by `eq3_oracle` with a
    copy of the student as the step received it and the step's own x_adv."""

    def step(student, teacher, x, cfg, **kwargs):
        before = copy.deepcopy(student)
        out = real_step(student, teacher, x, cfg, **kwargs)
        with torch.no_grad():
            terms = eq3_oracle(before, teacher, x, out.x_adv, cfg.lam)
        recomputed.append({name: value.item() for name, value in terms.items()})
        return out

    return step


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_small_simclr_ckpt):
    """Two epochs of `ncp` (the small backbone) on 576 digits less the 64 held out (8 steps each)
    with every monitor on, built as `solo-ncp train` builds it. Returns {"trainer", "model",
    "folder", "rows", "knn", "cfg", "cluster_set", "eq3": each step's Eq. 3 terms recomputed
    (`recomputing_eq3`)}."""
    import solo_ncp.methods.stage2_hooks as hooks

    out = tmp_path_factory.mktemp("monitors")
    overrides = [*DIGITS_STAGE2, *MONITORED, f"checkpoint.dir={out}",
                 f"method_kwargs.teacher_ckpt={digits_small_simclr_ckpt}"]
    if current_host().is_main:  # 1.0.2 has only the euclidean k-NN
        overrides.append("+knn_eval.distance_func=cosine")
    cfg = load_config(str(CONFIG), overrides)
    torch.manual_seed(0)
    model = build_with_knn(cfg)
    knn = spy_on_knn(model)
    train_set, cluster_set = stage2_data(cfg, model)
    model.set_cluster_data(cluster_set, 64, 0)
    folder = out / "monitors"
    folder.mkdir()
    trainer = build_trainer(cfg, folder, model.checkpoint_meta())
    eq3 = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hooks, "stage2_step", recomputing_eq3(hooks.stage2_step, eq3))
        trainer.fit(model, train_loader(cfg, train_set),
                    eval_loader(cfg, config_dataset(cfg, "test", None)))
    return {"trainer": trainer, "model": model, "folder": folder, "rows": metric_rows(folder), "knn": knn,
            "cfg": cfg, "cluster_set": cluster_set, "eq3": eq3}


class UnitLength(nn.Module):
    """(B, D) -> each row centred (its mean over D subtracted), then divided by its Euclidean length."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        centred = features - features.mean(dim=1, keepdim=True)
        return centred / centred.norm(dim=1, keepdim=True)


def checkpoint_classifier(folder: Path) -> nn.Module:
    """[0, 1] images -> logits from last.ckpt alone: the encoder through the clean branch (the
    config's cluster_bn, which the online classifier is trained on), the features centred and
    divided by their L2 norm, and `classifier.*`."""
    encoder = load_encoder(folder / LAST, bn="clean").model
    state = read_checkpoint(folder / LAST)["state_dict"]
    head = nn.Linear(*state["classifier.weight"].shape[::-1])
    head.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    return nn.Sequential(encoder, UnitLength(), head).eval()


def first_test_images(cfg, n: int):
    test = config_dataset(cfg, "test", None)
    x = torch.stack([test[i][0] for i in range(n)])
    return x, torch.tensor([test[i][1] for i in range(n)])


def held_out_images(cfg):
    """The ROBUST_N training images the launcher held out (seed 0), in the order it drew them."""
    train = config_dataset(cfg, "pretrain", None)
    _, held_out = held_out_split(len(train), ROBUST_N, 0)
    return torch.stack([train[i][0] for i in held_out]), torch.tensor([train[i][1] for i in held_out])


def true_class_margin(logits: torch.Tensor, labels) -> torch.Tensor:
    """(N,) logit of the true class minus the largest other logit; logits (N, classes)."""
    true = logits.gather(1, labels[:, None])[:, 0]
    return true - logits.scatter(1, labels[:, None], float("-inf")).max(1).values


def torchattacks_pgd(model: nn.Module, images, labels, eps, alpha, steps, start):
    """torchattacks 3.5.1 `PGD.forward` (attacks/pgd.py), transcribed; its random start
    `uniform_(-eps, eps)` is replaced by `start` (same shape, in [-eps, eps])."""
    adv_images = images.clone().detach()
    adv_images = torch.clamp(adv_images + start, min=0, max=1).detach()
    loss = nn.CrossEntropyLoss()
    for _ in range(steps):
        adv_images.requires_grad = True
        cost = loss(model(adv_images), labels)
        grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
        adv_images = adv_images.detach() + alpha * grad.sign()
        delta = torch.clamp(adv_images - images, min=-eps, max=eps)
        adv_images = torch.clamp(images + delta, min=0, max=1).detach()
    return adv_images


def logged(rows, key):
    """{epoch: value} of an epoch-level metric."""
    return {int(r["epoch"]): float(r[key]) for r in rows if r.get(key)}


def test_robust_monitor_matches_a_forward_count_and_torchattacks_pgd_on_the_checkpoint(run):
    clean = logged(run["rows"], "val_robust/clean_acc")
    robust = logged(run["rows"], "val_robust/pgd20_acc")
    assert sorted(clean) == sorted(robust) == [1]  # every 2 epochs: after the second only
    classifier = checkpoint_classifier(run["folder"])
    x, y = held_out_images(run["cfg"])
    with torch.no_grad():
        clean_logits = classifier(x)
    clean_hit = clean_logits.argmax(1) == y
    # the monitor's random start: seed 0, one draw for its single batch (64 images, batch size 64)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    x_adv = torchattacks_pgd(classifier, x, y, EPS, ALPHA, 20, (2 * noise - 1) * EPS)
    with torch.no_grad():
        adv_logits = classifier(x_adv)
    robust_hit = clean_hit & (adv_logits.argmax(1) == y)
    assert clean[1] == pytest.approx(100.0 * clean_hit.float().mean().item())
    assert robust[1] == pytest.approx(100.0 * robust_hit.float().mean().item())
    # the attack worked: it lowered the true class's margin over the runner-up on every image the
    # classifier got right (it need not flip one: the near-chance head kept all 10 of its hits on
    # one machine with AVX-512, solo-learn main's host, so that robust == clean there)
    assert clean_hit.any() and bool((true_class_margin(adv_logits, y) < true_class_margin(clean_logits, y))
                                    [clean_hit].all())


def test_knn_scores_the_encoder_features_as_scikit_learn_does(run):
    knn, rows = run["knn"], run["rows"]
    accuracy = logged(rows, "val_knn_acc1")
    assert sorted(accuracy) == list(range(EPOCHS)) and min(accuracy.values()) >= 0
    # the validation features are the checkpoint encoder's (clean branch) on the test split
    x, y = first_test_images(run["cfg"], len(knn["test_targets"]))
    with torch.no_grad():
        expected = load_encoder(run["folder"] / LAST, bn="clean").model(x)
    torch.testing.assert_close(knn["test_features"], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(knn["test_targets"], y)
    # the training features: one per training image of the last epoch (4 full batches of 64)
    train_labels = [label for _, label in run["cluster_set"]]
    assert sorted(knn["train_targets"].tolist()) == sorted(train_labels)
    assert accuracy[EPOCHS - 1] == pytest.approx(scikit_learn_knn_accuracy(knn, y))


def scikit_learn_knn_accuracy(knn: dict, labels: torch.Tensor) -> float:
    """Accuracy (%) on `labels` of scikit-learn's KNeighborsClassifier with solo-learn's weights,
    fitted on the training features `spy_on_knn` kept and predicting its test features."""
    if knn["distance"] == "cosine":
        oracle = KNeighborsClassifier(n_neighbors=knn["k"], metric="cosine",
                                      weights=lambda d: np.exp((1 - d) / knn["T"]))
    else:
        oracle = KNeighborsClassifier(n_neighbors=knn["k"], metric="euclidean",
                                      weights=lambda d: 1 / (d + 1e-5))
    oracle.fit(knn["train_features"].double().numpy(), knn["train_targets"].numpy())
    predicted = oracle.predict(knn["test_features"].double().numpy())
    return 100.0 * np.mean(predicted == labels.numpy())


def test_stage1_knn_of_any_solo_learn_method_scores_as_scikit_learn_does(tmp_path, monkeypatch):
    """`solo-ncp pretrain` (SimCLR) with `knn_eval`: on solo-learn 1.0.2 its k-NN failed at the first
    training step (`torch.cat(): expected a non-empty list of Tensors`, the installed torchmetrics'
    forward); now, on both hosts, the logged `val_knn_acc1` is scikit-learn's on the features the
    k-NN held, and those of the test split are the checkpoint encoder's."""
    from solo.utils.knn import WeightedKNNClassifier

    knn, compute = {}, WeightedKNNClassifier.compute

    def compute_and_keep(self):
        keep_what_knn_scores(self, knn)
        return compute(self)

    monkeypatch.setattr(WeightedKNNClassifier, "compute", compute_and_keep)  # torchmetrics wraps it per instance
    assert pretrain(tmp_path, "name=knn", "max_epochs=1", "data.subset=256", "optimizer.batch_size=64", "data.val=true",
                    "+knn_eval.enabled=true", f"+knn_eval.k={KNN_K}", *SMALL_BACKBONE) == 0
    accuracy = logged(metric_rows(tmp_path / "knn"), "val_knn_acc1")
    assert list(accuracy) == [0]
    assert len(knn["train_targets"]) == 2 * 256 and knn["k"] == KNN_K  # one per crop (2) of each training image
    x, y = first_test_images(load_config(str(ROOT / "zoo_configs/fashionmnist/simclr.yaml"), ["data.dataset=digits"]),
                             len(knn["test_targets"]))
    with torch.no_grad():
        expected = load_encoder(tmp_path / "knn" / LAST).model(x)
    torch.testing.assert_close(knn["test_features"], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(knn["test_targets"], y)
    assert accuracy[0] == pytest.approx(scikit_learn_knn_accuracy(knn, y))


def test_progress_bar_shows_the_stage2_loss_its_terms_and_the_classifier_loss_apart(run):
    trainer, model, eq3 = run["trainer"], run["model"], run["eq3"]
    bar = trainer.progress_bar_metrics
    assert {"loss", "distill", "robust", "clf_loss"} <= bar.keys()
    with warnings.catch_warnings():  # Lightning 1.9 warns when a method logs `loss` itself
        warnings.simplefilter("error")
        shown = trainer.progress_bar_callback.get_metrics(trainer, model)
    steps = sorted((r for r in run["rows"] if r.get("train_loss_step")), key=lambda r: int(r["step"]))
    assert len(steps) == len(eq3) == EPOCHS * STEPS  # log_every_n_steps=1
    for row, expected in zip(steps, eq3):
        for term in ("loss", "distill", "robust"):
            logged_name = "train_loss_step" if term == "loss" else f"train_{term}_loss_step"
            assert float(row[logged_name]) == pytest.approx(expected[term], rel=1e-5), term
        assert float(row["train_class_loss_step"]) > 0.01  # so adding it would show
    for term in ("loss", "distill", "robust"):
        assert bar[term] == pytest.approx(eq3[-1][term], rel=1e-5), term
    assert float(shown["loss"]) == pytest.approx(eq3[-1]["loss"], rel=1e-5)
    assert bar["clf_loss"] == pytest.approx(float(steps[-1]["train_class_loss_step"]), rel=1e-6)


def test_the_online_classifier_stays_near_chance_at_the_configs_lr(digits_ncp_ckpt):
    """In the session's stage-2 run at the config's classifier_lr (0.5, momentum 0.9), the online
    classifier's mean cross-entropy over its epoch stays within 1.5x chance (ln 10 for digits'
    10 classes): on raw features it diverged (70-111 per step on the Fashion-MNIST proxy)."""
    assert load_config(str(CONFIG), []).optimizer.classifier_lr == 0.5
    rows = metric_rows(digits_ncp_ckpt.parent)
    epochs = [float(r["train_class_loss_epoch"]) for r in rows if r.get("train_class_loss_epoch")]
    assert len(epochs) == 1 and epochs[0] < 1.5 * math.log(10), epochs


def test_the_robust_monitor_is_refused_when_no_training_images_were_held_out(tmp_path, digits_simclr_ckpt):
    """A launcher other than `solo-ncp train` (here: the Trainer alone, as solo-learn's
    main_pretrain.py runs it) holds nothing out: the monitor would have no images but the test set."""
    cfg = load_config(str(CONFIG), [*DIGITS_STAGE2, "max_epochs=1", f"checkpoint.dir={tmp_path}",
                                    f"method_kwargs.teacher_ckpt={digits_simclr_ckpt}",
                                    "+method_kwargs.val_robust_every=1"])
    model = build_method(cfg, (1, 0), normalization={"mean": get_spec("digits").mean,
                                                     "std": get_spec("digits").std})
    model.set_cluster_data(config_dataset(cfg, "pretrain", None), 64, 0)
    trainer = build_trainer(cfg, tmp_path, model.checkpoint_meta())
    train_set = IndexedDataset(config_dataset(cfg, "pretrain", weak_augmentation_of(cfg)))
    with pytest.raises(ValueError, match=r"val_robust_every=1 measures robust accuracy on training "
                                         r"images held out of training, .*set method_kwargs.val_robust_every=0"):
        trainer.fit(model, train_loader(cfg, train_set))


def test_knn_without_validation_data_is_refused(tmp_path, digits_simclr_ckpt):
    cfg = load_config(str(CONFIG), [*DIGITS_STAGE2, "max_epochs=1", f"checkpoint.dir={tmp_path}",
                                    f"method_kwargs.teacher_ckpt={digits_simclr_ckpt}",
                                    "+knn_eval.enabled=true", f"+knn_eval.k={KNN_K}"])
    model = build_with_knn(cfg)
    model.set_cluster_data(config_dataset(cfg, "pretrain", None), 64, 0)
    trainer = build_trainer(cfg, tmp_path, model.checkpoint_meta())
    train_set = IndexedDataset(config_dataset(cfg, "pretrain", weak_augmentation_of(cfg)))
    with pytest.raises(ValueError, match=r"no validation data for knn_eval.enabled=true"):
        trainer.fit(model, train_loader(cfg, train_set))


@pytest.mark.skipif(current_host().is_main, reason="solo-learn main has a cosine k-NN")
def test_a_cosine_knn_is_refused_on_solo_learn_102(tmp_path, digits_simclr_ckpt, capsys):
    code = train_stage2(tmp_path, digits_simclr_ckpt, "name=cos", "max_epochs=1", "data.val=true",
                        "+knn_eval.enabled=true", "+knn_eval.distance_func=cosine")
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert last_line.startswith("error: knn_eval.distance_func='cosine': solo-learn 1.0.2")


@pytest.mark.parametrize("option", ["val_robust_every=-1", "val_robust_n=0"])
def test_bad_monitor_options_are_one_error_line(tmp_path, digits_simclr_ckpt, capsys, option):
    code = train_stage2(tmp_path, digits_simclr_ckpt, "name=bad", "max_epochs=1",
                        f"+method_kwargs.{option}")
    assert code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and option in last_line


def test_deacl_logs_the_robust_monitor_too(tmp_path, digits_small_simclr_ckpt):
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "name=d", "max_epochs=1", *SMALL_BACKBONE,
                        "+method_kwargs.val_robust_every=1", "+method_kwargs.val_robust_n=8",
                        method="deacl") == 0
    assert logged(metric_rows(tmp_path / "d"), "val_robust/pgd20_acc").keys() == {0}
