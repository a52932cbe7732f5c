from squeezebench.report.pareto import dominates, front


def test_front_higher_is_better():
    pts = [(10.0, 0.90), (20.0, 0.95), (15.0, 0.85), (30.0, 0.95), (5.0, 0.80), (None, 0.99), (8.0, None)]
    assert front(pts) == [4, 0, 1]  # cheapest first; (15, .85) and (30, .95) are beaten; None takes no part
    assert dominates(pts[1], pts[3]) and not dominates(pts[0], pts[1])


def test_front_lower_is_better_and_ties():
    ppl = [(100.0, 20.0), (50.0, 44.0), (80.0, 206.0), (50.0, 44.0)]
    assert front(ppl, higher_is_better=False) == [1, 3, 0]  # equal points both stay on the front
    assert front([]) == []


def test_excluded_points_never_join_or_shape_the_front():
    # the cheapest point collapsed (index 0): it is not on the front, and the point it would dominate is
    pts = [(1.0, 0.95), (2.0, 0.90), (3.0, 0.93)]
    assert front(pts) == [0]
    assert front(pts, exclude={0}) == [1, 2]
    assert front(pts, exclude={0, 1, 2}) == []
