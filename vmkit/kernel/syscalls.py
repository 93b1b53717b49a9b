"""Requests for system resources (claim 1: "the kernel forming means for
handling requests for system resources"): the COS traps with int 0x90,
EAX saying what it wants.

    eax=0  who are you        -> eax = 'VMK1'
    eax=1  memory: ecx pages  -> eax = physical address of pages the kernel gives, or 0
    eax=2  the devices the kernel owns: ebx = buffer, ecx = room (entries)
                              -> eax = count; 16-byte entries as in the firmware table
    eax=3  the COS hands over its device list at ebx (claim 5) -> eax = devices taken
    eax=4  unload (claims 24-25): served by unload.py, not here; ebx = where to write why not
           -> the COS resumes at CPL 0 with eax = 0, or stays displaced with eax = 1
"""
import struct

from . import layout

VECTOR = 0x90


def serve(kernel, frame):
    call = frame.eax
    if call == 0:
        frame.eax = int.from_bytes(b"VMK1", "little")
    elif call == 1:
        pages = frame.ecx
        end = kernel.base + layout.HEAP_END
        if 0 < pages and kernel.heap + pages * layout.PAGE <= end:
            frame.eax, kernel.heap = kernel.heap, kernel.heap + pages * layout.PAGE
        else:
            frame.eax = 0
    elif call == 2:
        owned = [d for d in kernel.devices if kernel.classes.get(d.name) in ("reserved", "shared")]
        for i, d in enumerate(owned[:frame.ecx]):
            kernel.memory.write(frame.ebx + 16 * i, struct.pack("<8sHHbxxx", d.kind.encode(), d.base, d.count,
                                                                 -1 if d.irq is None else d.irq), code=False)
        frame.eax = min(len(owned), frame.ecx)
    elif call == 3:
        try:
            kernel.handover(frame.ebx)
            frame.eax = len(kernel.devices)
        except ValueError:
            frame.eax = 0
    else:
        frame.eax = 0xFFFFFFFF
    kernel.trace.emit("kernel.request", call=call, answer=frame.eax)
    # int 0x90 is a trap: EIP is already past it
