"""The optional C extensions (the always-on heap sampler, the task factory, the request cycle);
the rest is in pyproject.toml.

``optional=True``: where it cannot be built (no compiler, an interpreter without headers, a
platform we do not build for) the install still succeeds and ``/heap`` falls back to
tracemalloc windows, as the index says.
"""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyprof_http._heapsample",
            ["src/pyprof_http/_heapsample.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall"] if sys.platform != "win32" else [],
            libraries=["m"] if sys.platform.startswith("linux") else [],
        ),
        Extension(
            "pyprof_http._taskfactory",
            ["src/pyprof_http/_taskfactory.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall"] if sys.platform != "win32" else [],
        ),
        Extension(
            "pyprof_http._requestcycle",
            ["src/pyprof_http/_requestcycle.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall"] if sys.platform != "win32" else [],
        ),
    ]
)
