"""The demo pack's step in plain JAX under jax.profiler (run by tools/profile_step.py).

    /work/venvs/jax/bin/python tools/jax_step_profile.py B STEPS TRACE_DIR HLO_OUT

Same problem shapes as tools/jax_pack_reference.py (78 members, MLP 64-32-32-10, the
paper's update; vmap over members, scan over steps, jit) on random data of the digits'
size: the kernels and their times do not depend on the values. Prints the seconds of one
profiled chunk of STEPS steps (after compiling and a warm-up chunk); writes the optimised
HLO to HLO_OUT. JAX lives in a separate venv, not in this project.
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

MEMBERS, SIZES, NUM_TRAIN = 78, (64, 32, 32, 10), 1437


def main(batch_size, steps, trace_dir, hlo_out):
    rng = np.random.default_rng(0)
    layers = len(SIZES) - 1
    params = ([jnp.asarray(0.1 * rng.normal(size=(MEMBERS, a, b)), jnp.float32)
               for a, b in zip(SIZES, SIZES[1:])]
              + [jnp.zeros((MEMBERS, b), jnp.float32) for b in SIZES[1:]])
    train_x = jnp.asarray(rng.normal(size=(NUM_TRAIN, SIZES[0])), jnp.float32)
    train_y = jnp.asarray(rng.integers(0, SIZES[-1], NUM_TRAIN), jnp.int32)
    lrs = jnp.full((MEMBERS,), 0.01, jnp.float32)
    momenta = jnp.asarray(np.where(np.arange(MEMBERS) % 2, 0.9, 0.0), jnp.float32)

    def loss(member, x, y):
        h = x
        for i in range(layers):
            h = h @ member[i] + member[layers + i]
            if i < layers - 1:
                h = jax.nn.relu(h)
        return jnp.mean(jax.nn.logsumexp(h, axis=-1)
                        - jnp.take_along_axis(h, y[:, None], axis=-1)[:, 0])

    def member_step(member, accumulator, index, lr, momentum):
        grads = jax.grad(loss)(member, train_x[index], train_y[index])
        accumulator = [momentum * a + g for a, g in zip(accumulator, grads)]
        return [w - lr * a for w, a in zip(member, accumulator)], accumulator

    def chunk(state, chunk_indices, factors):
        def body(carry, inputs):
            index, factor = inputs
            return jax.vmap(member_step)(*carry, index, lrs * factor, momenta), None
        return jax.lax.scan(body, state, (jnp.swapaxes(chunk_indices, 0, 1), factors))[0]

    state = (params, [jnp.zeros_like(p) for p in params])
    indices = jnp.asarray(rng.integers(0, NUM_TRAIN, (MEMBERS, steps, batch_size)), jnp.int32)
    factors = jnp.ones((steps,), jnp.float32)
    compiled = jax.jit(chunk).lower(state, indices, factors).compile()
    with open(hlo_out, "w") as f:
        f.write(compiled.as_text())
    state = jax.block_until_ready(compiled(state, indices, factors))  # warm-up
    jax.profiler.start_trace(trace_dir)
    began = time.perf_counter()
    state = jax.block_until_ready(compiled(state, indices, factors))
    seconds = time.perf_counter() - began
    jax.profiler.stop_trace()
    print(seconds)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
