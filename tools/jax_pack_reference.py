"""The demo pack in plain JAX: jax.vmap over members, jax.lax.scan over steps, jax.jit.

Run by tools/benchmark_jax_pack.py with the Python of a separate venv that has JAX (JAX is
not a dependency of this project):

    python3 -m venv /work/venvs/jax && /work/venvs/jax/bin/pip install jax numpy
    /work/venvs/jax/bin/python tools/jax_pack_reference.py IN.npz OUT.npz

IN.npz holds the problem exactly as the engine sees it: the training and test sets, every
member's initial weights (w0, b0, w1, b1, ...: a ReLU MLP with a linear output), learning
rate and momentum, the schedule factor of every step and every member's training-set
indices for every step (its own data order). Each step is the paper's update
a <- m a + g ; w <- w - lr * factor * a on the mean softmax cross-entropy of the batch.
The steps run in jitted chunks of `steps_per_call` (compiled ahead of time, outside the
timing); OUT.npz returns the training seconds and each member's test accuracy.

With a third argument `track`, each step also does what the engine's step does beyond the
update: it keeps every member's loss (summed over the chunk) and the first step at which
it was non-finite or above the divergence bound, as `train_pack` reads them after a chunk.
That is the like-for-like variant; without it, the plain pack the issue set as the bar.
With `unroll=N`, jax.lax.scan runs N steps per loop iteration (its `unroll` argument), as
the engine's XLA loop does (config.train.unroll_steps): not the plain pack, but what a
JAX user tuning the same knob would get.
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


DIVERGENCE_LOSS = 1e3  # config.train.divergence_loss of the demo (configs/common.py)


def main(path_in, path_out, track=False, unroll=1):
    problem = dict(np.load(path_in))
    layers = int(problem["layers"])
    params = [jnp.asarray(problem[f"w{i}"]) for i in range(layers)] + \
             [jnp.asarray(problem[f"b{i}"]) for i in range(layers)]
    train_x, train_y = jnp.asarray(problem["train_x"]), jnp.asarray(problem["train_y"])
    lrs, momenta = jnp.asarray(problem["lrs"]), jnp.asarray(problem["momenta"])
    factors = np.asarray(problem["factors"], np.float32)
    indices = np.asarray(problem["indices"], np.int32)  # [K, steps, B]
    steps_per_call = int(problem["steps_per_call"])
    steps = factors.shape[0]

    def forward(member, x):
        weights, biases = member[:layers], member[layers:]
        h = x
        for i in range(layers):
            h = h @ weights[i] + biases[i]
            if i < layers - 1:
                h = jax.nn.relu(h)
        return h

    def loss(member, x, y):
        logits = forward(member, x)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1)
                        - jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0])

    def member_step(member, accumulator, index, lr, momentum):
        value, grads = jax.value_and_grad(loss)(member, train_x[index], train_y[index])
        accumulator = [momentum * a + g for a, g in zip(accumulator, grads)]
        member = [w - lr * a for w, a in zip(member, accumulator)]
        return member, accumulator, value

    def chunk(state, chunk_indices, chunk_factors):
        def body(carry, inputs):
            index, factor = inputs  # [K, B], scalar
            member, accumulator, *books = carry
            member, accumulator, losses = jax.vmap(member_step)(
                member, accumulator, index, lrs * factor, momenta)
            if not track:  # the plain pack: the loss values are dead code
                return (member, accumulator), None
            # The engine's bookkeeping: loss sums and the first diverged step.
            step, loss_sum, diverged_at = books
            finite = jnp.isfinite(losses)
            bad = ~finite | (losses > DIVERGENCE_LOSS)
            diverged_at = jnp.where(bad & (diverged_at < 0), step, diverged_at)
            loss_sum = loss_sum + jnp.where(finite, losses, 0.0)
            return (member, accumulator, step + 1, loss_sum, diverged_at), None
        state, _ = jax.lax.scan(body, state,
                                (jnp.swapaxes(chunk_indices, 0, 1), chunk_factors),
                                unroll=unroll)
        return state

    members = lrs.shape[0]
    state = (params, [jnp.zeros_like(p) for p in params])
    if track:
        state += (jnp.int32(0), jnp.zeros([members], jnp.float32),
                  jnp.full([members], -1, jnp.int32))
    compiled = {}
    bounds = [(s, min(s + steps_per_call, steps)) for s in range(0, steps, steps_per_call)]
    for start, stop in bounds:  # ahead-of-time compilation, outside the timing
        length = stop - start
        if length not in compiled:
            compiled[length] = jax.jit(chunk).lower(
                state, jnp.asarray(indices[:, start:stop]),
                jnp.asarray(factors[start:stop])).compile()
    chunks = [(jnp.asarray(indices[:, a:b]), jnp.asarray(factors[a:b])) for a, b in bounds]
    jax.block_until_ready(chunks)
    began = time.perf_counter()
    for chunk_indices, chunk_factors in chunks:
        state = compiled[chunk_indices.shape[1]](state, chunk_indices, chunk_factors)
        if track:  # train_pack reads divergence after every chunk
            state[4].block_until_ready()
    jax.block_until_ready(state)
    seconds = time.perf_counter() - began
    member = state[0]
    logits = jax.vmap(forward, in_axes=(0, None))(member, jnp.asarray(problem["test_x"]))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(problem["test_y"])[None], -1)
    np.savez(path_out, seconds=seconds, test_accuracy=np.asarray(accuracy),
             devices=str(jax.devices()), version=jax.__version__)


if __name__ == "__main__":
    options = sys.argv[3:]
    unrolls = [int(o.split("=", 1)[1]) for o in options if o.startswith("unroll=")]
    main(sys.argv[1], sys.argv[2], track="track" in options,
         unroll=unrolls[-1] if unrolls else 1)
