"""The BMD networks: backbones and the multi-ROI models, the dataset and augmentation, the torchrun entry point."""
