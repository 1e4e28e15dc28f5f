"""The checkpoint files of a training run's folder, and the checkpoint a result names (importable
without torch)."""
from typing import Mapping, Optional

LAST = "last.ckpt"
"""The checkpoint after the last finished epoch: what `--resume` continues."""
BEST = "best.ckpt"
"""The checkpoint of a stage-2 run's most robust epoch on its held-out images (`checkpoint.save_best`)."""


def encoder_sha256(checkpoint: Mapping) -> Optional[str]:
    """The sha256 that names an encoder in a result's `checkpoint` record: that of the checkpoint an
    export was made from (`exported_from`), else of the checkpoint read; None where none is recorded."""
    exported_from = checkpoint.get("exported_from")
    if isinstance(exported_from, Mapping) and exported_from.get("sha256"):
        return exported_from["sha256"]
    return checkpoint.get("sha256")
