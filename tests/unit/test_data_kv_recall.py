import numpy as np
import pytest

from companion.data import N_SPECIAL, SEP_ID
from companion.data.kv_recall import key_value_recall_task, kv_recall_answer_positions, kv_recall_vocab_size


def _draw(**kw):
    args = dict(n_pairs=4, n_keys=10, n_values=6, filler_len=7, n_filler=3, n_queries=2)
    args.update(kw)
    return key_value_recall_task(np.random.default_rng(0), 64, **args), args


def test_answers_are_the_values_stored_with_the_queried_keys():
    (x, y, m), a = _draw()
    pos = kv_recall_answer_positions(a["n_pairs"], a["filler_len"], a["n_queries"])
    assert np.array_equal(np.flatnonzero(m[0]), pos)
    for row in range(x.shape[0]):
        pairs = {x[row, 2 * i]: x[row, 2 * i + 1] for i in range(a["n_pairs"])}
        assert len(pairs) == a["n_pairs"]  # distinct keys
        for p in pos:
            assert x[row, p - 1] == SEP_ID
            assert y[row, p] == pairs[x[row, p]]
    assert (y[~m] == -100).all()


def test_token_ranges_and_vocab_size():
    (x, y, m), a = _draw()
    vocab = kv_recall_vocab_size(a["n_keys"], a["n_values"], a["n_filler"])
    assert x.max() < vocab and x.min() >= SEP_ID
    filler = x[:, 2 * a["n_pairs"] : 2 * a["n_pairs"] + a["filler_len"]]
    assert filler.min() >= N_SPECIAL + a["n_keys"] + a["n_values"]
    values = y[m]
    assert values.min() >= N_SPECIAL + a["n_keys"] and values.max() < N_SPECIAL + a["n_keys"] + a["n_values"]


def test_no_filler_and_bad_input():
    (x, _, m), _ = _draw(filler_len=0, n_filler=0)
    assert x.shape[1] == 2 * 4 + 3 * 2 - 1
    with pytest.raises(ValueError, match="n_pairs"):
        _draw(n_pairs=11)
    with pytest.raises(ValueError, match="n_queries"):
        _draw(n_queries=5)
    with pytest.raises(ValueError, match="filler"):
        _draw(n_filler=0)
    with pytest.raises(TypeError, match="Generator"):
        key_value_recall_task(None, 2, n_pairs=1, n_keys=2, n_values=2, filler_len=0)
