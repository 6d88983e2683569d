"""The packed engine on a language model: carried LSTM state, clipping, perplexity.

Each member's result is checked against an independent plain loop: windows cut with numpy,
the model's stateless `call_with_state`, tf.clip_by_global_norm, and the paper's momentum
and schedule written out as closed forms.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes import data
from tf_sgd_regimes import engine
from tf_sgd_regimes import models
from tf_sgd_regimes.configs import common

UNROLL = 5
BATCH = 4
EVAL_BATCH = 2
VOCAB = 12
MODEL = dict(name="small_lstm_lm", embedding_size=6, units=8, num_layers=1, dropout_rate=0.0)


def _dataset():
    return data.get_dataset("synthetic_language", vocab_size=VOCAB, num_train_tokens=400,
                            num_test_tokens=150, unroll=UNROLL, chain_seed=3)


def _config(clip):
    config = common.base_config()
    config.data = dict(name="synthetic_language")
    config.model = dict(MODEL)
    config.train.clip_grad_norm = clip
    config.train.eval_batch_size = EVAL_BATCH
    config.train.steps_per_call = 7  # chunks that do not line up with epochs
    config.train.divergence_loss = 1e3
    return config


def _windows(tokens, batch, step):
    """Window `step` of `batch` parallel rows, cut with numpy (no engine code)."""
    row = len(tokens) // batch
    per_epoch = (row - 1) // UNROLL
    t = step % per_epoch
    rows = np.asarray(tokens[: batch * row]).reshape(batch, row)
    chunk = rows[:, t * UNROLL: t * UNROLL + UNROLL + 1]
    return chunk[:, :-1], chunk[:, 1:], t


def _schedule(step, total):
    """Appendix B.1: constant to T/2, then halved every T/20 (10 halvings at most)."""
    return 0.5 ** min(max(math.floor(20 * step / total) - 9, 0), 10)


def _cross_entropy(logits, targets):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def _reference(dataset, member, total_steps, clip, carry=True, fields=None):
    """Trains one member in a plain loop.

    Returns (test perplexity, train perplexity, per-step losses, per-step gradient norms).
    """
    fields = {k: v for k, v in (fields or MODEL).items() if k != "name"}
    model = models.get_model("small_lstm_lm", dataset.input_shape, VOCAB, seed=member.seed,
                             batch_size=BATCH, eval_batch_size=EVAL_BATCH, **fields)
    weights = model.trainable_variables
    accumulators = [np.zeros(w.shape, np.float32) for w in weights]

    @tf.function
    def loss_and_grads(x, y, state):
        with tf.GradientTape() as tape:
            logits, state = model.call_with_state(x, state, training=True)
            # Zaremba et al. (2014): summed over the unrolled steps, averaged over the batch.
            loss = tf.reduce_mean(tf.reduce_sum(_cross_entropy(logits, y), axis=-1))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, weights)]
        return loss, grads, state

    state = model.initial_state(BATCH)
    losses, norms = [], []
    for step in range(total_steps):
        x, y, t = _windows(dataset.train_x, BATCH, step)
        if t == 0 or not carry:  # a new pass over the stream starts from zero state
            state = model.initial_state(BATCH)
        loss, grads, state = loss_and_grads(tf.constant(x), tf.constant(y), state)
        losses.append(float(loss))
        norms.append(float(tf.linalg.global_norm(grads)))
        if clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, clip)
        rate = member.learning_rate * _schedule(step, total_steps)
        for w, a, g in zip(weights, accumulators, grads):
            a *= member.momentum
            a += g.numpy()
            w.assign(w.numpy() - rate * a)

    def perplexity(tokens):
        # Every target tokens[1:], cut into EVAL_BATCH contiguous rows of ceil((N-1)/B)
        # targets; each row is read as one stream (batch 1, no padding) from zero state.
        tokens = np.asarray(tokens, np.int32)
        positions = np.arange(1, len(tokens))
        per_row = -(-len(positions) // EVAL_BATCH)
        total, count = 0.0, 0
        for r in range(EVAL_BATCH):
            targets = positions[r * per_row:(r + 1) * per_row]
            state = model.initial_state(1)
            for start in range(0, len(targets), UNROLL):
                window = targets[start:start + UNROLL]
                x, y = tokens[window - 1][None], tokens[window][None]
                logits, state = model.call_with_state(tf.constant(x), state, training=False)
                total += float(tf.reduce_sum(_cross_entropy(logits, tf.constant(y))))
                count += y.size
        assert count == len(tokens) - 1
        return math.exp(total / count)

    return perplexity(dataset.test_x), perplexity(dataset.train_x), np.array(losses), norms


def _chunk_means(losses, chunk):
    return np.array([losses[i:i + chunk].mean() for i in range(0, len(losses), chunk)])


CLIP = 0.25


@pytest.fixture(scope="module")
def clipped_engine():
    """One engine for the tests that clip at CLIP: its compiled pack step is reused."""
    return engine.Engine(_config(CLIP), _dataset(), tf.distribute.get_strategy())


def _train(dataset, members, total_steps, clip, fields=None, trainer=None):
    """The engine's results and its per-chunk mean training losses [chunks, K]."""
    if trainer is None:
        config = _config(clip)
        if fields:
            config.model = dict(fields)
        trainer = engine.Engine(config, dataset, tf.distribute.get_strategy())
    chunks = []
    results = trainer.train_pack(members, BATCH, total_steps,
                                 on_chunk=lambda report: chunks.append(report.mean_loss))
    return results, np.array(chunks)


def test_packed_members_match_independent_loops_with_clipping(clipped_engine):
    dataset = clipped_engine.dataset
    assert dataset.steps_per_epoch(BATCH) == 19
    total = 26  # crosses an epoch boundary (state reset) and the decay phase
    clip = CLIP
    members = [engine.Member("momentum", 1.0, 0.9, seed=0),
               engine.Member("sgd", 2.0, 0.0, seed=1)]
    results, chunk_losses = _train(dataset, members, total, clip, trainer=clipped_engine)
    for k, (member, result) in enumerate(zip(members, results)):
        assert result.status == "complete" and result.steps_done == total
        test_ppl, train_ppl, losses, norms = _reference(dataset, member, total, clip)
        # Clipping really acted (else this test could not tell it is applied per member).
        assert max(norms) > 1.5 * clip
        np.testing.assert_allclose(chunk_losses[:, k], _chunk_means(losses, 7), rtol=1e-4)
        assert result.metrics["test_perplexity"] == pytest.approx(test_ppl, rel=2e-4)
        assert result.metrics["train_perplexity"] == pytest.approx(train_ppl, rel=2e-4)
        assert result.metrics["test_loss"] == pytest.approx(math.log(test_ppl), rel=2e-4)
    # Sensitivity: the same member without clipping ends elsewhere.
    no_clip = _reference(dataset, members[0], total, 0.0)[0]
    assert abs(no_clip - results[0].metrics["test_perplexity"]) > 1e-3 * no_clip
    # The Markov chain's entropy rate bounds every model from below.
    best = dataset.info["optimal_perplexity"]
    assert all(r.metrics["test_perplexity"] > 0.9 * best for r in results)


def test_training_state_carries_across_windows_and_resets_each_pass():
    # Large initial weights make the carried state visible in every window's loss; a
    # near-zero learning rate keeps the weights where they are, so losses isolate the state.
    dataset = _dataset()
    fields = dict(MODEL, init_scale=0.6)
    member = engine.Member("m", 1e-12, 0.0, seed=2)
    total = 24  # one reset at step 19
    results, chunk_losses = _train(dataset, [member], total, 0.0, fields=fields)
    test_ppl, train_ppl, losses, _ = _reference(dataset, member, total, 0.0, fields=fields)
    carried = _chunk_means(losses, 7)
    zeroed = _chunk_means(
        _reference(dataset, member, total, 0.0, carry=False, fields=fields)[2], 7)
    np.testing.assert_allclose(chunk_losses[:, 0], carried, rtol=1e-5)
    # The first window of a chunk starts fresh either way; later ones do not.
    assert np.max(np.abs(carried - zeroed) / carried) > 1e-3
    # Evaluation passes carry their own state from zero: the test pass, then the train pass.
    assert results[0].metrics["test_perplexity"] == pytest.approx(test_ppl, rel=1e-5)
    assert results[0].metrics["train_perplexity"] == pytest.approx(train_ppl, rel=1e-5)


def test_a_member_is_unaffected_by_a_diverging_pack_mate(clipped_engine):
    dataset = clipped_engine.dataset
    members = [engine.Member("a", 1.0, 0.9, seed=0), engine.Member("huge", 1e6, 0.9, seed=5)]
    packed, _ = _train(dataset, members, 12, CLIP, trainer=clipped_engine)
    # Clipping and the divergence check are per member: the pack-mate leaves member a alone.
    assert packed[0].status == "complete"
    test_ppl = _reference(dataset, members[0], 12, CLIP)[0]
    assert packed[0].metrics["test_perplexity"] == pytest.approx(test_ppl, rel=2e-4)
    assert packed[1].status == "diverged" and packed[1].diverged_step is not None
    assert packed[1].metrics["test_perplexity"] is None
