"""Training: the loop, the cell comparison, the training curves."""
