"""The data: reading MRNet, the synthetic phantom in its layout, the slice cache and its resolutions."""
