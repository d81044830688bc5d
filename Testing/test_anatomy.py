from __future__ import annotations

import numpy as np
import pytest

from VertebralFractureLib import anatomy


def test_table_covers_verse_labels_in_order():
    assert sorted(anatomy.VERTEBRAE) == list(range(1, 26)) + [28]
    assert anatomy.name_of(1) == "C1" and anatomy.name_of(7) == "C7"
    assert anatomy.name_of(8) == "T1" and anatomy.name_of(19) == "T12"
    assert anatomy.name_of(20) == "L1" and anatomy.name_of(24) == "L5" and anatomy.name_of(25) == "L6"
    assert anatomy.name_of(28) == "T13"
    # T13 sits between T12 and L1
    assert anatomy.cranio_caudal([20, 28, 19, 3]) == [3, 19, 28, 20]


def test_lookup_by_name_and_errors():
    assert anatomy.vertebra("l1").label == 20
    assert anatomy.vertebra(" T12 ").region is anatomy.Region.THORACIC
    with pytest.raises(KeyError, match="unknown vertebra name"):
        anatomy.vertebra("S1")
    with pytest.raises(KeyError, match="unknown VerSe label"):
        anatomy.vertebra(26)


def test_snomed_codes_are_distinct_dicom_concepts():
    codes = [v.snomed_code for v in anatomy.VERTEBRAE.values()]
    assert len(set(codes)) == len(codes)
    assert anatomy.vertebra("L1").snomed_code == "66794005"
    assert anatomy.vertebra("C1").snomed_code == "14806007"
    assert anatomy.vertebra("T11").snomed_code == "12989004"
    assert all(0 <= c <= 1 for v in anatomy.VERTEBRAE.values() for c in v.color)


def test_neighbours():
    assert anatomy.neighbours(20, [19, 20, 21, 23]) == (19, 21)
    assert anatomy.neighbours(19, [19, 20]) == (None, 20)
    assert anatomy.neighbours(23, [19, 21, 23]) == (21, None)


def test_totalsegmentator_mapping():
    ts = np.array([[[50, 44, 43, 32, 31, 27, 26, 5, 0]]])
    verse = anatomy.convert_totalsegmentator(ts)
    assert verse.tolist() == [[[1, 7, 8, 19, 20, 24, 0, 0, 0]]]
    with pytest.raises(ValueError):
        anatomy.convert_totalsegmentator(np.array([[[-1]]]))
