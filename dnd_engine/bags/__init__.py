"""Feature bags with labels: finding and loading bags, the labels CSV, and reproducible splits."""

from .dataset import BagDataset
from .labels import LabelTable, LabelsError, read_labels
from .splits import Split, check_split, read_split, read_splits_dir, split_from_column, stratified_kfold, write_split
from .store import BagError, bag_info, find_bags, load_bag

__all__ = ["BagDataset", "BagError", "LabelTable", "LabelsError", "Split", "bag_info", "check_split", "find_bags",
           "load_bag", "read_labels", "read_split", "read_splits_dir", "split_from_column", "stratified_kfold",
           "write_split"]
