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


def test_every_exception_class_the_package_defines_is_under_the_root() -> None:
    """The tree drawn in pipeline/errors.py holds every exception class of the package."""
    import inspect
    import pkgutil

    import pipeline
    import stages
    from pipeline.errors import PipelineError

    outside = []
    drawn = importlib.import_module("pipeline.errors").__doc__ or ""
    undrawn = []
    for pkg in (pipeline, stages):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if not (
                    inspect.isclass(obj)
                    and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                ):
                    continue
                if name.startswith("_"):
                    continue  # a private signal that never leaves its module
                if not issubclass(obj, PipelineError):
                    outside.append(f"{module.__name__}.{name}")
                elif f" {name} " not in drawn and name != "PipelineError":
                    undrawn.append(f"{module.__name__}.{name}")
    assert outside == []
    assert undrawn == []


def test_resolve_and_run_stage_raise_from_the_tree() -> None:
    import pytest

    from pipeline.errors import ConfigError, UnknownStageType
    from pipeline.spec import resolve
    from pipeline.testing import run_stage

    with pytest.raises(UnknownStageType, match="unknown stage type 'resampel'") as e:
        resolve("resampel")
    assert isinstance(e.value, ConfigError) and isinstance(e.value, LookupError)
    with pytest.raises(ConfigError, match="stage 'resample': stage type 'resample' has no"):
        run_stage("resample", [], rat=8000)
