"""solo-learn methods and backbones contributed by solo-ncp, and their registration into solo-learn:
importing this package registers them (HostError without a host); `import solo_ncp` imports it
once solo-learn's `solo.methods` is imported (solo_ncp/_registration.py).

The classes come from the adapter of the installed host (`solo_ncp._host`): `ncp.py` for
solo-learn 1.0.2, `ncp_main.py` for solo-learn main; both wrap the same `stage2_hooks` and
`stage2_options`.
The backbones are the WideResNets of `solo_ncp.models.backbones.WIDE_RESNETS`."""
import functools
from typing import Callable, Dict, Tuple, Type

from torch import nn

from solo_ncp._host import current_host, import_solo
from solo_ncp.models.backbones import (
    WIDE_RESNETS,
    BackboneSpec,
    build_backbone,
    build_named,
    features_dim,
)


def solo_ncp_methods() -> Dict[str, Type]:
    """The method classes solo-ncp adds, by their registry name."""
    import_solo()
    if current_host().is_main:
        from solo_ncp.methods.ncp_main import NCP, DeACL
    else:
        from solo_ncp.methods.ncp import NCP, DeACL

    return {"ncp": NCP, "deacl": DeACL}


def _build_for_main(name: str, method: str, **kwargs) -> nn.Module:
    """solo-learn main's backbone signature, `(method, **backbone.kwargs)`."""
    return build_named(name, **kwargs)


def _init_102(original: Callable) -> Callable:
    """solo-learn 1.0.2's `BaseMethod.__init__`, taking the names of `WIDE_RESNETS` as `encoder`,
    and with a k-NN (`knn_eval`) that works beside the installed torchmetrics (`AccumulatingKNN`,
    same k and distance; 1.0.2's own failed at the first training step, under every method).

    1.0.2 has no backbone registry (it picks encoders from a dict literal inside `__init__`), so
    for these names the method is built around a throwaway resnet18 whose encoder, width and
    online classifier are then replaced, before the subclass's own `__init__` goes on (SimCLR
    builds its projector on `features_dim` then). Other names run `original` unchanged."""

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        name = kwargs.get("encoder")
        if name in WIDE_RESNETS:
            _init_wide_resnet_102(original, self, name, *args, **kwargs)
        else:
            original(self, *args, **kwargs)
        _accumulating_knn(self)

    __init__.solo_ncp_backbones = tuple(WIDE_RESNETS)
    return __init__


def _init_wide_resnet_102(original: Callable, method, name: str, *args, **kwargs) -> None:
    """solo-learn 1.0.2's `BaseMethod.__init__` (`original`) of `method` around a throwaway resnet18,
    whose encoder, width and online classifier are then the WideResNet `name`'s (see `_init_102`)."""
    from solo.methods.base import BaseMomentumMethod

    if isinstance(method, BaseMomentumMethod):
        raise ValueError(
            f"{type(method).__name__} is a momentum method, and solo-learn 1.0.2 rebuilds its "
            f"momentum encoder as a torchvision ResNet for every name holding 'resnet': train "
            f"{name} with a method without momentum encoder (simclr) or on solo-learn main"
        )
    spec = BackboneSpec.from_kwargs(name, kwargs["backbone_args"])
    original(method, *args, **{**kwargs, "encoder": "resnet18", "backbone_args": {}})
    method.encoder_name, method.backbone_args = name, kwargs["backbone_args"]
    method.base_model = functools.partial(build_named, name)
    method.encoder = build_backbone(spec)
    method.features_dim = features_dim(method.encoder)
    method.classifier = nn.Linear(method.features_dim, method.num_classes)


def _accumulating_knn(method) -> None:
    """Replaces a solo-learn 1.0.2 method's k-NN, where `knn_eval` built one, by an
    `AccumulatingKNN` of the same k and distance."""
    if method.knn_eval:
        from solo_ncp.methods.knn_102 import AccumulatingKNN

        method.knn = AccumulatingKNN(k=method.knn.k, distance_fx=method.knn.distance_fx)


def _momentum_update_102(original: Callable) -> Callable:
    """solo-learn 1.0.2's `BaseMomentumMethod.on_train_batch_end` (the momentum encoder's update),
    taking the call Lightning 1.9 makes: (outputs, batch, batch_idx), without the `dataloader_idx`
    1.0.2 requires, which failed every momentum method (BYOL, MoCo v2+, ...) at its first step."""

    @functools.wraps(original)
    def on_train_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        return original(self, outputs, batch, batch_idx, dataloader_idx)

    return on_train_batch_end


def register_backbones() -> Tuple[str, ...]:
    """Makes the installed solo-learn build solo-ncp's backbones by name (`backbone.name`, 1.0.2's
    `encoder`); returns their names. solo-learn main: entries of `BaseMethod._BACKBONES`, its
    registry. 1.0.2: entries of `BaseMethod._SUPPORTED_ENCODERS` (its assert and `--encoder`
    choices) and a `BaseMethod.__init__` that builds them (`_init_102`, which also gives any method
    a k-NN that works beside the installed torchmetrics); there `BaseMomentumMethod`'s momentum
    update also takes Lightning 1.9's call (`_momentum_update_102`). Idempotent."""
    host = current_host()
    base = import_solo("solo.methods.base").BaseMethod
    if host.is_main:
        base._BACKBONES.update({n: functools.partial(_build_for_main, n) for n in WIDE_RESNETS})
        return tuple(WIDE_RESNETS)
    base._SUPPORTED_ENCODERS.extend(n for n in WIDE_RESNETS if n not in base._SUPPORTED_ENCODERS)
    if not hasattr(base.__init__, "solo_ncp_backbones"):
        base.__init__ = _init_102(base.__init__)
        momentum = import_solo("solo.methods.base").BaseMomentumMethod
        momentum.on_train_batch_end = _momentum_update_102(momentum.on_train_batch_end)
    return tuple(WIDE_RESNETS)


def register_methods() -> Dict[str, Type]:
    """Adds solo-ncp's methods to `solo.methods.METHODS` and its backbones to solo-learn's
    BaseMethod (`register_backbones`); returns the methods it added."""
    register_backbones()
    methods = solo_ncp_methods()
    import_solo().METHODS.update(methods)
    return methods


register_methods()
