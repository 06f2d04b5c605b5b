"""Interpretable-by-design helpers: segmentation losses, ProtoPNet's prototype projection
and explanations, concept-bottleneck concepts and interventions, the report's sections.
The heads' extra loss terms join every trainer through ``netarchitect.losses.auxiliary_loss``.

Every submodule's ``__all__`` is re-exported here (``na.interpret.project_prototypes``).
"""

from .._autoload import import_submodules

import_submodules(__name__, __path__, globals())
