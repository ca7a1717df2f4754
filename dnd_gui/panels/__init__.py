"""The window's panels and pages: slide list, inspector, gallery, predictions, jobs, curves, results, start screen."""
