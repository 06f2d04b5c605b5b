"""Registered model families (one module per family).

Every module in this package is imported here (so its ``@register_model``
decorators run) and its ``__all__`` is re-exported.
"""

from .._autoload import import_submodules

import_submodules(__name__, __path__, globals())
