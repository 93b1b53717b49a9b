import gc
import struct

import pytest

from vmkit.hw import counter
from vmkit.hw.board import Board, KERNEL_CS
from vmkit.hw.x86 import encode_gate, encode_segment, encode_tss, CODE_RX, DATA_RW, TSS_AVAILABLE

IDT_A, IDT_B, GDT, TSS = 0x2000, 0x2800, 0x3000, 0x3100
RING0_STACK = 0x8F000


def write_idt(board, base, gates, count=256):
    """Fill an IDT: `gates` maps vector -> handler offset (or (offset, dpl, type))."""
    for vector, spec in gates.items():
        offset, dpl, type = spec if isinstance(spec, tuple) else (spec, 0, 0xE)
        board.memory.write(base + vector * 8, encode_gate(offset, KERNEL_CS, type, dpl))
    return (0, base, count * 8 - 1, 0)


def install_tss(board, esp0=RING0_STACK):
    """A GDT like the firmware's plus a TSS at selector 0x28, loaded into TR."""
    flat = 0xFFFFFFFF
    gdt = (bytes(8) + encode_segment(0, flat, CODE_RX, 0) + encode_segment(0, flat, DATA_RW, 0)
           + encode_segment(0, flat, CODE_RX, 3) + encode_segment(0, flat, DATA_RW, 3)
           + encode_segment(TSS, 103, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    board.memory.write(GDT, gdt)
    board.memory.write(TSS, encode_tss(esp0, 0x10))
    cpu = board.cpu
    cpu["gdtr"] = (0, GDT, len(gdt) - 1, 0)
    cpu["tr"] = (0x28, TSS, 103, 0x8B)


def u32(board, addr):
    return struct.unpack("<I", board.memory.read(addr, 4))[0]


@pytest.fixture
def board():
    b = Board()
    yield b
    b.close()


# ---- the order files are handed to xdist's workers (`./kit test`: -n 2 --dist loadfile) ----------
# xdist orders files by their number of tests, so a file of one long test (the browser's, the grade
# formats') came last and one worker waited for it alone. Longest first instead: these files'
# seconds, measured on a loaded machine (relative figures are what count); any other file weighs
# 0.1 s a test. Only the order between files changes: each file's tests still run in order, on one
# worker.
SECONDS = {
    "tests/test_cli.py": 23, "tests/test_software_interrupts.py": 12.6, "tests/test_wrong_answers.py": 10.8,
    "tests/test_exercises.py": 10.1, "tests/test_browser.py": 8.9, "tests/test_wrong_answers_ex06.py": 6.4,
    "tests/test_worlds.py": 5.2, "tests/test_wrong_answers_ex07.py": 3.8, "tests/test_grade_formats.py": 3.8,
    "tests/test_smp.py": 3.5, "tests/test_wrong_answers_ex08.py": 3.4, "notebooks/08_network.ipynb": 2.9,
    "tests/test_bad_input.py": 2.7, "notebooks/07_two_cpus.ipynb": 2.3, "notebooks/11_unload.ipynb": 1.9,
    "tests/test_vmfs_tool.py": 1.9, "tests/test_fair_share.py": 1.8, "tests/test_unload.py": 1.7,
    "notebooks/04_interrupts.ipynb": 1.4, "tests/test_vm_net.py": 1.4, "tests/test_wrong_answers_ex11.py": 1.4,
    "tests/test_guest_escapes.py": 3.0, "tests/test_wrong_answers_ex09.py": 1.6,
    "notebooks/09_address_spaces.ipynb": 1.3, "tests/test_guest_at_zero.py": 1.2,
}


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):          # xdist present: keep the order below
        config.option.loadscopereorder = False
    config.addinivalue_line("markers", "needs_c(what): the test checks `what`, which only vmkit's C "
                            "library does (counter.library()); skipped where no C compiler built it")


# ---- tests of what only the C library does ---------------------------------------------------------
# Without a C compiler (counter.library() is None) the counter, the delivery and the I/O check run in
# Python, the same machine; but the segment-limit filter is C only (limits.py), and the C paths' own
# tests have nothing to test. Those are marked `needs_c` (a file's `pytestmark`, or one test's
# decorator) and skip here, saying why, rather than fail with a message that does not.
def pytest_runtest_setup(item):
    mark = item.get_closest_marker("needs_c")
    if mark is not None and counter.library() is None:
        pytest.skip(f"needs vmkit's C library ({mark.args[0]}); no C compiler (cc, gcc, clang) built it")


def pytest_collection_modifyitems(config, items):
    count = {}
    for item in items:
        count[item.nodeid.split("::")[0]] = count.get(item.nodeid.split("::")[0], 0) + 1
    weight = {f: SECONDS.get(f, 0.1 * n) for f, n in count.items()}
    items.sort(key=lambda item: -weight[item.nodeid.split("::")[0]])   # stable: in-file order kept


def pytest_collection_finish(session):
    """What is alive once the tests are collected (pytest, Jupyter's and the kit's modules) lives
    to the end: frozen, the collector's full passes skip it. Each test leaves a machine (Unicorn's
    hooks make cycles) for those passes to find, and they walked everything: ~9% of the tests' CPU
    time (measured on three of the slowest files, 25.7 -> 23.5 s)."""
    gc.collect()
    gc.freeze()
