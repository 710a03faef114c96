"""Acceptance 4's looser, shorter sibling: at equal work our defaults beat the seed article's recipe.

bench/quality.py runs the README's comparisons (500 steps, full width, against the standard recipe and the
article's loop); this test runs the article's loop for 150 steps at width 32 and asks for a clear margin,
scored by the project's digits network on 1,000 samples.
"""

import pytest

from bench.quality import compare


@pytest.mark.slow
def test_our_defaults_beat_the_seed_recipe_at_equal_work(tmp_path, cache_dir):
    result = compare(steps=150, width=32, num=1000, cache_dir=cache_dir, workers=0, baseline="article")
    ours, seed = result["ours"], result["baseline"]
    assert ours["fid"] < 0.75 * seed["fid"], result
    assert ours["is_mean"] > seed["is_mean"], result
