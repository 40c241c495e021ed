"""Evaluation: image metrics, exam-level statistics, result tables and figures."""
