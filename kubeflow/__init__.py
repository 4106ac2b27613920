"""Kubeflow Pipelines v2 and Vertex AI: compile (compiler.py), target differences (targets.py),
the task entrypoint (entrypoint.py), submit and schedule (client.py), and the image (Dockerfile)."""
