"""Reusable blocks and the factories that resolve layer types by name.

Every module in this package is imported here (so its ``@register_block``
decorators run) and its ``__all__`` is re-exported.
"""

from .._autoload import import_submodules

import_submodules(__name__, __path__, globals())
