"""Claims 23, 43: the VMFS on-disk format is declared once and has VMFS-3's shape."""
import pytest

from vmkit.kernel import vmfs_address as A
from vmkit.kernel.record import Record
from vmkit.kernel.vmfs_errors import Corrupt, VmfsError
from vmkit.kernel.vmfs_format import FileDescriptor, Mbr, PointerBlock, Superblock


def test_vmfs3_shape():
    assert FileDescriptor.SIZE == 0x800 and FileDescriptor.OFFSET["addresses"] == 0x400
    assert FileDescriptor.FORMAT["addresses"] == "256I"
    assert PointerBlock.SIZE == 4096 and PointerBlock.FORMAT["addresses"] == "1024I"
    assert Superblock.SIZE == 512 and Superblock.OFFSET["checksum"] == 0x1FC
    assert Mbr.OFFSET["partitions"] == 0x1BE and Mbr.OFFSET["signature"] == 0x1FE


def test_offsets_follow_the_fields_in_order():
    for cls in (Superblock, FileDescriptor, PointerBlock, Mbr):
        rows = cls.table()
        assert rows[0][0] == 0
        for (off, size, _, _), (nxt, _, _, _) in zip(rows, rows[1:]):
            assert off + size == nxt
        assert rows[-1][0] + rows[-1][1] == cls.SIZE


def test_pack_unpack_round_trip():
    fd = FileDescriptor(address=A.fd(3), generation=7, type=3, length=12345, blocks=4,
                        name=b"vm1.vmdk", addresses=tuple(range(256)))
    raw = fd.pack()
    assert len(raw) == 0x800 and raw[0x210:0x218] == (12345).to_bytes(8, "little")
    assert FileDescriptor.unpack(raw) == fd and FileDescriptor.unpack(raw).addresses[255] == 255


def test_record_rejects_an_unknown_field():
    class R(Record):
        FIELDS = (("a", "I"),)
    with pytest.raises(TypeError, match="no field 'b'"):
        R(b=1)


@pytest.mark.parametrize("make,typ", [(A.fb, A.FB), (A.pb, A.PB), (A.sb, A.SB), (A.fd, A.FD)])
def test_addresses_carry_their_type_in_the_low_three_bits(make, typ):
    for n in (0, 1, 15, 16, 1023, 1024, 123457):
        address = make(n)
        assert address & 7 == typ and A.kind(address) == typ and A.number(address) == n


def test_addresses_match_vmfs3_system_files():
    # dissect.vmfs: ROOT_DIR_DESC_ADDR 0x00000004, FBB_DESC_ADDR 0x00400004 (FD item 1)
    assert A.fd(0) == 0x4 and A.fd(1) == 0x00400004
    assert A.fb(5) == 5 << 6 | 1 and A.fb(5, tbz=True) == 5 << 6 | 0x20 | 1 and A.tbz(A.fb(5, True))
    assert A.pb(17) == 1 << 6 | 1 << 28 | 3


def test_a_wrong_address_is_a_clear_error_naming_where():
    with pytest.raises(Corrupt, match=r"pointer block 2 \(addresses\[9\]\).*is a file block"):
        A.expect(A.fb(3), A.PB, 10, "pointer block 2", "addresses[9]")
    with pytest.raises(VmfsError, match="has only 10"):
        A.expect(A.fb(30), A.FB, 10, "file descriptor 1", "addresses[0]")
    assert A.describe(A.fb(12, True)) == "FB 12 tbz" and A.describe(0) == "-"


def test_docs_tables_are_generated_from_the_declarations():
    from pathlib import Path
    from vmkit.kernel.vmfs_format import STRUCTURES, doc_tables
    doc = (Path(__file__).resolve().parents[1] / "docs" / "vmfs.md").read_text()
    assert doc_tables(doc) == doc, "run: python -m vmkit.kernel.vmfs_format docs/vmfs.md"
    for name in STRUCTURES:
        assert f"<!-- layout: {name} -->" in doc


def test_the_offset_comments_in_the_declaration_match():
    import inspect
    import re
    from vmkit.kernel import vmfs_format
    for cls in vmfs_format.STRUCTURES.values():
        lines = inspect.getsource(cls).splitlines()
        for name in cls.NAMES:
            at = next(i for i, ln in enumerate(lines) if f'("{name}", ' in ln)
            comment = next(re.search(r"# (0x[0-9a-f]+)", ln) for ln in lines[at:]
                           if re.search(r"# 0x", ln))
            assert int(comment.group(1), 16) == cls.OFFSET[name], (cls.__name__, name)
