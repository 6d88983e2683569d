"""tf_sgd_regimes: how the best learning rate and test performance depend on batch size.

Reproduces Smith, Elsen & De, "On the Generalization Benefit of Noise in Stochastic
Gradient Descent" (ICML 2020) on TensorFlow/Keras, and runs the same study on any workload.
"""

__version__ = "0.1.0"
