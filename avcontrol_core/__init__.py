"""AVControl core: LTX-2 audio+video generation and control on ltx-core, usable without ComfyUI.

Importing this package is cheap: heavy modules (torch, ltx-core) load when a submodule is imported.
"""

__version__ = "0.1.0"
