"""`solo-ncp train` with every rank's per-epoch clustering recorded, for tests/test_ddp.py.

Run as a script, `python tests/ddp_train.py RECORD_DIR <train arguments>`: Lightning's DDP
launcher starts the other ranks by running this same file again. Each clustering saves, per
rank, the (N, D) features it clustered and the (K, D) centroids the rank holds afterwards as
RECORD_DIR/rank<rank>-clustering<n>.pt (n counts the clusterings of that rank from 0).
"""
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> int:
    import solo_ncp.methods.stage2_hooks as hooks
    from solo_ncp.cli import main as solo_ncp

    record, train_args = Path(sys.argv[1]), sys.argv[2:]
    cluster_epoch, done = hooks.cluster_epoch, []

    def recorded(features, k, **kwargs):
        clusters = cluster_epoch(features, k, **kwargs)
        rank = dist.get_rank() if dist.is_initialized() else 0
        torch.save({"features": features.cpu(), "centroids": clusters.centroids.cpu()},
                   record / f"rank{rank}-clustering{len(done)}.pt")
        done.append(rank)
        return clusters

    hooks.cluster_epoch = recorded
    return solo_ncp(["train", *train_args])


if __name__ == "__main__":
    sys.exit(main())
