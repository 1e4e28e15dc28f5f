"""Does the SLF head converge? Each head of `solo-ncp eval` against a converged convex probe.

Usage: .venv/bin/python benchmarks/head_convergence.py --ckpt RUN/last.ckpt --dataset fashionmnist
           [--train-n 2000] [--test-n 500] [--seed 0]

For each BN branch of the checkpoint (one row block per branch): the frozen encoder's features of
the first --train-n training and --test-n test images (eval mode, no augmentation) train
- the three heads of `solo-ncp eval --mode slf --cache-features` (whitened, standardized, paper),
  with the defaults `solo-ncp eval` uses for them (25 epochs, batch 512, lr from the protocol);
- the oracle: scikit-learn's L2 logistic regression (lbfgs to tol 1e-8), standardised inputs,
  C = 1 / (weight decay x N), the head's objective up to the scaling of the weights.
Prints SA (%) on the test images, each head's final training loss, and the gap to the probe.
"""
import argparse
import time

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Subset

from solo_ncp.data import build_dataset, get_spec
from solo_ncp.eval import FineTuneConfig, default_lr, extract_features, fine_tune
from solo_ncp.eval.protocol import HEADS, WEIGHT_DECAY
from solo_ncp.models import load_encoder
from solo_ncp.models.checkpoint import read_checkpoint


def branches(ckpt) -> list:
    """["adv", "clean"] for a dual-BN checkpoint, [None] for one BN."""
    meta = read_checkpoint(ckpt).get("solo_ncp", {})
    return ["adv", "clean"] if meta.get("dual_bn") else [None]


def probe_accuracy(train, test) -> float:
    (train_x, train_y), (test_x, test_y) = train, test
    probe = make_pipeline(StandardScaler(), LogisticRegression(
        C=1.0 / (WEIGHT_DECAY * len(train_y)), max_iter=20000, tol=1e-8))
    probe.fit(train_x.numpy(), train_y.numpy())
    return 100.0 * probe.score(test_x.numpy(), test_y.numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-n", type=int, default=2000)
    parser.add_argument("--test-n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train_set, test_set = (Subset(build_dataset(args.dataset, split, data_dir=args.data_dir), range(n))
                           for split, n in (("train", args.train_n), ("test", args.test_n)))
    classes = get_spec(args.dataset).num_classes
    print(f"{args.ckpt}: {args.dataset}, {len(train_set)} training / {len(test_set)} test images\n")
    print("| BN | head | SA(%) | final training loss | SA - probe | seconds |\n|---|---|---|---|---|---|")
    for bn in branches(args.ckpt):
        encoder = load_encoder(args.ckpt, **({"bn": bn} if bn else {})).model
        features = [extract_features(encoder, DataLoader(s, batch_size=256), device="cpu", progress=False)
                    for s in (train_set, test_set)]
        start = time.time()
        probe = probe_accuracy(*features)
        print(f"| {bn or '-'} | logistic regression (oracle) | {probe:.2f} | | | {time.time() - start:.0f} |",
              flush=True)
        test_x, test_y = features[1]
        for head in HEADS:
            start = time.time()
            cfg = FineTuneConfig(head=head, lr=default_lr(args.dataset, "slf", head), seed=args.seed)
            tuned = fine_tune(encoder, train_set, classes, cfg, device="cpu", cache_features=True,
                              progress=False)
            with torch.no_grad():
                sa = 100.0 * (tuned.head(test_x).argmax(1) == test_y).float().mean().item()
            print(f"| {bn or '-'} | {head} | {sa:.2f} | {tuned.history[-1]['loss']:.4f} | "
                  f"{sa - probe:+.2f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
