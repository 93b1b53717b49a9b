"""Bad input at the entry points a learner or instructor reaches: each gets an
error that names the problem, and the machine is left as it was."""
import struct
import zlib

import pytest

from vmkit.hw.board import Board, MachineStopped
from vmkit.kernel.image import HEADER, KernelImage, KernelImageError, build
from vmkit.lessons.takeover import booted_cos, COMMAND_LIMIT

FIELDS = ("entry", "stubs", "dispatch", "system_world", "relocations")


# ---- kernel images whose CRC is right but whose offsets are not -------------------
def repack(image, body=None, **fields):
    """`image` with some header fields (or its body) replaced and the CRC recomputed,
    as a vendor's build tool with a bug would ship it."""
    magic, version, size, _, *values = HEADER.unpack_from(image)
    values = dict(zip(FIELDS, values), **fields)
    body = image[HEADER.size:] if body is None else body
    packed = [values[f] for f in FIELDS]
    crc = zlib.crc32(struct.pack("<5I", *packed) + body)
    return HEADER.pack(magic, version, HEADER.size + len(body), crc, *packed) + body


def header(image):
    return dict(zip(FIELDS, HEADER.unpack_from(image)[4:]))


def with_relocation(image, index, value):
    """The image with relocation entry `index` replaced by `value`."""
    at = header(image)["relocations"] + 4 + 4 * index
    body = bytearray(image[HEADER.size:])
    struct.pack_into("<I", body, at - HEADER.size, value)
    return repack(image, body=bytes(body))


IMAGE = build()
SIZE = len(IMAGE)
BAD_IMAGES = {
    "relocation table": repack(IMAGE, relocations=SIZE + 100),
    "relocation table ": repack(IMAGE, relocations=SIZE - 2),
    "entries at offset": repack(IMAGE, relocations=header(IMAGE)["relocations"] - 400),
    "relocation entry 2": with_relocation(IMAGE, 2, SIZE + 0x1000),
    "relocation entry 0": with_relocation(IMAGE, 0, 2),                    # inside the header
    "entry offset": repack(IMAGE, entry=SIZE + 100),
    "dispatch offset": repack(IMAGE, dispatch=0xFFFFFFF0),
    "system world offset": repack(IMAGE, system_world=header(IMAGE)["relocations"]),
    "stubs offset": repack(IMAGE, stubs=header(IMAGE)["relocations"] - 256 * 16 + 4),
}


@pytest.mark.parametrize("field", BAD_IMAGES)
def test_each_header_offset_is_checked_against_the_image(field):
    with pytest.raises(KernelImageError, match=field.strip()):
        KernelImage(BAD_IMAGES[field], room=0x10000)


def test_a_good_image_still_loads_its_offsets():
    image = KernelImage(IMAGE, room=0x10000)
    assert image.entry == header(IMAGE)["entry"] and len(image.relocations) == 3


def cos_tables(cpu):
    return cpu["idtr"], cpu["gdtr"], cpu["tr"], cpu["cs"]


@pytest.mark.parametrize("field", ["relocation table", "entry offset", "relocation entry 2"])
def test_a_load_with_bad_offsets_is_refused_before_anything_is_copied(field):
    board, cos, loader = booted_cos(image=BAD_IMAGES[field])
    cpu, before = board.cpu, cos_tables(board.cpu)
    cos.put_module(loader.module)
    pool = board.memory.read(0x400000, 0x10000)               # where the COS's block comes from
    out = cos.run_command("insmod", COMMAND_LIMIT)
    refused = board.trace.of("load.refused")
    assert refused and field.strip() in refused[0]["why"] and "vmkload: refused" in out
    assert loader.kernel is None and not board.trace.of("load.copied")
    assert board.memory.read(0x400000, 0x10000) == pool and cos_tables(cpu) == before
    ticks = cos.ticks()
    board.run(300_000)                                         # later runs are not poisoned
    assert cos.ticks() > ticks and cpu.cpl == 0 and cpu.shutdown is None
    assert "ticks" in cos.run_command("ticks")


def panicking_image():
    """Intact offsets, but the kernel's first instruction is ud2: a fault at CPL 0
    in the kernel, which its dispatcher reports as a panic."""
    entry = header(IMAGE)["entry"]
    body = bytearray(IMAGE[HEADER.size:])
    body[entry - HEADER.size:entry - HEADER.size + 2] = b"\x0f\x0b"
    return repack(IMAGE, body=bytes(body))


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_kernel_panic_during_insmod_is_reported_as_a_panic(cpus):
    board, cos, loader = booted_cos(image=panicking_image(), cpus=cpus)
    cos.put_module(loader.module)
    with pytest.raises(MachineStopped, match=r"vmkernel panic: vector 0x6 .*'insmod'"):
        cos.run_command("insmod", COMMAND_LIMIT)
    assert board.cpu.shutdown.startswith("vmkernel panic: vector 0x6")
    assert board.clock < 1_000_000                            # said at once, not after the limit
    with pytest.raises(MachineStopped, match="vmkernel panic"):
        board.run_until(lambda: False, 100_000, "a tick")
    with pytest.raises(MachineStopped, match="vmkernel panic"):
        cos.run_command("ticks")
