"""The kernel's way in and out may get faster; what the machine does may not change.

Each scenario of trace_scenarios.py is run and its whole trace compared with
the recorded fixture: every event, its order, its data and its virtual time."""
import itertools

import pytest

from trace_scenarios import SCENARIOS, fixture


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_trace_is_the_recorded_one(name):
    expected = fixture(name).read_text().splitlines()
    got = SCENARIOS[name]()
    for i, (a, b) in enumerate(itertools.zip_longest(expected, got)):
        assert a == b, (f"event {i} differs from tests/fixtures/trace_{name}.txt "
                        f"(re-record with `python tests/trace_scenarios.py` only if the change "
                        f"is meant to move the trace):\n  recorded: {a}\n  now:      {b}")
