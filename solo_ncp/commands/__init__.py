"""Sub-commands of the `solo-ncp` console script; each module has `add_arguments` and `run`."""
