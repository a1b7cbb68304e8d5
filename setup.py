"""asgid's build: the per-request hot path compiled with mypyc, where it can be.

The project's metadata is in pyproject.toml; this file only adds the
extension modules. ``HOT_PATH`` is what every HTTP request runs through:
compiled, asgid's own share of a request takes about a third fewer
instructions (bench/README.md). The .py files ship beside the compiled
modules and behave the same; the compiled ones are imported first.

- ``pip install .`` compiles them (mypy, which brings mypyc, is a build
  requirement) and needs a C compiler. Without one, or when the compilation
  fails, the build says so and goes on in pure Python.
- ``pip install -e .`` does not: an edit to a source must take effect without
  a rebuild. ``scripts/compile`` builds the compiled modules in place (what
  scripts/check runs the process tests against) and removes them again.
- ``ASGID_PURE_PYTHON=1`` skips the compilation.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HOT_PATH = [
    "asgid/worker/_h1.py",
    "asgid/worker/_state.py",
    "asgid/worker/_cycle.py",
    "asgid/worker/_transport.py",
    "asgid/worker/_protocol.py",
    "asgid/worker/_h2stream.py",
    "asgid/worker/_h2.py",
]


def _pure_python(reason: str) -> None:
    print(
        f"warning: asgid's hot path was not compiled ({reason}); installing it in pure "
        "Python, which works the same with more CPU per request",
        file=sys.stderr,
    )


class OptionalBuildExt(build_ext):
    """Compile the hot path, or leave asgid in pure Python, saying why."""

    def run(self) -> None:
        if getattr(self, "editable_mode", False):
            return  # sources that are edited must be the ones that run
        try:
            super().run()
        except Exception as exc:  # any failure: the pure-Python package works
            for ext in self.extensions:  # all or none: a half-built group does not import
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            _pure_python(str(exc))


def ext_modules() -> list[Any]:
    if os.environ.get("ASGID_PURE_PYTHON"):
        return []
    # pip runs this file for the metadata, and for an editable install: only a
    # build of the modules themselves needs mypyc's half a minute.
    if not {"bdist_wheel", "build_ext", "build", "install"} & set(sys.argv):
        return []
    try:
        from mypyc.build import mypycify

        # Modules outside the hot path are read for their types only: an
        # optional dependency they import (watchfiles, PyYAML) may be missing.
        options = ["--follow-imports=silent"]
        return mypycify(
            options + HOT_PATH, opt_level="3", debug_level="0", group_name="asgid.worker.hot_path"
        )
    except (Exception, SystemExit) as exc:  # mypyc missing, or it refused the sources
        _pure_python(repr(exc))
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
