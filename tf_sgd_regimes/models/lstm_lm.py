"""Word-level LSTM language model (Zaremba et al. 2014) whose hidden state carries across batches.

Embedding -> dropout -> [LSTM -> dropout] x num_layers -> dense softmax (untied). Every
parameter, biases included, starts U[-init_scale, init_scale] and the forget-gate bias gets
no +1 (as in Zaremba et al.'s setup). Dropout acts only on the non-recurrent connections: the
embedding output, between LSTM layers and before the softmax. The "medium" model (650 units,
2 layers, 10k words, dropout 0.5, init 0.05) has 19.78M parameters.

Truncated back-propagation through time with a carried state: the final (h, c) of each
layer after one window of tokens is the initial state of the next window. The state lives in
non-trainable variables of shape [batch_size, units] (the per-replica batch), one set for
training calls (`training=True`, updated on every call) and one for evaluation calls
(`training=False`, of shape [eval_batch_size, units]), so evaluating the test stream, which
has its own batch layout, never disturbs the training stream's state. `reset_state(...)`
zeroes either set (the engine does this at the start of each pass over a stream), and
`call_with_state` is the stateless path: explicit initial state in, (logits, final state) out.
Under tf.distribute the state variables are sync-on-read, so each replica keeps its own.
Gradient clipping (norm 5 in the paper) is the engine's job.

keras.layers.LSTM picks the fused cuDNN kernel on a GPU, as its defaults (tanh, sigmoid
recurrent activation, no recurrent dropout, no unrolling) are kept.
"""

from typing import List, Optional, Tuple

import keras
import tensorflow as tf

from tf_sgd_regimes.models import layers as model_layers

TINY = dict(
    input_shape=(5,),
    num_outputs=11,
    fields=dict(embedding_size=6, units=7, num_layers=2, batch_size=3, dropout_rate=0.1),
)

State = List[Tuple[tf.Tensor, tf.Tensor]]


class LanguageModel(keras.Model):
    """Embedding, stacked LSTMs and an untied softmax; logits [B, T, vocab_size]."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        units: int,
        num_layers: int,
        dropout_rate: float,
        init_scale: float,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        **kwargs,
    ):
        super().__init__(**kwargs)
        seeds = model_layers.SeedSequence(seed)

        def uniform():
            return keras.initializers.RandomUniform(-init_scale, init_scale, seed=next(seeds))

        self.vocab_size = vocab_size
        self.units = units
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.embedding = keras.layers.Embedding(
            vocab_size, embedding_size, embeddings_initializer=uniform(), name="embedding"
        )
        self.lstms = [
            keras.layers.LSTM(
                units,
                return_sequences=True,
                return_state=True,
                kernel_initializer=uniform(),
                recurrent_initializer=uniform(),
                bias_initializer=uniform(),
                unit_forget_bias=False,
                name=f"lstm_{i}",
            )
            for i in range(num_layers)
        ]
        self.dropouts = [
            model_layers.ReplicaDropout(dropout_rate, seed=next(seeds), name=f"dropout_{i}")
            for i in range(num_layers + 1)
        ]
        self.softmax = keras.layers.Dense(
            vocab_size, kernel_initializer=uniform(), bias_initializer=uniform(), name="softmax"
        )
        self.train_state = self._state_variables(batch_size, "train")
        self.eval_state = self._state_variables(eval_batch_size, "eval")

    def _state_variables(self, batch_size, prefix):
        def variable(name):
            # Sync-on-read: each replica owns its copy (its own slice of the streams).
            state = keras.Variable(
                initializer="zeros", shape=(batch_size, self.units), trainable=False,
                name=name, synchronization="on_read", aggregation="only_first_replica",
            )
            self._track_variable(state)
            return state

        return [
            (variable(f"{prefix}_h{i}"), variable(f"{prefix}_c{i}")) for i in range(len(self.lstms))
        ]

    def initial_state(self, batch_size: int) -> State:
        """Zero (h, c) per layer for `call_with_state`."""
        zeros = tf.zeros([batch_size, self.units])
        return [(zeros, zeros) for _ in self.lstms]

    def call_with_state(self, tokens, state: State, training: bool = False):
        """Stateless forward pass: returns (logits [B, T, V], final state)."""
        x = self.dropouts[0](self.embedding(tokens), training=training)
        final_state = []
        for lstm, dropout, (h, c) in zip(self.lstms, self.dropouts[1:], state):
            x, h, c = lstm(x, initial_state=[h, c], training=training)
            x = dropout(x, training=training)
            final_state.append((h, c))
        return self.softmax(x), final_state

    def call(self, tokens, training=False):
        variables = self.train_state if training else self.eval_state
        expected = self.batch_size if training else self.eval_batch_size
        if tokens.shape[0] is not None and tokens.shape[0] != expected:
            which = "batch_size" if training else "eval_batch_size"
            raise ValueError(
                f"LSTM state holds {expected} streams but the batch has {tokens.shape[0]}; "
                f"set config.model.{which} to the per-replica batch"
            )
        # The carried state is a constant for this window (truncated BPTT).
        state = [(tf.stop_gradient(h.value), tf.stop_gradient(c.value)) for h, c in variables]
        logits, final_state = self.call_with_state(tokens, state, training=training)
        for (h_var, c_var), (h, c) in zip(variables, final_state):
            h_var.assign(h)
            c_var.assign(c)
        return logits

    def reset_state(self, which: str = "all"):
        """Zeroes the carried state: "train", "eval" or "all"."""
        if which not in ("train", "eval", "all"):
            raise ValueError(f"reset_state(which) takes 'train', 'eval' or 'all', got {which!r}")
        chosen = []
        if which in ("train", "all"):
            chosen += self.train_state
        if which in ("eval", "all"):
            chosen += self.eval_state
        for h, c in chosen:
            h.assign(tf.zeros_like(h))
            c.assign(tf.zeros_like(c))


def build(
    input_shape: tuple,
    num_outputs: int,
    *,
    seed: int,
    batch_size: Optional[int] = None,
    eval_batch_size: Optional[int] = None,
    embedding_size: int = 650,
    units: int = 650,
    num_layers: int = 2,
    dropout_rate: float = 0.5,
    init_scale: float = 0.05,
) -> LanguageModel:
    """The language model, built; defaults are Zaremba et al.'s medium model.

    Args:
      input_shape: (T,), the unroll length (35 in the paper); calls accept any T.
      num_outputs: vocabulary size (10,000 for PTB).
      seed: initialisation and dropout seed.
      batch_size: per-replica training batch = number of parallel streams (required).
      eval_batch_size: streams of the evaluation layout; None = batch_size.
      embedding_size, units, num_layers: model sizes.
      dropout_rate: dropout on non-recurrent connections.
      init_scale: every weight starts U[-init_scale, init_scale].
    """
    if batch_size is None or int(batch_size) < 1:
        raise ValueError(
            "the LSTM carries its state per stream: set config.model.batch_size to the "
            f"per-replica batch size (got {batch_size!r})"
        )
    model = LanguageModel(
        vocab_size=int(num_outputs),
        embedding_size=embedding_size,
        units=units,
        num_layers=num_layers,
        dropout_rate=dropout_rate,
        init_scale=init_scale,
        batch_size=int(batch_size),
        eval_batch_size=int(eval_batch_size or batch_size),
        seed=seed,
        name="lstm_lm",
    )
    # Build the weights through the stateless path, so the carried state stays at zero.
    tokens = tf.zeros([1] + list(input_shape), tf.int32)
    model.call_with_state(tokens, model.initial_state(1))
    model.built = True
    return model


def parameter_count(vocab_size=10_000, embedding_size=650, units=650, num_layers=2) -> int:
    """Trainable parameters of `build(...)` from layer shapes (4 gates, one bias each)."""
    total = vocab_size * embedding_size + units * vocab_size + vocab_size
    inputs = embedding_size
    for _ in range(num_layers):
        total += 4 * (inputs * units + units * units + units)
        inputs = units
    return total
