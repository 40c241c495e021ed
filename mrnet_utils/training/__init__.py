"""Training: the loop, its batches, one or many processes, the log and checkpoints."""
