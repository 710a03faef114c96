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


def _run(seed: int, fid: float, baseline_fid: float, steps: int = 2000, equal_time: float | None = None) -> dict:
    side = {"fid": fid, "kid_mean": 1.0, "is_mean": 2.0, "train_seconds": 10.0}
    run = {"seed": seed, "steps": steps, "batch_size": 64, "width": 64, "z_dim": 100, "dataset": "fashion-mnist 64x64",
           "overrides": {}, "ours": side, "baseline": {**side, "fid": baseline_fid, "recipe": "standard"}}
    if equal_time is not None:
        run["baseline_equal_time"] = {**side, "fid": equal_time, "steps": 900}
    return run


def test_runs_of_one_setup_merge_into_one_summary_and_others_are_refused():
    """bench/quality.py --merge: three seeds run as three processes give the same summary as one run of three."""
    from bench.quality import merge

    results = [{"runs": [_run(seed, fid, 2 * fid, equal_time=3 * fid)], "machine": {"date": str(seed)}}
               for seed, fid in ((0, 10.0), (1, 20.0), (2, 30.0))]
    merged = merge(results)
    assert merged["seeds"] == [0, 1, 2] and [m["date"] for m in merged["machines"]] == ["0", "1", "2"]
    assert merged["summary"]["ours"]["fid"]["mean"] == 20.0 and merged["summary"]["ours"]["fid"]["std"] == 10.0
    assert merged["fid_ratio_of_means"] == 0.5 and abs(merged["fid_ratio_of_means_equal_time"] - 1 / 3) < 1e-12
    assert merged["summary"]["baseline_equal_time"]["steps"]["mean"] == 900
    for odd in (_run(3, 1.0, 2.0, steps=500, equal_time=3.0), _run(0, 1.0, 2.0, equal_time=3.0), _run(3, 1.0, 2.0)):
        with pytest.raises(ValueError):
            merge([*results, {"runs": [odd]}])
