"""Image transforms. All end in `ToTensor()` and leave normalisation to the model, except the
stage-1 SimCLR pipeline, which is solo-learn's own (it normalises inside the transform; the stage-1
checkpoint records the mean/std it used, see `normalization_of`)."""
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from torchvision import transforms

from solo_ncp.data.registry import DatasetSpec


def weak_augmentation(image_size: int, padding: int = 4, flip_prob: float = 0.5) -> Callable:
    """DeACL's stage-2 augmentation: pad-and-random-crop back to `image_size`, horizontal flip.
    Output (3, image_size, image_size) float32 in [0, 1]."""
    return transforms.Compose(
        [
            transforms.RandomCrop(image_size, padding=padding),
            transforms.RandomHorizontalFlip(flip_prob),
            transforms.ToTensor(),
        ]
    )


def simclr_transform(spec: DatasetSpec, pipelines: Tuple[Dict, ...]) -> Callable:
    """solo-learn 1.0.2's pretraining transform: one `prepare_transform` per augmentation
    pipeline, each applied `num_crops` times; returns a list of normalised views per image.

    pipelines: dicts of solo-learn transform kwargs plus `num_crops`.
    """
    from solo.utils.pretrain_dataloader import prepare_n_crop_transform, prepare_transform

    built, crops = [], []
    for kwargs in pipelines:
        kwargs = dict(kwargs)
        crops.append(kwargs.pop("num_crops"))
        if spec.solo_transform == "custom":
            kwargs.update(mean=spec.mean, std=spec.std)
        built.append(prepare_transform(spec.solo_transform, **kwargs))
    return prepare_n_crop_transform(built, num_crops_per_aug=crops)


def find_normalization(root: Any) -> Optional[Dict[str, Tuple[float, ...]]]:
    """mean/std of the first `transforms.Normalize` reachable from `root` through transform
    pipelines, datasets and their wrappers, data loaders, lists and dicts; None when there is
    none (e.g. a loader of [0, 1] pixels)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, transforms.Normalize):
            return {"mean": tuple(float(m) for m in node.mean),
                    "std": tuple(float(s) for s in node.std)}
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        else:
            stack.extend(getattr(node, attr, None)
                         for attr in ("loaders", "dataset", "datasets", "transform", "transforms"))
    return None


def normalization_of(transform: Callable) -> Dict[str, Tuple[float, ...]]:
    """The mean/std of the (first) `transforms.Normalize` inside a transform pipeline."""
    found = find_normalization(transform)
    if found is None:
        raise ValueError(f"no transforms.Normalize found in {transform!r}")
    return found
