"""The checkout's root is the ComfyUI pack, not a test package.

ComfyUI imports the root ``__init__.py`` as a package by path, and it imports the nodes relatively. pytest sees
that ``__init__.py`` and makes the root a test package whose setup imports it under the folder's name; a clone
named ``comfyui-avcontrol``, ``ci-clone`` or ``wt-ci`` is not a Python name, so that import fails and every test
errors at setup (a clone named ``main`` passes). The pack defines no ``setup_module``, so that setup is skipped.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def _skip_setup() -> None:
    """The root package's setup would only look for a setup_module in the pack's __init__.py: there is none."""


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        for node in item.listchain():
            if isinstance(node, pytest.Package) and Path(node.path).resolve() == ROOT:
                node.setup = _skip_setup
                return
