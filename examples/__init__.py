"""Example tools and data used by ``pipelines.yaml`` (importable as ``examples.tools``)."""
