"""Dataset sources, one module each, all returning `ssd.records.DetectionDataset`.

- `datasets.voc`: Pascal VOC devkit folders or any VOC-format folder (`load_voc`).
- `datasets.synthetic`: the generated coloured-shapes set in VOC format (`generate_synthetic_voc`,
  `load_synthetic`).

This folder is used from the checkout (it is not installed), so it never shadows the PyPI
package called `datasets`.
"""
