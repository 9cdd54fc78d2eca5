"""Internals of :mod:`pvar.pipeline.train`: pairs loading, the reference log-prob cache, TRL trainer subclasses.

Heavy libraries (torch, transformers, trl, peft, datasets) are imported inside functions only.
"""
