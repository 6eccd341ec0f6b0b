"""Tests for the backbone registry's layout (tlcore.model.registry): the rows live in
`backbone_table`, the record type in `backbone_spec`, and every name stays importable from
the registry without Keras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tlcore.model import backbone_spec, backbone_table, registry

REPO = Path(__file__).resolve().parent.parent


def test_the_registry_holds_every_row_of_the_table_once_in_order():
    names = [spec.name for spec in backbone_table.SPECS]
    assert len(names) == len(set(names))
    assert list(registry.BACKBONES) == names
    assert all(registry.BACKBONES[spec.name] is spec for spec in backbone_table.SPECS)


def test_the_spec_names_are_importable_from_the_registry():
    for name in (
        "BackboneSpec",
        "KerasApp",
        "KerasPreprocess",
        "OwnNetwork",
        "PREPROCESS_MODES",
        "IMAGENET_MEAN_RGB",
        "IMAGENET_STD_RGB",
        "CAFFE_MEAN_BGR",
        "SPEED_REFERENCE_SIZE",
        "MOBILENET_V1_ALPHA_TEXT",
    ):
        assert getattr(registry, name) is getattr(backbone_spec, name)
    assert sorted(registry.__all__) == sorted(set(registry.__all__))
    assert all(hasattr(registry, name) for name in registry.__all__)


def test_reading_the_registry_imports_no_keras():
    script = (
        "import sys; from tlcore.model import registry; "
        "spec = registry.get_backbone('MobileNetV2'); spec.weights_filename(); "
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "[]"
