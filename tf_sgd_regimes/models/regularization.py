"""Which weights the engine's L2 term (0.5 * l2 * sum w^2) covers: "kernels" or "all"."""

import keras

# Variable names (Keras 3 `variable.name`) that count as kernels for weight decay.
KERNEL_NAMES = frozenset({"kernel", "recurrent_kernel", "depthwise_kernel", "embeddings"})

SCOPES = ("kernels", "all")

# The scope the paper's configs (configs/) set for each model, and why.
#   wide_resnet (batch_norm): "all". Zagoruyko & Komodakis' reference training decays every
#     parameter (BN gammas/betas included) with 5e-4; the paper says its WRN runs reach
#     their accuracies. With scale-invariant layers the gammas barely matter either way.
#   wide_resnet (skipinit): "all". This is "Regularized SkipInit": the SkipInit scalars and
#     the biases are under the L2 term too, so nothing is left unregularized.
#   resnet50: "kernels". Goyal et al. (2017) do not decay the batch-norm gammas and betas.
#   lstm_lm: "kernels". Zaremba et al. use no L2 at all (l2 = 0), so the scope is moot.
#   autoencoder: "kernels". The paper's 1e-5 L2 is the usual weight decay on the weights.


def regularized_weights(model: keras.Model, scope: str) -> list:
    """The trainable variables the L2 term covers.

    Args:
      model: a registry model.
      scope: "kernels" (conv/dense/recurrent kernels and embeddings) or "all" (every
        trainable variable: also biases, batch-norm gammas/betas and SkipInit scalars).

    Returns:
      A list of variables, in the model's trainable_weights order.
    """
    if scope == "all":
        return list(model.trainable_weights)
    if scope == "kernels":
        return [v for v in model.trainable_weights if v.name in KERNEL_NAMES]
    raise ValueError(f"unknown L2 scope {scope!r} (config.l2_scope); known: {list(SCOPES)}")
