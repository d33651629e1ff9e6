"""The model: cells and the network, everything a layer computes, checkpoints, sampling."""
