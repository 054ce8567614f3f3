"""skcfx.protocols: the mixed-class protocol helpers (labels, naming modes and concepts)."""

from types import SimpleNamespace

import numpy as np
import pytest

from skcfx.protocols import match_concepts, mixed_class_labels


def _explanation(shown, mode_ids):
    """A stand-in explanation whose counterfactual (i, j) is a 1x1 image holding the label it shows."""
    shown = np.asarray(shown, dtype=np.float32)
    return SimpleNamespace(counterfactuals=shown[:, :, None, None, None], mode_ids=np.asarray(mode_ids))


def _read(images):
    return images.reshape(len(images)).astype(int)


def test_mixed_class_labels_merges_subclasses_and_rejects_absent_ones():
    assert mixed_class_labels([1, 7, 3, 7], (1, 7)).tolist() == [1, 1, 0, 1]
    with pytest.raises(ValueError, match="do not occur"):
        mixed_class_labels([1, 3], (1, 7))


def test_match_concepts_names_each_concept_by_what_its_counterfactuals_show():
    # Concept 0 (slot 1) mostly shows 7, concept 1 (slot 0) mostly shows 1: the majority of each.
    shown = [[1, 7], [1, 7], [7, 7], [1, 1]]
    mode_ids = [[1, 0]] * 4
    assert match_concepts(_explanation(shown, mode_ids), _read, (1, 7)) == {0: 7, 1: 1}


def test_match_concepts_is_one_to_one_even_when_one_subclass_dominates():
    # Both concepts show 7 most often; the assignment still gives each concept its own digit,
    # the one that loses least (concept 1 shows 1 twice, concept 0 never).
    shown = [[7, 7], [7, 1], [7, 1], [7, 7]]
    mapping = match_concepts(_explanation(shown, [[0, 1]] * 4), _read, (1, 7))
    assert mapping == {0: 7, 1: 1}


def test_match_concepts_uses_only_the_given_queries_and_ignores_other_labels():
    shown = [[1, 7], [1, 7], [7, 1], [7, 1], [7, 1]]
    ex = _explanation(shown, [[0, 1]] * 5)
    assert match_concepts(ex, _read, (1, 7), queries=[0, 1]) == {0: 1, 1: 7}
    assert match_concepts(ex, _read, (1, 7)) == {0: 7, 1: 1}
    # A label outside the sub-classes (-1: neither) counts for nobody.
    assert match_concepts(_explanation([[-1, 7], [-1, 7]], [[0, 1]] * 2), _read, (1, 7))[1] == 7


def test_match_concepts_leaves_extra_concepts_unnamed_and_checks_input():
    shown = [[1, 7, 3]] * 3
    mapping = match_concepts(_explanation(shown, [[0, 1, 2]] * 3), _read, (1, 7))
    assert mapping == {0: 1, 1: 7}
    with pytest.raises(ValueError, match="at least one"):
        match_concepts(_explanation(shown, [[0, 1, 2]] * 3), _read, ())
    with pytest.raises(ValueError, match="no queries"):
        match_concepts(_explanation(shown, [[0, 1, 2]] * 3), _read, (1, 7), queries=np.zeros(3, bool))
