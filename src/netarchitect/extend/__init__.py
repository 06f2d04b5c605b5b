"""Extending and fusing models: surgery, LoRA/DoRA, adapters, Net2Net growth, ensembles, soups.

Every submodule's ``__all__`` is re-exported here (``na.extend.apply_lora``).
"""

from .._autoload import import_submodules

import_submodules(__name__, __path__, globals())
