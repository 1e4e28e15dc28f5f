"""Model pieces: in-model normalisation, solo-learn-compatible backbones, checkpoint loading."""
from solo_ncp.models.backbones import BackboneSpec, build_backbone, features_dim
from solo_ncp.models.checkpoint import CheckpointError, LoadedEncoder, load_encoder
from solo_ncp.models.normalize import Normalize

__all__ = [
    "BackboneSpec",
    "CheckpointError",
    "LoadedEncoder",
    "Normalize",
    "build_backbone",
    "features_dim",
    "load_encoder",
]
