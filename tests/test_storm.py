"""Claim 11: masking keeps a stuck level-triggered line from storming the kernel."""
from vmkit.lessons import interrupts


def test_with_masking_a_stuck_line_does_not_stop_the_kernel_or_the_cos():
    result = interrupts.storm(masking=True, instructions=200_000)
    assert result["storm detected"] == "no"
    assert result["kernel work done"] >= 12_000          # its own work went on (4 pieces of 3000)
    assert result["COS timer ticks"] >= 19               # and the COS kept its ticks (one per 10,000)
    # one kernel entry per COS acknowledgement: the line never recurs unmasked in between
    assert result["sensor IRQs into the kernel"] <= result["sensor IRQs handled by the COS"] + 1


def test_without_masking_the_storm_is_detected_and_reported_with_counts():
    result = interrupts.storm(masking=False, instructions=200_000)
    assert result["storm detected"].startswith("after 201")
    assert result["sensor IRQs into the kernel"] >= 201
    assert result["sensor IRQs handled by the COS"] <= 1
    assert result["kernel work done"] >= 12_000          # stopped, not hung
