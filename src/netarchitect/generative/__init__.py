"""Generative models' arithmetic: diffusion noise schedules, objectives and samplers, VAE and
GAN losses and training steps, and offline sample-quality metrics (digits-FD, MMD).

The networks themselves are registered models (``models/``); every submodule's ``__all__``
is re-exported here (``na.generative.ddim_sample``).
"""

from .._autoload import import_submodules

import_submodules(__name__, __path__, globals())
