"""Seeds kept as the ranges a client sent (core.gan.seeds.SeedRanges): counted, walked and chunked without
being expanded, and refused past a limit before any range is kept."""

import tracemalloc

import pytest

from core.gan.seeds import MAX_SEEDS, SampleError, SeedRanges, TooManySeeds, parse_seeds


@pytest.mark.parametrize("spec,text,count", [
    ("0-63", "0-63", 64), ([1, 2, 3, 7], "1-3,7", 4), ("0-9,10-19, 25", "0-19,25", 21), ("5", "5", 1),
    ([3, 3, 2, 1], "3,3,2,1", 4), ("1,4-5,2", "1,4-5,2", 4), ("0-99999", "0-99999", 100_000),
    ([2**63 - 1], "9223372036854775807", 1)])
def test_ranges_are_normalised_and_counted(spec, text, count):
    ranges = SeedRanges.parse(spec)
    assert (str(ranges), ranges.count) == (text, count)
    assert SeedRanges.parse(str(ranges)) == ranges  # the stored form reads back as the same seeds
    if count <= 100:
        assert list(ranges) == (parse_seeds(spec) if not isinstance(spec, list) else spec)


def test_chunks_and_first_walk_the_seeds_in_order_across_ranges():
    ranges = SeedRanges.parse("10-14,3,20-21")
    assert list(ranges.chunks(3)) == [[10, 11, 12], [13, 14, 3], [20, 21]]
    assert str(ranges.first(6)) == "10-14,3" and ranges.first(0).count == 0 and ranges.first(99) == ranges
    assert list(SeedRanges.parse("0-2", limit=None).chunks(5)) == [[0, 1, 2]]


def test_a_huge_range_is_refused_with_its_count_without_expanding_it():
    tracemalloc.start()
    try:
        with pytest.raises(TooManySeeds) as refused:
            SeedRanges.parse("0-9999999999999,5", limit=50_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (refused.value.count, refused.value.limit) == (10**13 + 1, 50_000)
    assert "10000000000001" in str(refused.value) and "50000" in str(refused.value)
    assert peak < 100_000, f"refusing the range allocated {peak} bytes"
    assert SeedRanges.parse("0-9999999999999", limit=None).count == 10**13  # counted, never expanded


@pytest.mark.parametrize("spec,message", [
    ("", "none given"), ("a-b", "not a seed"), ("5-1", "runs backwards"), ("-3", "not a seed"),
    ("\u00b9", "not a seed"), ("\u0661", "not a seed"),  # a superscript one, an Arabic-Indic one: not ASCII digits
    ("9" * 5000, r"2\^63"), ("9223372036854775808", r"2\^63"), ([-1], r"2\^63"), ([True], "not a seed"),
    ("1-2-3", "not a seed")])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(SampleError, match=message):
        SeedRanges.parse(spec)


def test_parse_seeds_keeps_the_engines_ceiling():
    assert len(parse_seeds(f"0-{MAX_SEEDS - 1}")) == MAX_SEEDS
    with pytest.raises(TooManySeeds, match=str(MAX_SEEDS)):
        parse_seeds(f"0-{MAX_SEEDS}")
