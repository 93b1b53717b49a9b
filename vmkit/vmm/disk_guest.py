"""A guest OS with a disk driver: real x86 at CPL 3, talking to its VMM's virtual SCSI adapter.

The driver is an ordinary SCSI driver (vdisk_device.py has the device): it
builds the 36-byte request block (hw/scsi.py's RB_FORMAT) in the guest's own
memory, writes its address to RB_ADDR and rings DOORBELL, then halts until
its disk interrupt (gate 0x20 + VDISK_LINE of its own IDT) says DONE; the
handler clears DONE, sends EOI, and the driver reads the status byte the
request block now holds. Every out traps to the VMM (the VM's TSS has no
I/O bitmap); the hlt lets the other worlds run while the disk works.

A program is a list of steps, each printing one line on the VM's console:
  ("write",  lba, count, seed)   fill the buffer with the pattern, WRITE(10)
  ("verify", lba, count, seed)   poison the buffer, READ(10), compare with the pattern
  ("read",   lba, count, addr)   READ(10) into `addr` (any address: a test of the checks)
  ("stream", lba, count, times, op)  `times` requests of `count` sectors from lba on
The pattern: dword k of sector s is seed + s * 128 + k (mod 2**32), so every dword of the
VDISK differs and a block read from the wrong place cannot pass (`pattern` computes it).

    0x0000          code
    0x3000          variables: ticks, seen, IDT pointer (6 bytes), done (at +0x10)
    0x3100          the request block
    0x3800          the guest's IDT (0x2C gates: timer 0x20, disk 0x20 + VDISK_LINE)
    0x4000          the data buffer (MAX_TRANSFER bytes)
    top             the stack
"""
import struct

from vmkit.hw.scsi import CONTROL, DOORBELL, RB_ADDR, READ_10, STATUS, ST_DONE, WRITE_10
from vmkit.kernel.vdisk import MAX_TRANSFER
from . import guests
from .guests import _print, timer_handler
from .vdisk_device import VDISK_LINE, VDISK_PORT

VARS, IDT = guests.VARS, guests.IDT      # (guests.load_idt's table pointer and IDT)
RB, BUFFER = 0x3100, 0x4000
DONE = VARS + 0x10
MEMORY = BUFFER + MAX_TRANSFER + 0x2000           # the buffer, then room for the stack
GATES = 0x20 + VDISK_LINE + 1
DWORDS = 128                                      # per sector


def pattern(seed, lba, count):
    """The bytes a "write" step puts in sectors lba..lba+count-1."""
    first = seed + lba * DWORDS
    return struct.pack(f"<{count * DWORDS}I", *((first + k) & 0xFFFFFFFF for k in range(count * DWORDS)))


def _gate(idt, vector, label):
    at = idt + vector * 8
    return f"""
        lea eax, [{label}]
        mov word ptr [{at:#x}], ax
        mov word ptr [{at + 2:#x}], 0x3b
        mov word ptr [{at + 4:#x}], 0x8e00
        shr eax, 16
        mov word ptr [{at + 6:#x}], ax"""


def _say(text):
    return "        mov edx, 0x3f8\n" + _print(text)


def _driver(base):
    rb, port = base + RB, VDISK_PORT
    return f"""
{timer_handler(base)}
dirq:   push eax                        ; its disk: clear DONE, note it, EOI
        push edx
        mov edx, {port + STATUS:#x}
        mov eax, {ST_DONE}
        out dx, eax
        mov dword ptr [{base + DONE:#x}], 1
        mov al, 0x20
        out 0x20, al
        pop edx
        pop eax
        iretd
disk:   mov dword ptr [{base + DONE:#x}], 0   ; eax opcode, ebx lba, ecx sectors, esi buffer
        mov edi, {rb:#x}                 ; -> eax: the SCSI status the adapter wrote back
        mov dword ptr [edi], 10         ; cdb_len 10, lun 0, status 0, key 0
        mov dword ptr [edi + 4], 0      ; asc, ascq, flags
        mov [edi + 8], esi              ; data address
        mov edx, ecx
        shl edx, 9
        mov [edi + 12], edx             ; data length
        mov dword ptr [edi + 16], 0     ; transferred
        mov [edi + 20], eax             ; CDB: opcode, 0, LBA (big-endian), 0, count (big-endian), 0
        mov edx, ebx
        bswap edx
        mov [edi + 22], edx
        mov byte ptr [edi + 26], 0
        mov [edi + 27], ch
        mov [edi + 28], cl
        mov byte ptr [edi + 29], 0
        mov edx, {port + RB_ADDR:#x}
        mov eax, edi
        out dx, eax
        mov edx, {port + DOORBELL:#x}
        out dx, eax
dwait:  cmp dword ptr [{base + DONE:#x}], 0
        jne dgot
        hlt                             ; the other worlds run; the disk interrupt wakes it
        jmp dwait
dgot:   movzx eax, byte ptr [{rb + 2:#x}]
        ret
setup:  {_gate(base + IDT, 0x20, "timer")}
        {_gate(base + IDT, 0x20 + VDISK_LINE, "dirq")}
        {guests.load_idt(base, GATES * 8 - 1, sti=False)}
        mov edx, {port + CONTROL:#x}
        mov eax, 1
        out dx, eax                     ; the adapter interrupts at DONE
        sti
"""


def _step(base, name, i, step):
    buf = base + BUFFER
    kind = step[0]
    if kind in ("write", "verify"):
        _, lba, count, seed = step
        first, dwords = (seed + lba * DWORDS) & 0xFFFFFFFF, count * DWORDS
        where = f"{lba}+{count}"
        code = f"""
        mov edi, {buf:#x}
        mov ecx, {dwords}
        mov eax, {first if kind == "write" else 0xFFFFFFFF:#x}
f{i}:   mov [edi], eax
        add edi, 4
        {"inc eax" if kind == "write" else ""}
        dec ecx
        jnz f{i}
        mov eax, {WRITE_10 if kind == "write" else READ_10}
        mov ebx, {lba}
        mov ecx, {count}
        mov esi, {buf:#x}
        call disk
        test eax, eax
        jnz e{i}
"""
        if kind == "write":
            code += _say(f"{name} wrote {where}\n") + f"\n        jmp n{i}\n"
        else:
            code += f"""
        mov esi, {buf:#x}
        mov eax, {first:#x}
        mov ecx, {dwords}
c{i}:   cmp [esi], eax
        jne b{i}
        add esi, 4
        inc eax
        dec ecx
        jnz c{i}
{_say(f"{name} read {where} ok" + chr(10))}
        jmp n{i}
b{i}:
{_say(f"{name} read {where} bad" + chr(10))}
        jmp n{i}
"""
        return code + f"e{i}:\n{_say(f'{name} {kind} {where} check condition' + chr(10))}\nn{i}:\n"
    if kind == "read":
        _, lba, count, address = step
        return f"""
        mov eax, {READ_10}
        mov ebx, {lba}
        mov ecx, {count}
        mov esi, {address:#x}
        call disk
        test eax, eax
        jnz e{i}
{_say(f"{name} read to {address:#x} ok" + chr(10))}
        jmp n{i}
e{i}:
{_say(f"{name} read to {address:#x} check condition" + chr(10))}
n{i}:
"""
    if kind == "stream":
        _, lba, count, times, op = step
        opcode = WRITE_10 if op == "write" else READ_10
        return f"""
        mov ebp, {times}
        mov ebx, {lba}
s{i}:   push ebx
        mov eax, {opcode}
        mov ecx, {count}
        mov esi, {buf:#x}
        call disk
        pop ebx
        test eax, eax
        jnz e{i}
        add ebx, {count}
        dec ebp
        jnz s{i}
{_say(f"{name} {op} stream ok" + chr(10))}
        jmp n{i}
e{i}:
{_say(f"{name} {op} stream check condition" + chr(10))}
n{i}:
"""
    raise ValueError(f"step {i}: {kind!r} is not write, verify, read or stream")


def program(name, steps):
    """A function of the guest's link address (install_vm gives 0) giving its source (install_vm's `guest`)."""
    return guests.driver_program(name, steps, _step, _driver, _say)
