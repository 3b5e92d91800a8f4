"""The SSD network, its weights (ImageNet VGG-16, converters) and the detector built from a run directory."""
