"""The hostile-input tables together: large enough, one name per case, and every kind of refusal there."""

from tests.web.hostile import test_archives, test_bodies, test_headers, test_ids, test_queries, test_weights

CASES = [*test_archives.CASES, *test_weights.CASES, *test_bodies.CASES, *test_headers.CASES, *test_ids.CASES,
         *test_queries.CASES]


def test_table_is_large_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    assert {c.type for c in CASES if c.type} >= {"archive-unsafe-path", "archive-link", "archive-too-large",
                                                  "archive-ratio", "weights-pickle", "payload-too-large"}
