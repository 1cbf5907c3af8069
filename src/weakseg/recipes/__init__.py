"""Recipes on top of the engine: the demo and the paper's experiments.

- :mod:`weakseg.recipes.demo`: ``weakseg demo``, four small U-Nets (pCE, + dense CRF, + kernel
  cut, full masks) trained with :func:`weakseg.engine.train.build` and
  :func:`~weakseg.engine.train.fit` on synthetic data, and compared.
- :mod:`weakseg.recipes.experiments`: ``weakseg experiment``, the paper-table runners (a YAML
  file of runs, each a ``weakseg train`` command, then ``weakseg eval``, then a table).

Import the modules themselves (``from weakseg.recipes.demo import run_demo``): this package
imports nothing.
"""
