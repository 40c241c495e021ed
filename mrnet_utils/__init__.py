"""Cascaded super-resolution diffusion for 2D knee MRI (MRNet): the library every notebook imports."""

__version__ = "0.1.0"
