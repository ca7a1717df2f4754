"""Patch feature extractors (a registry; weights found locally, never downloaded) and streaming extraction."""

from .registry import ExtractorSpec, EXTRACTORS, build_extractor, list_extractors, get_spec
from .extract import ExtractConfig, SlideResult, extract_slide, extract_cohort, feature_dir_for

__all__ = ["ExtractorSpec", "EXTRACTORS", "build_extractor", "list_extractors", "get_spec",
           "ExtractConfig", "SlideResult", "extract_slide", "extract_cohort", "feature_dir_for"]
