"""The world switch's LOADED verify done in C (hw/switch_verify.c): for every claim-15 item
and every check beside them, a value made wrong is named exactly as the Python verify (the
reference, kernel/switch.py: _verify) names it; the machine does what it did with the verify
in Python; where the frame, the area or a descriptor is not plainly in RAM, C declines."""
import pytest

from vmkit.grading import ex06_world_switch as grader
from vmkit.hw import counter as counter_module
from vmkit.hw.counter import library
from vmkit.hw.switch_verify import CHECKS, names
from vmkit.hw.x86 import EFLAGS_IF
from vmkit.kernel import switch
from vmkit.kernel.save_area import _AREA, ITEMS, OFFSET, STATE_SIZE, WIDTH, span
from vmkit.kernel import switch_x86
from vmkit.kernel.switch_x86 import _F
from vmkit.lessons import takeover
from vmkit.vmm import guests

pytestmark = pytest.mark.skipif(library() is None, reason="the verify in C needs the C library")

REGISTERS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags", "cr0", "cr3")
LOAD = [line for line in switch_x86.LOAD.splitlines() if line.strip() and not line.strip().startswith(";")]


def ex06_machine(load=switch_x86.LOAD):
    """Exercise 06's machine: vm2 with its own GDT, LDT and IDT, so every item differs
    between the worlds (grading/ex06_world_switch.py)."""
    return grader._machine(lambda: load, quantum=1)


def both(kernel, frame, cpu, world):
    """(C's names or None if it declined, the Python's names) for the world loaded now."""
    memory = kernel.memory
    mask = switch._verifying(kernel).verify(cpu, frame.address, world.area)
    python = switch._verify(memory, frame, cpu, _AREA.unpack(span(memory, world.area, STATE_SIZE)))[0]
    return (None if mask is None else names(mask, ITEMS)), python


def _flip(memory, address, width, bits=8):
    """XOR `bits` into the field; returns the undo."""
    old = memory.read(address, width)
    memory.write(address, (int.from_bytes(old, "little") ^ bits).to_bytes(width, "little"), code=False)
    return lambda: memory.write(address, old, code=False)


def _descriptor_at(cpu, table):
    """Where the descriptor TR or LDTR names lies in the GDT loaded now."""
    _, tables = cpu.read_with_tables((), ("gdtr", table))
    (_, gdt_base, _, _), (sel, _, _, _) = tables
    return gdt_base + (sel & ~7), sel


def wrong(name, where, kernel, frame, cpu, world):
    """Make `name` wrong (the save area's value, or the frame's / the CPU's / the GDT's):
    returns the undo, or None if this world has nothing to make wrong there."""
    memory = kernel.memory
    if name in ITEMS and where == "area":
        return _flip(memory, world.area + OFFSET[name], WIDTH[name])
    if name in ITEMS and where == "machine":
        if name in ("esp", "ss") and not memory.read_u32(frame.address + _F["cs"]) & 3:
            return None                     # a CPL 0 frame: ESP and SS are not its words
        if name in _F:
            return _flip(memory, frame.address + _F[name], 4)
        return None
    if name == "tr.descriptor":             # its TSS descriptor available again (type 9, not busy 11)
        at, _ = _descriptor_at(cpu, "tr")
        return _flip(memory, at + 5, 1, 2)
    if name == "ldtr.descriptor":
        at, sel = _descriptor_at(cpu, "ldtr")
        return _flip(memory, at, 1, 1) if sel & ~3 else None      # its limit
    if name == "cr0.pg":                    # the area's CR3 says the other paging mode
        cr3 = memory.read_u32(world.area + OFFSET["cr3"])
        return _flip(memory, world.area + OFFSET["cr3"], 4, cr3 or 0x1000)
    if name == "IF":
        eflags = cpu["eflags"]
        cpu["eflags"] = eflags | EFLAGS_IF

        def undo():
            cpu["eflags"] = eflags
        return undo
    raise AssertionError(name)


CASES = [(n, "area") for n in ITEMS] + [(n, "machine") for n in ITEMS if n in _F] + [
    (n, "machine") for n in CHECKS]


@pytest.fixture(scope="module")
def seen():
    """At the first LOADED step into each world of exercise 06's machine: per case, the
    names C and the Python give with that value wrong, and with nothing wrong."""
    board, cos, kernel, vms = ex06_machine()
    got, real = {}, switch.loaded
    patch = pytest.MonkeyPatch()

    def loaded(kernel, frame, cpu, nxt):
        if nxt.name not in {w for (w, *_) in got}:
            got[nxt.name, "nothing"] = both(kernel, frame, cpu, nxt)
            for name, where in CASES:
                undo = wrong(name, where, kernel, frame, cpu, nxt)
                if undo is not None:
                    got[nxt.name, name, where] = both(kernel, frame, cpu, nxt)
                    undo()
        return real(kernel, frame, cpu, nxt)
    patch.setattr(switch, "loaded", loaded)
    try:
        board.run(200_000)
    finally:
        patch.undo()
    assert {w for (w, *_) in got} == {"cos", "vm1", "vm2"}
    return got


def test_nothing_wrong_is_nothing_named(seen):
    for world in ("cos", "vm1", "vm2"):
        assert seen[world, "nothing"] == ([], [])


@pytest.mark.parametrize("name,where", CASES)
def test_a_wrong_item_is_named_as_the_python_names_it(seen, name, where):
    cases = {k: v for k, v in seen.items() if k[1:] == (name, where)}
    assert cases, "no world had it to make wrong"
    for (world, *_), (c, python) in cases.items():
        assert name in python, (world, python)
        assert c == python, world


def test_c_declines_what_is_not_plainly_in_ram():
    board, cos, kernel, vms = ex06_machine()
    results, real = [], switch.loaded

    def loaded(kernel, frame, cpu, nxt):
        verifying, size = switch._verifying(kernel), kernel.memory.size
        results.append((verifying.verify(cpu, size - 8, nxt.area),        # a frame past RAM
                        verifying.verify(cpu, frame.address, size - 8)))   # an area past RAM
        if cpu["cr0"] & 0x80000000:                 # paging: a frame on a page not mapped to itself
            results.append((verifying.verify(cpu, 0x1000, nxt.area),))
        gdtr = cpu["gdtr"]                          # a GDT past RAM: TR's descriptor is not in it
        cpu["gdtr"] = (0, size - 8, gdtr[2], 0)
        results.append((verifying.verify(cpu, frame.address, nxt.area),))
        cpu["gdtr"] = gdtr
        return real(kernel, frame, cpu, nxt)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(switch, "loaded", loaded)
        board.run(100_000)
    assert len(results) > 3 and all(r is None for rs in results for r in rs)


def teaching_machine(cpus):
    board, cos, loader = takeover.takeover(timer_period=10_000, cpus=cpus, vm_tick=None)
    kernel = loader.kernel
    for i in range(2 * cpus):
        kernel.install_vm(lambda base: guests.checksum(base, 10**9), 64 << 10, f"busy{i}", cpu=i % cpus)
    return board, kernel


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_verify_in_c_leaves_the_machine_as_the_python_verify(monkeypatch, cpus):
    results = {}
    for in_c in (True, False):
        monkeypatch.setattr(switch, "VERIFY_IN_C", in_c)
        board, kernel = teaching_machine(cpus)
        board.run(400_000)
        done, declined = switch._verifying(kernel).counts()
        assert (done > 10 and declined == 0) if in_c else done == 0
        results[in_c] = ([str(e) for e in board.trace.events], bytes(board.memory.read(0, board.memory.size)),
                         [cpu.read(*REGISTERS) for cpu in board.cpus])
    assert results[True] == results[False]


LEFT_OUT = [pytest.param(i, id=line.split(";")[0].strip()) for i, line in enumerate(LOAD)]


@pytest.mark.parametrize("skipped", LEFT_OUT)
def test_a_learners_load_without_one_instruction_is_refused_as_with_the_python(monkeypatch, skipped):
    """Exercise 06: the load with one instruction left out. The same worlds refused, with the
    same words (the grader's hints come from them), the same trace."""
    source = "\n".join(line for i, line in enumerate(LOAD) if i != skipped)
    results = {}
    for in_c in (True, False):
        monkeypatch.setattr(switch, "VERIFY_IN_C", in_c)
        board, cos, kernel, vms = ex06_machine(source)
        board.run(120_000)
        done, declined = switch._verifying(kernel).counts()
        # (without the area's CR3 the machine stops at the first load: no verify is reached)
        assert (declined == 0 and (done > 0 or board.cpu.shutdown)) if in_c else done == 0
        results[in_c] = ([(w.name, w.state, w.fault) for w in kernel.worlds.all],
                         [str(e) for e in board.trace.events], board.cpu.shutdown)
    assert results[True] == results[False]


def test_without_the_library_the_python_verifies(monkeypatch):
    monkeypatch.setattr(counter_module, "_LIB", False)
    board, kernel = teaching_machine(1)
    board.run(150_000)
    assert switch._verifying(kernel).counts() == (0, 0) and len(board.trace.of("switch.load")) > 3


def test_a_declined_verify_is_the_pythons(monkeypatch):
    """Where C declines, `loaded` is the Python's: the same refusal, in the same words."""
    faults = {}
    for decline in (False, True):
        board, cos, kernel, vms = ex06_machine(without("mov gs, eax"))
        if decline:                                 # C sees a machine with no RAM: it declines all
            monkeypatch.setattr(switch._verifying(kernel).state, "ram_size", 0)
        board.run(120_000)
        done, declined = switch._verifying(kernel).counts()
        assert (done, declined > 0) == (0, True) if decline else (done > 0, declined) == (True, 0)
        faults[decline] = [(w.name, w.fault) for w in kernel.worlds.all]
    assert faults[True] == faults[False] and "differs from its save area in gs" in faults[True][1][1]


def without(start):
    return "\n".join(line for line in LOAD if not line.strip().startswith(start))
