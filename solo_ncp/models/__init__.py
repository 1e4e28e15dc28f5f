"""Model pieces: in-model normalisation, solo-learn-compatible backbones, checkpoint loading
(imported on first use: solo_ncp/_lazy.py)."""
from solo_ncp._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "solo_ncp.models.backbones": ("BackboneSpec", "build_backbone", "features_dim"),
    "solo_ncp.models.checkpoint": ("CheckpointError", "LoadedEncoder", "load_encoder"),
    "solo_ncp.models.normalize": ("Normalize",),
})
