"""Feature bags with labels: finding and loading bags, the labels CSV, and reproducible splits."""

from .dataset import BagDataset
from .labels import LabelRow, LabelRows, LabelTable, LabelsError, read_label_rows, read_labels
from .splits import Split, check_split, read_split, read_splits_dir, split_from_column, stratified_kfold, write_split
from .store import BagError, bag_info, find_bags, load_bag

__all__ = ["BagDataset", "BagError", "LabelRow", "LabelRows", "LabelTable", "LabelsError", "Split", "bag_info", "check_split", "find_bags",
           "load_bag", "read_label_rows", "read_labels", "read_split", "read_splits_dir", "split_from_column", "stratified_kfold",
           "write_split"]
