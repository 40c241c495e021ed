"""The networks: the project's UNet and its Swin-transformer bottleneck."""
