"""The defaults of ``netarchitect design`` (a module of their own so the CLI can show them
without importing the search)."""

#: Trained trials of a default run.
DEFAULT_TRIALS = 70
#: Parameter budget of a default run.
DEFAULT_MAX_PARAMS = 50_000
