"""tf_sgd_regimes: how the best learning rate and test performance depend on batch size.

Reproduces Smith, Elsen & De, "On the Generalization Benefit of Noise in Stochastic
Gradient Descent" (ICML 2020) on TensorFlow/Keras, and runs the same study on any workload:

    import tf_sgd_regimes as sgd

    sgd.register_model("linreg", build, task="regression")          # your Keras model
    sgd.register_dataset("houses", lambda: sgd.Dataset.from_arrays(  # your data
        "houses", x_train, y_train, x_test, y_test, task="regression"))
    config = sgd.base_config(task="regression")                      # your grid
    config.model.name, config.data.name = "linreg", "houses"
    result = sgd.run_sweep(config, "runs/houses")                    # records + report
    print(result.report["text"])

The same config in a file with get_config() runs from the command line:
    python -m tf_sgd_regimes.run --config=my_experiment.py --config.sweep.seeds='(0,1,2)'

Names resolve on first use, so `import tf_sgd_regimes` stays cheap (no TensorFlow).
"""

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute), imported on first access.
_PUBLIC = {
    "register_model": ("tf_sgd_regimes.models", "register_model"),
    "register_dataset": ("tf_sgd_regimes.data", "register_dataset"),
    "register_experiment": ("tf_sgd_regimes.experiments", "register_experiment"),
    "register_task": ("tf_sgd_regimes.tasks", "register_task"),
    "Task": ("tf_sgd_regimes.tasks", "Task"),
    "Dataset": ("tf_sgd_regimes.data.base", "Dataset"),
    "StreamedDataset": ("tf_sgd_regimes.data.streamed_dataset", "StreamedDataset"),
    "base_config": ("tf_sgd_regimes.experiments", "base_config"),
    "get_config": ("tf_sgd_regimes.experiments", "resolve_config"),
    "ConfigError": ("tf_sgd_regimes.experiments", "ConfigError"),
    "run_sweep": ("tf_sgd_regimes.sweep.launch", "run_sweep"),
    "SweepResult": ("tf_sgd_regimes.sweep.launch", "SweepResult"),
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'tf_sgd_regimes' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
