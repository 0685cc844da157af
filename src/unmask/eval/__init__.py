"""Evaluation: metrics per modality and task."""
