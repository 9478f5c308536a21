"""AVControl for ComfyUI: composable audio+video control for Lightricks' LTX-2 family.

Importing the pack registers its nodes and model folders and nothing else: torch, ltx-core and the models load
when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.host import register_model_folders

WEB_DIRECTORY = "./web"

register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
