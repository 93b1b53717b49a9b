"""Requests for system resources (claim 1: "the kernel forming means for
handling requests for system resources"): the COS traps with int 0x90,
EAX saying what it wants.

    eax=0  who are you        -> eax = 'VMK1'
    eax=1  memory: ecx pages  -> eax = physical address of pages the kernel gives, or 0
    eax=2  the devices the kernel owns: ebx = buffer, ecx = room (entries)
                              -> eax = count; 16-byte entries as in the firmware table
"""
import struct

from . import layout

VECTOR = 0x90
KERNEL_DEVICES = ("pic", "pit")      # taken over with the interrupt vectors (issue 4 adds the classes)


def serve(kernel, frame):
    call = frame.eax
    if call == 0:
        frame.eax = int.from_bytes(b"VMK1", "little")
    elif call == 1:
        pages = frame.ecx
        end = kernel.base + layout.STACK_TOP - 0x8000          # keep clear of the kernel stack
        if 0 < pages and kernel.heap + pages * layout.PAGE <= end:
            frame.eax, kernel.heap = kernel.heap, kernel.heap + pages * layout.PAGE
        else:
            frame.eax = 0
    elif call == 2:
        owned = [d for d in kernel.board.devices if d[0] in KERNEL_DEVICES][:frame.ecx]
        for i, (kind, base, count, irq) in enumerate(owned):
            kernel.memory.write(frame.ebx + 16 * i, struct.pack("<8sHHbxxx", kind.encode(), base, count,
                                                                 -1 if irq is None else irq), code=False)
        frame.eax = len(owned)
    else:
        frame.eax = 0xFFFFFFFF
    kernel.trace.emit("kernel.request", call=call, answer=frame.eax)
    # int 0x90 is a trap: EIP is already past it
