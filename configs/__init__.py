"""Experiment configs: one module per experiment family, each with get_config()."""
