"""The training wizard, one module per page: data → preprocessing → model → review, then launch.

Every check and decision is the engine's (``check_data``, ``Project.apply_data``, the model registry's titles,
``list_devices``, the extractor registry's weights lookup); the pages only show what it says.
"""

from dnd_engine.features.registry import default_extractor

from .data_page import DataPage
from .model_page import ModelPage
from .preprocess_page import PreprocessPage
from .review_page import ReviewPage
from .widgets import PAGE_DATA, PAGE_MODEL, PAGE_PREPROCESS, PAGE_REVIEW, default_run_name, located_weights
from .wizard import TrainingWizard

__all__ = ["DataPage", "ModelPage", "PAGE_DATA", "PAGE_MODEL", "PAGE_PREPROCESS", "PAGE_REVIEW", "PreprocessPage",
           "ReviewPage", "TrainingWizard", "default_extractor", "default_run_name", "located_weights"]
