"""The compiled kernels of the hot path, as C extensions beside their pure-Python twins.

Everything else about the package is in pyproject.toml. Each kernel here has a pure-Python
fallback that computes the same bytes, so a machine without a C compiler still installs a working
package: the build warns and goes on without the kernel (``PIPELINE_REQUIRE_EXTENSIONS=1`` makes
a failed build an error instead, as the wheel builds and CI want). ``PIPELINE_PURE_PYTHON=1`` at
run time ignores the built kernels (see ``pipeline/native.py``).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: (module, C source); pipeline/native.py lists the same modules.
KERNELS = [
    ("pipeline._cframes", "pipeline/_cframes.c"),
    ("stages._cresample", "stages/_cresample.c"),
    ("stages._cg711", "stages/_cg711.c"),
    ("stages.vad._cvad", "stages/vad/_cvad.c"),
    ("stages.realtime.wire._cwire", "stages/realtime/wire/_cwire.c"),
]
REQUIRE = os.environ.get("PIPELINE_REQUIRE_EXTENSIONS", "") not in ("", "0")
# C99, no fast-math: the kernels' floating-point results are part of their contract
ARGS = [] if sys.platform == "win32" else ["-O3", "-std=c99", "-ffp-contract=off"]


class OptionalBuildExt(build_ext):
    """build_ext that warns and goes on when a kernel does not compile (the fallback runs)."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            if REQUIRE:
                raise
            print(
                f"warning: {ext.name} was not compiled ({exc}); the pure-Python fallback will "
                "run instead (install a C compiler and reinstall for the faster hot path)",
                file=sys.stderr,
            )


setup(
    ext_modules=[Extension(name, [src], extra_compile_args=ARGS) for name, src in KERNELS],
    cmdclass={"build_ext": OptionalBuildExt},
)
