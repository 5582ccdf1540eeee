"""The public import paths: one name, one thing."""

from __future__ import annotations

import importlib
import types


def test_the_decorator_and_the_modules_have_distinct_names() -> None:
    import pipeline

    spec_mod = importlib.import_module("pipeline.spec")
    context_mod = importlib.import_module("pipeline.context")
    assert isinstance(spec_mod, types.ModuleType) and isinstance(context_mod, types.ModuleType)
    assert pipeline.stage is spec_mod.stage and callable(pipeline.stage)
    assert pipeline.StageContext is context_mod.StageContext
    assert isinstance(pipeline.spec, types.ModuleType)  # importing it changed no public name
    assert pipeline.stage is spec_mod.stage
