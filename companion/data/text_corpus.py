"""A character-level text corpus built from the Python standard library's own sources.

Every Python installation ships its standard library as ``.py`` files, so this
corpus needs no download. Files are ordered by the SHA-1 of their path relative
to the library root (a stable shuffle), and about one file in ten (those whose
hash starts with a byte divisible by 10) goes to the validation split, so the
two splits never share a file. Different Python versions ship slightly
different files: the corpus is fixed for a given interpreter, not across
versions.

The alphabet is fixed (newline plus printable ASCII), so ids mean the same
thing on every machine; id 0 stands for every other character (tabs, non-ASCII
letters in docstrings).

Example
-------
>>> import numpy as np
>>> from companion.data.text_corpus import stdlib_corpus, char_lm_task
>>> corpus = stdlib_corpus(train_chars=20_000, validation_chars=5_000)
>>> corpus.vocab_size, corpus.train.shape, corpus.validation.shape
(97, (20000,), (5000,))
>>> corpus.decode(corpus.encode("def f(x):\\n"))
'def f(x):\\n'
>>> inputs, targets, mask = char_lm_task(np.random.default_rng(0), 2, ids=corpus.train, seq_len=8)
>>> inputs.shape, bool((inputs[:, 1:] == targets[:, :-1]).all()), bool(mask.all())
((2, 8), True, True)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sysconfig
from pathlib import Path

import numpy as np

from .._validation import check_array, check_int

__all__ = ["ALPHABET", "CharCorpus", "stdlib_corpus", "stdlib_source_files", "char_lm_task"]

#: id 0 is "any other character"; then newline and the 95 printable ASCII characters.
ALPHABET = "\x00\n" + "".join(chr(c) for c in range(32, 127))
_LOOKUP = np.zeros(128, dtype=np.int64)  # code point -> id (0 for characters outside the alphabet)
for _i, _ch in enumerate(ALPHABET[1:], start=1):
    _LOOKUP[ord(_ch)] = _i
_SKIP_PARTS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


@dataclasses.dataclass(frozen=True)
class CharCorpus:
    """Character ids of a training and a validation text.

    Attributes
    ----------
    alphabet : str
        ``alphabet[i]`` is the character of id ``i``; id 0 stands for every
        character outside the alphabet (decoded as ``"?"``).
    train, validation : numpy.ndarray
        ``(n_train,)`` and ``(n_validation,)`` int64 ids, from disjoint files.
    """

    alphabet: str
    train: np.ndarray
    validation: np.ndarray

    @property
    def vocab_size(self) -> int:
        """Number of ids, ``len(alphabet)``."""
        return len(self.alphabet)

    def encode(self, text: str) -> np.ndarray:
        """``(len(text),)`` int64 ids of ``text``; characters outside the alphabet map to 0."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}")
        return encode_text(text)

    def decode(self, ids) -> str:
        """The text of a 1-D array of ids (id 0 decodes as ``"?"``)."""
        ids = np.asarray(ids)
        check_array(ids, "ids", ndim=1, dtype_kind="iu")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}); got [{ids.min()}, {ids.max()}]")
        return "".join("?" if i == 0 else self.alphabet[i] for i in ids.tolist())


def encode_text(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = np.zeros(codes.shape, dtype=np.int64)
    ascii_ = codes < 128
    ids[ascii_] = _LOOKUP[codes[ascii_]]
    return ids


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=1)
def stdlib_source_files() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Relative paths of the standard-library ``.py`` files, as ``(train_files, validation_files)``.

    Test suites and installed third-party packages are left out. Files are
    ordered by the SHA-1 of their relative path; a file goes to validation when
    the first byte of that hash is divisible by 10.
    """
    root = _stdlib_root()
    if not root.is_dir():
        raise RuntimeError(f"the standard library folder {root} does not exist on this interpreter")
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts):
            continue
        files.append((hashlib.sha1(rel.as_posix().encode()).digest(), rel.as_posix()))
    files.sort()
    train = tuple(name for digest, name in files if digest[0] % 10)
    validation = tuple(name for digest, name in files if digest[0] % 10 == 0)
    return train, validation


def _read_until(names: tuple[str, ...], n_chars: int, split: str) -> np.ndarray:
    root = _stdlib_root()
    pieces, total = [], 0
    for name in names:
        text = (root / name).read_text(encoding="utf-8", errors="replace")
        pieces.append(text if text.endswith("\n") else text + "\n")
        total += len(pieces[-1])
        if total >= n_chars:
            break
    if total < n_chars:
        raise ValueError(f"the standard library holds only {total} {split} characters; asked for {n_chars}")
    return encode_text("".join(pieces))[:n_chars]


@functools.lru_cache(maxsize=4)
def _cached_corpus(train_chars: int, validation_chars: int) -> CharCorpus:
    train_files, validation_files = stdlib_source_files()
    train = _read_until(train_files, train_chars, "training")
    validation = _read_until(validation_files, validation_chars, "validation")
    train.setflags(write=False)
    validation.setflags(write=False)
    return CharCorpus(ALPHABET, train, validation)


def stdlib_corpus(train_chars: int = 1_000_000, validation_chars: int = 100_000) -> CharCorpus:
    """The standard-library character corpus with a fixed train/validation split.

    Parameters
    ----------
    train_chars, validation_chars : int
        How many characters each split holds (>= 1). The standard library of
        CPython 3.11 holds about 20 million training characters.

    Returns
    -------
    CharCorpus
        Read-only id arrays (cached: calling again with the same sizes is free).
    """
    train_chars = check_int(train_chars, "train_chars", minimum=1)
    validation_chars = check_int(validation_chars, "validation_chars", minimum=1)
    return _cached_corpus(train_chars, validation_chars)


def char_lm_task(rng: np.random.Generator, batch_size: int, *, ids, seq_len: int):
    """Random windows of a character stream for next-character prediction.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch_size : int
    ids : array_like
        ``(n,)`` int ids, e.g. ``corpus.train``; ``n > seq_len``.
    seq_len : int

    Returns
    -------
    inputs, targets : numpy.ndarray
        ``(batch_size, seq_len)`` int64; ``targets[:, t]`` is the character after ``inputs[:, t]``.
    mask : numpy.ndarray
        ``(batch_size, seq_len)`` bool, all true.

    ``functools.partial(char_lm_task, ids=corpus.train, seq_len=256)`` is a
    ``batch_fn`` for :func:`companion.nn.train`.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=1)
    ids = np.asarray(ids)
    check_array(ids, "ids", ndim=1, dtype_kind="iu")
    if ids.shape[0] <= seq_len:
        raise ValueError(f"ids must hold more than seq_len={seq_len} characters; got {ids.shape[0]}")
    starts = rng.integers(0, ids.shape[0] - seq_len, size=batch_size)
    window = starts[:, None] + np.arange(seq_len + 1)[None, :]  # (batch, seq_len + 1)
    chunk = ids[window].astype(np.int64)
    return chunk[:, :-1], chunk[:, 1:], np.ones((batch_size, seq_len), dtype=bool)
