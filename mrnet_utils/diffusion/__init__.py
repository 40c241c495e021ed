"""The diffusion process: noise schedules, the training loss, super-resolution conditioning, samplers."""
