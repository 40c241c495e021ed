"""The study harness the notebooks call: layout, data, training, super-resolution and generation experiments."""
