"""Stage 4: the training engine (loop, step, optimiser, loss, checkpoints, distributed)."""
