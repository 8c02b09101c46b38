"""The pipelines, as Python: the conversion pipeline and an example that trains on its output."""
