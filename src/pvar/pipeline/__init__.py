"""Pipeline stages: one module per verb, each a documented config plus a ``run`` function."""
