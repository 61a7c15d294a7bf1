"""Evaluation components: benchmark items (TSV/JSONL and held-out pretext tasks), answer extraction and
scoring, the report. May import ``dataset``, ``tasks``, ``store`` and below; the workflow is ``recipes.evaluate``.
"""
