"""Exercise 00 — decode an IDT gate descriptor.

When an interrupt arrives, the CPU reads 8 bytes at IDTR.base + 8 * vector
and decodes them into: where to jump (selector:offset), what kind of gate it
is (an interrupt gate clears IF, a trap gate does not), who may use it with
`int n` (DPL) and whether it is there at all (P). The platform's interrupt
delivery can run with your decoder plugged in: get it wrong and interrupts
go to the wrong place, or nowhere.

Layout (Intel SDM vol. 3, figure 6-2), little-endian:
    bytes 0-1   offset bits 15..0
    bytes 2-3   segment selector of the handler's code segment
    byte  4     zero
    byte  5     bit 7 P (present), bits 6..5 DPL, bit 4 zero, bits 3..0 type
                (0xE = 32-bit interrupt gate, 0xF = 32-bit trap gate)
    bytes 6-7   offset bits 31..16
"""
import struct

from vmkit.hw.x86 import Gate


def decode_gate(raw: bytes) -> Gate:
    """Return Gate(offset, selector, type, dpl, present) for the 8 bytes `raw`."""
    ### BEGIN SOLUTION
    offset_low, selector, _zero, attributes, offset_high = struct.unpack("<HHBBH", raw)
    return Gate(offset=offset_low | (offset_high << 16),
                selector=selector,
                type=attributes & 0xF,
                dpl=(attributes >> 5) & 3,
                present=bool(attributes & 0x80))
    ### END SOLUTION
