"""Does the SLF head converge? Each head of `solo-ncp eval` against a converged convex probe.

Usage: .venv/bin/python benchmarks/head_convergence.py --ckpt RUN/last.ckpt --dataset fashionmnist
           [--train-n 2000] [--test-n 500] [--seed 0]

For each BN branch of the checkpoint (one row block per branch): the frozen encoder's features of
the first --train-n training and --test-n test images (eval mode, no augmentation) train
- the three heads of `solo-ncp eval --mode slf --cache-features` (whitened, standardized, paper),
  with the defaults `solo-ncp eval` uses for them (25 epochs, batch 512, lr from the protocol);
- the oracle: scikit-learn's L2 logistic regression (lbfgs to tol 1e-8), standardised inputs,
  C = 1 / (weight decay x N), the head's objective up to the scaling of the weights.
Prints SA (%) on the test images, each head's final training loss, the gap to the probe, and RA (%)
under PGD-20 (L-inf eps 8/255, step 2/255, `solo_ncp.eval.evaluate`) of the encoder followed by each
head, the probe's weights folded into an nn.Linear on the raw features (so the attack sees the
probe itself), with the Frobenius norm of each head's weights on the raw features.
"""
import argparse
import time

import torch
from torch import nn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Subset

from solo_ncp.data import build_dataset, get_spec
from solo_ncp.eval import FineTuneConfig, default_lr, evaluate, extract_features, fine_tune
from solo_ncp.eval.protocol import HEADS, WEIGHT_DECAY
from solo_ncp.models import load_encoder
from solo_ncp.models.checkpoint import read_checkpoint


def branches(ckpt) -> list:
    """["adv", "clean"] for a dual-BN checkpoint, [None] for one BN."""
    meta = read_checkpoint(ckpt).get("solo_ncp", {})
    return ["adv", "clean"] if meta.get("dual_bn") else [None]


def probe_head(train) -> nn.Linear:
    """The converged L2 logistic regression on standardised features, folded into a Linear on the
    raw features: W = coef / scale, b = intercept - W @ mean."""
    train_x, train_y = train
    scaler = StandardScaler()
    probe = make_pipeline(scaler, LogisticRegression(
        C=1.0 / (WEIGHT_DECAY * len(train_y)), max_iter=20000, tol=1e-8))
    probe.fit(train_x.numpy(), train_y.numpy())
    weight = torch.tensor(probe[-1].coef_ / scaler.scale_, dtype=torch.float32)
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(torch.tensor(probe[-1].intercept_, dtype=torch.float32)
                          - weight @ torch.tensor(scaler.mean_, dtype=torch.float32))
    return linear.eval()


def row(bn, name: str, encoder: nn.Module, head: nn.Linear, test_set, probe_sa, loss, seconds) -> float:
    """Prints the head's row: SA and PGD-20 RA of encoder + head on test_set; returns SA."""
    metrics = evaluate(nn.Sequential(encoder, head), test_set, device="cpu", seed=0, progress=False)
    gap = "" if probe_sa is None else f"{metrics['sa'] - probe_sa:+.2f}"
    print(f"| {bn or '-'} | {name} | {metrics['sa']:.2f} | {metrics['ra']:.2f} | "
          f"{head.weight.norm():.2f} | {loss} | {gap} | {seconds:.0f} |", flush=True)
    return metrics["sa"]


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
    print("| BN | head | SA(%) | RA(%) PGD-20 | weight norm | final training loss | SA - probe | seconds |\n"
          "|---|---|---|---|---|---|---|---|")
    for bn in branches(args.ckpt):
        encoder = load_encoder(args.ckpt, **({"bn": bn} if bn else {})).model
        train = extract_features(encoder, DataLoader(train_set, batch_size=256), device="cpu", progress=False)
        start = time.time()
        probe_sa = row(bn, "logistic regression (oracle)", encoder, probe_head(train), test_set, None, "",
                       time.time() - start)
        for head in HEADS:
            start = time.time()
            cfg = FineTuneConfig(head=head, lr=default_lr(args.dataset, "slf", head), seed=args.seed)
            tuned = fine_tune(encoder, train_set, classes, cfg, device="cpu", cache_features=True,
                              progress=False)
            row(bn, head, encoder, tuned.head, test_set, probe_sa, f"{tuned.history[-1]['loss']:.4f}",
                time.time() - start)


if __name__ == "__main__":
    main()
