"""Feature bags with labels: finding and loading bags, the labels CSV, and reproducible splits.

Names load on first use (PEP 562): reading a labels CSV or a project manifest must not import torch and h5py,
which only the bag store and the dataset need.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_WHERE = {
    "BagDataset": "dataset",
    "LabelRow": "labels", "LabelRows": "labels", "LabelTable": "labels", "LabelsError": "labels",
    "read_label_rows": "labels", "read_labels": "labels",
    "Split": "splits", "check_split": "splits", "read_split": "splits", "read_splits_dir": "splits",
    "split_from_column": "splits", "stratified_kfold": "splits", "write_split": "splits",
    "BagError": "store", "bag_info": "store", "find_bags": "store", "load_bag": "store",
}

__all__ = ["BagDataset", "BagError", "LabelRow", "LabelRows", "LabelTable", "LabelsError", "Split", "bag_info",
           "check_split", "find_bags", "load_bag", "read_label_rows", "read_labels", "read_split", "read_splits_dir",
           "split_from_column", "stratified_kfold", "write_split"]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
