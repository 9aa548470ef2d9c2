"""dgbench: a benchmark harness for domain generalization in 3D biomedical segmentation."""

__version__ = "0.1.0"
