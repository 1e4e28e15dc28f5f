"""solo-learn 1.0.2's online k-NN made to work with the torchmetrics installed beside it."""
from solo.utils.knn import WeightedKNNClassifier


class AccumulatingKNN(WeightedKNNClassifier):
    """solo-learn 1.0.2's weighted k-NN whose call only stores a batch's features, as 1.0.2 meant
    with `compute_on_step=False`: the torchmetrics installed beside it ignores that flag, and its
    `forward` also scores each batch alone, which 1.0.2's `compute` cannot do for a batch holding
    only training (or only validation) features (`torch.cat` of an empty list)."""

    def forward(self, *args, **kwargs) -> None:
        self.update(*args, **kwargs)
