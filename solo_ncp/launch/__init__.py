"""Lightning launchers for solo-learn methods: trainer, checkpoints, resume, data loaders."""
