"""Notebook 09's machine (lessons/address_spaces.py): the address space is what the page
directory and the GDT in memory say, and each probe is what the CPU did."""
import pytest

from vmkit.kernel import layout, paging
from vmkit.lessons import address_spaces as lesson, cos_escapes, probes


@pytest.fixture(scope="module")
def prober():
    p = probes.Prober()
    yield p
    p.board.close()


def test_the_runs_are_the_page_tables_entries(prober):
    kernel, vm = prober.kernel, prober.vm
    space = lesson.address_space(kernel, vm)
    for run in space.runs:                      # every page of a run: the entry the MMU would read
        for linear in range(run.first, run.end, layout.PAGE):
            pte = paging.mapping(kernel.memory, space.cr3, linear)
            assert pte & paging.PRESENT and pte & ~0xFFF == run.host + linear - run.first
    guest = space.of("guest memory")
    assert [(r.first, r.end) for r in guest] == [(0, probes.PROBE_MEMORY)]   # from 0, whatever the host
    assert guest[0].host == vm.region[0]
    assert space.of("kernel")[0].first == kernel.base and not space.of("kernel")[0].user
    vmm = space.of("VMM region")                                             # claim 21: beside the kernel
    assert vmm[0].first == layout.vmm_base(kernel.base) and vmm[-1].end == kernel.base
    assert vmm[0].host == vm.vmm_region and not vmm[0].user
    gap = space.of("guest memory")[-1].end                                   # the page past: not present
    assert paging.mapping(kernel.memory, space.cr3, gap) & paging.PRESENT == 0


def test_the_segments_are_the_gdts_bytes(prober):
    space = lesson.address_space(prober.kernel, prober.vm)
    for s in space.segments:
        assert prober.kernel.memory.read(space.gdtr[0] + s.selector, 8) == s.raw
    assert space.segment("guest data").limit == probes.PROBE_MEMORY - 1      # truncated at its memory
    assert space.segment("VMM code").limit == prober.kernel.end - 1   # to the kernel's end


def test_a_guest_probe_reads_its_own_memory_and_faults_past_it(prober):
    end = probes.PROBE_MEMORY
    assert prober.guest(end - 1).outcome == "ok"
    past = prober.guest(end)
    assert past.outcome == "#GP (limit)" and past.detail.startswith("error 0")   # the limit first
    kernel = prober.guest(prober.kernel.base + layout.IDT)
    assert kernel.outcome == "#GP (limit)"                    # past its segment, before the page tables


def test_a_vmm_probe_reaches_the_kernel_with_its_own_segments_and_stops_at_their_end(prober):
    base, end = prober.kernel.base, prober.kernel.end
    kernel = prober.vmm(base + layout.IDT)
    assert kernel.outcome == "ok" and "CPL 0, CS 0x60 limit 0x43ffff, DS 0x68" in kernel.detail
    assert prober.vmm(end - 1).outcome == "ok"                        # the kernel's last byte
    past = prober.vmm(end)
    assert past.outcome == "#GP (limit)" and f"past the limit {end - 1:#x} of DS" in past.detail
    assert prober.vmm(probes.PROBE_MEMORY).outcome == "#PF"           # inside the limit, no page


def test_a_cos_probe_into_the_kernel_is_a_limit_fault_the_kernel_skips(prober):
    idt = prober.kernel.base + layout.IDT
    before = prober.board.memory.read(idt, 8)
    probe = prober.cos(idt)
    assert probe.outcome == "#GP (limit)" and "the kernel's IDT" in probe.detail
    assert prober.cos(0x1000).outcome == "ok"
    assert prober.board.memory.read(idt, 8) == before and prober.board.cpu.shutdown is None


def test_probes_beyond_the_world_limit_build_the_machine_again(prober):
    for _ in range(layout.MAX_WORLDS + 1):
        assert prober.guest(0).outcome == "ok"
    assert len(prober.kernel.worlds.all) <= layout.MAX_WORLDS


def test_the_vmm_reaches_the_kernel_with_cs_and_ds_unchanged(prober):
    entry, kernel = lesson.vmm_to_kernel(prober.board, prober.kernel, prober.vm)
    assert (entry.cs[0], entry.ds[0]) == (layout.VMM_CODE_SEL, layout.VMM_DATA_SEL)
    assert entry.cs == kernel.cs and entry.ds == kernel.ds          # selector and hidden part, from the CPU
    assert layout.vmm_base(prober.kernel.base) <= entry.eip < prober.kernel.base <= kernel.eip
    assert "unchanged across the VMM's jmp into the kernel: yes" in lesson.segments_text([entry, kernel], prober.kernel)


def test_every_escape_is_refused_by_the_machine():
    attempts = cos_escapes.escapes()
    assert len(attempts) == 5 and all(a.refused for a in attempts), "\n".join(map(str, attempts))


@pytest.mark.parametrize("address", [-1, 1 << 32, "0x1000", None, 1.5, True])
def test_the_probe_widget_refuses_what_is_not_an_address_and_runs_nothing(prober, address):
    from vmkit.ui.address_space_panel import ProbeWidget
    widget = ProbeWidget(prober, [("the guest's first byte", 0)])
    before = prober.board.clock, len(prober.kernel.worlds.all)
    line = widget.probe("guest", address)
    assert line.startswith("not an address:") and "0xffffffff" in line, line
    assert (prober.board.clock, len(prober.kernel.worlds.all)) == before
