"""The I/O permission check at its edges, as a CPU makes it: in virtual-8086 mode (CPL 3
whatever CS holds; the bitmap alone decides, IOPL or not) and at the bitmap's end (the CPU
reads two bytes from the access's first byte of the map, so both must lie inside TR's limit).
io.c (in Unicorn's hook) and CPU._io_denied (the Python check) alike."""
from vmkit.hw.x86 import encode_tss, encode_segment, TSS_AVAILABLE, EFLAGS_VM
from conftest import write_idt, install_tss, u32, IDT_A, RING0_STACK, TSS, GDT

from test_guest_escapes import hostile, VM
from test_worlds import displaced, lines


def _cpl3_under(board, limit):
    """CPL 3, IOPL 0, a TSS whose bitmap allows every port, its limit `limit`; a #GP counts
    into 0x5000 and skips the 1-byte in/out."""
    board.boot(0x1000)
    install_tss(board)
    tss = bytearray(encode_tss(RING0_STACK, 0x10, allowed_ports=range(0x10000)))
    board.memory.write(TSS, bytes(tss))
    board.memory.write(GDT + 0x28, encode_segment(TSS, limit, TSS_AVAILABLE, 0, s=0, db=0, g=0))
    board.cpu["tr"] = (0x28, TSS, limit, 0x8B)
    board.cpu["idtr"] = write_idt(board, IDT_A, {13: 0x6000})
    board.load(0x6000, "inc dword ptr [0x5000]\nadd esp, 4\nadd dword ptr [esp], 1\niretd")


def test_a_ports_bitmap_byte_at_tr_limit_is_refused_the_cpu_reads_one_more(board):
    """Port 0x3F8's bit lies in the map's byte 0x7F; with TR's limit ending exactly there the
    CPU's two-byte read passes the limit: #GP (Bochs and QEMU: map base + port/8 + 1 > limit).
    One byte further, allowed."""
    limit = 104 + 0x3F8 // 8
    _cpl3_under(board, limit)
    board.load(0x7000, "mov al, 0x41\nmov dx, 0x3f8\nout dx, al\nj: jmp j")
    board.load(0x1000, "push 0x23\npush 0x70000\npush 0x202\npush 0x1b\npush 0x7000\niretd")
    board.run(300)
    assert u32(board, 0x5000) == 1 and board.uart.text == ""
    assert board.cpu._io_denied(0x3F8, 1) is not None
    assert board.cpu._io_denied(0x3F0, 1) is None          # its byte and the next inside the limit
    board.cpu["tr"] = (0x28, TSS, limit + 1, 0x8B)
    assert board.cpu._io_denied(0x3F8, 1) is None


def test_an_out_in_virtual_8086_mode_is_checked_against_the_vm_tss_not_let_through():
    """A VM's guest enters virtual-8086 mode by an iretd at CPL 3 (Unicorn's, see
    test_guest_escapes) with a CS whose low bits are 0: its `out` to the machine's serial port
    is a #GP (CPL 3, the VM's TSS has no bitmap), not a byte on the machine's UART."""
    board, cos, kernel = displaced()
    code = [0xBA, 0xF8, 0x03, 0xB0, 0x5A, 0xEE, 0xF4]        # mov dx, 0x3f8; mov al, 'Z'; out dx, al; hlt
    body = "".join(f"mov byte ptr [{0x6100 + i:#x}], {b:#x}\n" for i, b in enumerate(code)) + f"""
        mov byte ptr [0x6000], 0xcf     ; iretd, at an address the VMM never scanned
        push 0
        push 0
        push 0
        push 0
        push 0x100                      ; SS, ESP, then EFLAGS with VM, CS 0x600, EIP 0x100
        push 0x2000
        pushfd
        or dword ptr [esp], {EFLAGS_VM:#x}
        push 0x600
        push 0x100
        mov eax, 0x6000
        jmp eax"""
    before = len(board.uart.output)
    bad = kernel.install_vm(hostile(body), VM, "bad")
    board.run(300_000)
    assert lines(bad) == ["before"] and bad.state == "crashed"
    assert b"Z" not in board.uart.output[before:]
    assert "0x600:0x105" in bad.fault                     # stopped at the out, not past it
