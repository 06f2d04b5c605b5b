"""Graph data: batching (:class:`GraphBatch`), built-in data sets and PyTorch Geometric interop.

Every submodule's ``__all__`` is re-exported here.
"""

from .._autoload import import_submodules

import_submodules(__name__, __path__, globals())
