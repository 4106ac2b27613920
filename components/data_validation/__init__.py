"""Data validation that knows images: a per-dataset schema, a gate that stops a bad run, and
a visual data report (see component.py)."""
