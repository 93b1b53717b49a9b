"""A VM's guest sees its memory from address 0, wherever its pages lie in host memory.

Its page directory (kernel/paging.py) maps linear 0 .. size onto its host
pages; guests are linked at 0; every guest address the VMM takes goes through
one checked translation (VMM.host). What is asserted is what the machine did:
the bytes in host memory, the guests' consoles, the fault the CPU took.
"""
import pytest

from vmkit.hw.asm import assemble
from vmkit.kernel.errors import GuestFault
from vmkit.vmm import cguest, guests

from test_worlds import displaced, lines

VM = 0x8000


def tagged(tag, value):
    """Guest address 0 holds `tag` (its first byte: the code starts at entry 2). It stores
    `value` at guest 0x3f00, lets other worlds run for 20 ticks, then prints the byte at
    its address 0 and the one at 0x3f00."""
    return f"tag:    .byte {ord(tag)}, 10\n" + guests._prologue(0) + f"""
        mov dword ptr [0x3f00], {ord(value):#x}
        mov ecx, 20
pause:  hlt
        dec ecx
        jnz pause
        mov al, [0]
        out dx, al
        mov al, [0x3f00]
        out dx, al
        mov al, 10
        out dx, al
stop:   hlt
        jmp stop
"""


def test_two_vms_use_the_same_guest_addresses_and_each_sees_its_own_memory():
    board, cos, kernel = displaced()
    a = kernel.install_vm(tagged("A", "a"), VM, "a", entry=2)
    b = kernel.install_vm(tagged("B", "b"), VM, "b", entry=2)
    assert a.region[0] != b.region[0] and abs(a.region[0] - b.region[0]) >= VM   # different host pages
    board.run(800_000)
    assert lines(a)[-1] == "Aa" and lines(b)[-1] == "Bb"      # each read its own address 0 and 0x3f00
    m = board.memory
    for w, tag, value in ((a, b"A", ord("a")), (b, b"B", ord("b"))):
        base = w.region[0]
        assert m.read(base, 1) == tag and m.read_u32(base + 0x3F00) == value   # guest x = host base + x
        assert w.vmm.host(0x3F00, 4) == base + 0x3F00
        area_eip = [e for e in board.trace.of("vm.installed") if e["vm"] == w.name][0]["entry"]
        assert area_eip == 2 and w.state != "crashed"


def test_the_translation_is_checked_at_both_ends():
    board, cos, kernel = displaced()
    vm = kernel.install_vm(b"\xeb\xfe", VM, "vm")
    base = vm.region[0]
    assert vm.vmm.host(0) == base and vm.vmm.host(VM - 4, 4) == base + VM - 4
    for address, length in ((VM, 1), (VM - 4, 8), (-1, 1), (0x400000, 4)):
        with pytest.raises(GuestFault, match=f"at guest address {address:#x} .* outside the VM's memory"):
            vm.vmm.host(address, length)


def _store(address):
    return assemble(f"mov dword ptr [{address:#x}], 0xdeadbeef", 0)


def storer(address):
    """Prints "before", stores at guest `address`, prints "after"."""
    return (guests._prologue(0) + guests._print("before\n")
            + f"\n        mov dword ptr [{address:#x}], 0xdeadbeef\n"
            + guests._print("after\n") + "\nstop:   hlt\n        jmp stop\n")


def test_a_store_past_the_guests_memory_faults_there_and_stops_that_vm_alone():
    board, cos, kernel = displaced()
    good = kernel.install_vm(storer(VM - 0x100), VM, "good")        # its last page (below its stack): fine
    bad = kernel.install_vm(storer(VM), VM, "bad")                  # the first byte past its memory
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM, "other")
    board.run(400_000)
    assert lines(good) == ["before", "after"] and good.state != "crashed"
    assert board.memory.read_u32(good.region[0] + VM - 0x100) == 0xDEADBEEF
    assert lines(bad) == ["before"] and bad.state == "crashed"
    events = board.trace.of("cpu.fault", "vm.crashed")
    crashed = next(i for i, e in enumerate(events) if e.kind == "vm.crashed" and e["vm"] == "bad")
    fault = [e for e in events[:crashed] if e.kind == "cpu.fault"][-1]
    code = board.memory.read(bad.region[0], 0x400)
    assert fault["eip"] == code.index(_store(VM))                   # at the store, a guest address
    assert fault["vector"] in (13, 14)                              # #PF by paging (or #GP by a limit)
    if fault["vector"] == 14:
        assert f"write of {VM:#x}" in bad.fault and "not present" in bad.fault
    past = board.memory.read(bad.region[0] + VM, 0x1000)             # host: its page directory is there
    assert (0xDEADBEEF).to_bytes(4, "little") not in past           # nothing stored past it
    seen, ticks = len(lines(other)), cos.ticks()
    board.run(300_000)
    assert len(lines(other)) > seen + 5 and cos.ticks() > ticks and board.cpu.shutdown is None


def test_lidt_of_a_pointer_past_its_memory_is_that_vms_fault():
    board, cos, kernel = displaced()
    bad = kernel.install_vm(f"lidt [{VM - 2:#x}]\nstop: jmp stop", VM, "bad")
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM, "other")
    board.run(200_000)
    assert bad.state == "crashed"
    assert bad.fault == f"lidt of a table pointer at guest address {VM - 2:#x} (+6) is outside the VM's memory (0..{VM - 1:#x})"
    assert other.state != "crashed" and len(lines(other)) > 3


# ---- a freestanding C program, built with gcc, run as a guest ------------------------------
HELLO_OUTPUT = "hello from C\nsum of primes: 41\nafter a store: 139, calls 2\nbye\n"


@pytest.fixture(scope="module")
def hello_image():
    why = cguest.unavailable()
    if why:
        pytest.skip(f"gcc cannot build a 32-bit freestanding guest here: {why}")
    return cguest.build(cguest.HELLO)


def test_a_c_program_linked_at_0_runs_as_a_guest_and_prints_on_its_console(hello_image):
    board, cos, kernel = displaced()
    vm = kernel.install_vm(hello_image, VM, "c")             # entry 0: guest.ld puts _start first
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM, "other")
    board.run(600_000)
    assert bytes(vm.vmm.console).decode() == HELLO_OUTPUT
    assert vm.state == "halted" and other.state != "crashed"
    assert board.memory.read(vm.region[0], 16) == hello_image[:16]   # loaded at its host pages
    assert vm.region[0] != 0                                          # not at physical 0: paging


def test_a_c_guest_that_does_not_compile_is_a_clear_error():
    if cguest.unavailable():
        pytest.skip(f"gcc cannot build a 32-bit freestanding guest here: {cguest.unavailable()}")
    with pytest.raises(cguest.CGuestError, match=r"gcc failed \(exit 1\).*undeclared"):
        cguest.build("void _start(void) { nowhere = 1; }\n")


def test_an_instruction_straddling_the_end_of_its_memory_is_its_gp_told_without_host_bytes():
    """A 5-byte `mov eax, imm32` at its last byte: the fetch crosses its code segment's limit
    onto a page not present (#GP(0), not the #PF, hw/limits.py); the VMM's report names
    the instruction's address and does not decode the host bytes past its memory (its page
    tables) as if they were the guest's."""
    board, cos, kernel = displaced()
    bad = kernel.install_vm(storer(0x100).replace("mov dword ptr [0x100], 0xdeadbeef",
                                                  f"mov byte ptr [{VM - 1:#x}], 0xb8\n"
                                                  f"        mov eax, {VM - 1:#x}\n        jmp eax"), VM, "bad")
    other = kernel.install_vm(lambda base: guests.console(base, "other"), VM, "other")
    board.run(300_000)
    assert lines(bad) == ["before"] and bad.state == "crashed"
    fault = [e for e in board.trace.of("cpu.fault") if e["eip"] == VM - 1]
    assert [(e["vector"], e["error"]) for e in fault] == [(13, 0)] and "of CS" in fault[0]["why"]
    assert bad.fault == (f"#GP at {VM - 1:#x}: an instruction that runs past the end of its memory "
                         f"({VM:#x}), refused by its code segment's limit")
    seen = len(lines(other))
    board.run(300_000)
    assert len(lines(other)) > seen and board.cpu.shutdown is None


@pytest.mark.parametrize("source, why", [("", "source is empty"), (" \n", "source is empty"),
                                         ("int main(void) { return 0; }\n", "defines no `_start`")])
def test_a_c_guest_with_nothing_to_start_at_is_a_clear_error(source, why):
    if cguest.unavailable():
        pytest.skip(f"gcc cannot build a 32-bit freestanding guest here: {cguest.unavailable()}")
    with pytest.raises(cguest.CGuestError, match=why):
        cguest.build(source)
