"""Build hook for the C runtime: pyproject.toml holds the project metadata; this file only adds
the cffi extension ``bumpconv._native`` (native/build_ffi.py), so that ``pip install .`` and
``pip install -e .`` compile it with no manual step."""

from setuptools import setup

setup(cffi_modules=["native/build_ffi.py:ffibuilder"])
