"""Networks: the backbone registry, pretrained weights, building and freezing, saved models."""
