"""The steps of ``pvar run``, grouped by what they do; ``pvar.experiment.runner.TABLE`` orders them."""
