"""Penn Treebank reader on fixture files in the real format: vocabulary, streams, missing files."""

import os
import shutil

import numpy as np
import pytest

from tf_sgd_regimes import data
from tf_sgd_regimes.data import ptb

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ptb")
# Hand count of fixtures/ptb/ptb.train.txt (words + one <eos> per line):
#   the 4, <eos> 3, mat 2, on 2, sat 2, <unk> 1, a 1, cat 1, dog 1, ran 1
# Sorted by count, ties alphabetical ('<' sorts before letters).
VOCAB = ["the", "<eos>", "mat", "on", "sat", "<unk>", "a", "cat", "dog", "ran"]


def test_vocabulary_matches_hand_count():
    words = ptb.read_words(os.path.join(FIXTURE, "ptb.train.txt"))
    assert len(words) == 18
    vocabulary = ptb.build_vocabulary(words)
    assert sorted(vocabulary, key=vocabulary.get) == VOCAB


def test_dataset_streams():
    dataset = data.get_dataset("ptb", data_dir=FIXTURE)
    ids = {word: index for index, word in enumerate(VOCAB)}
    train_words = ("the cat sat on the mat <eos> the dog sat <eos> "
                   "a <unk> ran on the mat <eos>").split()
    np.testing.assert_array_equal(dataset.train_x, [ids[w] for w in train_words])
    # "bird" is not in the training vocabulary: it becomes <unk>.
    np.testing.assert_array_equal(dataset.test_x, [ids["the"], ids["<unk>"], ids["sat"],
                                                   ids["<eos>"]])
    assert dataset.train_x.dtype == np.int32
    assert dataset.task == "language_model" and dataset.ordering == "streams"
    assert dataset.unroll == 35 and dataset.num_outputs == 10 and dataset.split == "test"
    assert dataset.train_y is None and dataset.test_y is None


def test_validation_split_reads_the_valid_file():
    dataset = data.get_dataset("ptb", data_dir=FIXTURE, split="validation", unroll=3)
    ids = {word: index for index, word in enumerate(VOCAB)}
    np.testing.assert_array_equal(dataset.test_x, [ids[w] for w in "a dog ran <eos>".split()])
    assert dataset.split == "validation" and dataset.unroll == 3
    assert dataset.steps_per_epoch(2) == (18 // 2 - 1) // 3


def test_tarball_layout_is_found(tmp_path):
    target = tmp_path / "simple-examples" / "data"
    shutil.copytree(FIXTURE, target)
    dataset = data.get_dataset("ptb", data_dir=str(tmp_path))
    assert dataset.num_train == 18


def test_vocabulary_cap_without_unk_is_an_error():
    words = ptb.read_words(os.path.join(FIXTURE, "ptb.train.txt"))
    vocabulary = ptb.build_vocabulary(words, vocab_size=4)
    assert sorted(vocabulary, key=vocabulary.get) == VOCAB[:4]
    with pytest.raises(ValueError, match="'cat'"):
        ptb.to_ids(words, vocabulary)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(data.DataMissingError) as error:
        data.get_dataset("ptb", data_dir=str(tmp_path))
    message = str(error.value)
    assert ptb.TARBALL_URL in message and "ptb.train.txt" in message
    assert "download=True" in message and str(tmp_path) in message


def test_tarball_download_requires_a_hash(tmp_path):
    # Refused before any network access.
    with pytest.raises(ValueError, match="file_hash is required"):
        data.get_dataset("ptb", data_dir=str(tmp_path), download=True,
                         download_source="tarball")
    with pytest.raises(ValueError, match="download_source"):
        data.get_dataset("ptb", data_dir=str(tmp_path), download=True, download_source="ftp")


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="config.data.split"):
        data.get_dataset("ptb", data_dir=FIXTURE, split="valid")


def test_tarball_source_checks_hash_and_extracts(tmp_path):
    # A tarball already in data_dir with the right hash is verified and used: no network.
    import hashlib
    import tarfile

    archive = tmp_path / "simple-examples.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ptb.FILES.values():
            tar.add(os.path.join(FIXTURE, name), arcname=f"./simple-examples/data/{name}")
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    dataset = data.get_dataset("ptb", data_dir=str(tmp_path), download=True,
                               download_source="tarball", file_hash=sha256)
    assert dataset.num_train == 18 and (tmp_path / "ptb.test.txt").is_file()


@pytest.mark.parametrize("batch_size,unroll", [(1, 35), (4, 5), (7, 3), (64, 35)])
def test_evaluation_windows_score_every_target_once(tmp_path, batch_size, unroll):
    # A split in the PTB text format whose length is not a multiple of anything: training
    # windows (stream_batch) would drop its tail; evaluation must not.
    from tf_sgd_regimes.data import token_windows

    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=rng.integers(1, 9))) for _ in range(23)]
    for name in ptb.FILES.values():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    dataset = data.get_dataset("ptb", data_dir=str(tmp_path), unroll=unroll)
    tokens = dataset.test_x
    assert len(tokens) == sum(len(line.split()) + 1 for line in lines)
    batches = list(token_windows.eval_windows(tokens, batch_size, unroll))
    x = np.concatenate([b[0] for b in batches], axis=1)
    y = np.concatenate([b[1] for b in batches], axis=1)
    weights = np.concatenate([b[2] for b in batches], axis=1)
    assert [b[3] for b in batches] == [False] + [True] * (len(batches) - 1)
    assert all(b[0].shape == (batch_size, unroll) for b in batches)
    real = weights.astype(bool)
    # Row-major, the weighted targets are tokens[1:] in order, each once, with their inputs.
    np.testing.assert_array_equal(y[real], tokens[1:])
    np.testing.assert_array_equal(x[real], tokens[:-1])
    assert weights.sum() == len(tokens) - 1
    # Padding only ever follows a row's real targets (the carried state is never fed it
    # before a real token).
    for row in real:
        assert not np.any(row[1:] & ~row[:-1])
