import numpy as np
import pytest

from companion.data.text_corpus import ALPHABET, char_lm_task, stdlib_corpus, stdlib_source_files


def test_splits_use_disjoint_files_and_both_are_nonempty():
    train, validation = stdlib_source_files()
    assert len(train) > 100 and len(validation) > 10
    assert not set(train) & set(validation)


def test_corpus_sizes_vocabulary_and_round_trip():
    corpus = stdlib_corpus(train_chars=30_000, validation_chars=3_000)
    assert corpus.train.shape == (30_000,) and corpus.validation.shape == (3_000,)
    assert corpus.vocab_size == len(ALPHABET) == 97
    assert corpus.train.min() >= 0 and corpus.train.max() < corpus.vocab_size
    text = corpus.decode(corpus.train[:500])
    assert "?" in text or np.array_equal(corpus.encode(text), corpus.train[:500])
    assert np.array_equal(corpus.encode("x = 1\n"), corpus.encode("x = 1\n"))
    assert corpus.encode("é")[0] == 0  # outside the alphabet


def test_corpus_is_deterministic_and_read_only():
    a = stdlib_corpus(train_chars=10_000, validation_chars=1_000)
    b = stdlib_corpus(train_chars=10_000, validation_chars=1_000)
    assert np.array_equal(a.train, b.train)
    with pytest.raises(ValueError):
        a.train[0] = 1


def test_validation_text_differs_from_training_text():
    corpus = stdlib_corpus(train_chars=50_000, validation_chars=5_000)
    assert corpus.decode(corpus.validation[:200]) not in corpus.decode(corpus.train)


def test_char_lm_task_windows():
    ids = np.arange(100)
    x, y, m = char_lm_task(np.random.default_rng(1), 4, ids=ids, seq_len=10)
    assert x.shape == y.shape == m.shape == (4, 10)
    assert np.array_equal(y, x + 1) and m.all()


def test_bad_input():
    with pytest.raises(ValueError, match="train_chars"):
        stdlib_corpus(train_chars=0)
    with pytest.raises(ValueError, match="only"):
        stdlib_corpus(train_chars=10**10)
    with pytest.raises(ValueError, match="more than seq_len"):
        char_lm_task(np.random.default_rng(0), 2, ids=np.arange(5), seq_len=5)
    with pytest.raises(TypeError, match="Generator"):
        char_lm_task(0, 2, ids=np.arange(50), seq_len=5)
    with pytest.raises(TypeError, match="str"):
        stdlib_corpus(train_chars=100, validation_chars=10).encode(b"abc")
    with pytest.raises(ValueError, match="ids must lie"):
        stdlib_corpus(train_chars=100, validation_chars=10).decode(np.array([500]))
