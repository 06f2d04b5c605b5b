"""Graph layers: message passing on ``index_add_``/``scatter_reduce`` and sparse matmuls.

Node features are ``(N, F)`` (the node dimension is a spec's batch dimension); the graph
arrives as ``edge_index`` ``(2, E)`` (row 0 sources, row 1 targets) and optional
``edge_attr``/``edge_weight``/``pos``/``batch``. Every submodule's ``__all__`` is re-exported.
"""

from ..._autoload import import_submodules

import_submodules(__name__, __path__, globals())
