"""contract.ids: the one encoding of a history into the network's input."""

from __future__ import annotations

import numpy as np
import pytest

from contract.ids import UNKNOWN_INDEX, Vocabulary, input_rows


def test_input_rows_is_the_prediction_input():
    window = input_rows([np.array([1, 2, 3, 4, 5, 6, 7]), np.array([9]), np.array([])], 5)
    np.testing.assert_array_equal(window, [[3, 4, 5, 6, 7], [0, 0, 0, 0, 9], [0, 0, 0, 0, 0]])


def test_unknown_items_are_skipped_not_padded_in_place():
    # 0 marks items the model does not know: the row holds the last L KNOWN items.
    histories = [np.array([1, 2, 0, 3, 0, 0, 4]), [5, 0, 6], [0, 0]]
    np.testing.assert_array_equal(input_rows(histories, 3), [[2, 3, 4], [0, 5, 6], [0, 0, 0]])


def test_lists_and_arrays_encode_alike():
    history = [7, 0, 8, 9, 0, 10, 11, 0]
    np.testing.assert_array_equal(
        input_rows([history], 4), input_rows([np.array(history, dtype=np.int64)], 4)
    )


def test_vocabulary_lookups_agree_on_str_and_utf8_ids():
    vocabulary = Vocabulary(("a", "ü", "c"))
    assert [vocabulary.get(i) for i in ("a", "ü", "zz")] == [1, 2, UNKNOWN_INDEX]
    assert vocabulary.lookup_utf8([b"c", "ü".encode(), b"zz"]) == [3, 2, UNKNOWN_INDEX]
    assert vocabulary.external(2) == "ü"


def test_translate_maps_indices_by_id():
    data = Vocabulary(("x", "y", "z"))
    bundle = Vocabulary(("z", "x"))
    np.testing.assert_array_equal(bundle.translate(data), [0, 2, UNKNOWN_INDEX, 1])


def test_vocabulary_refuses_duplicate_ids():
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(("a", "a"))
