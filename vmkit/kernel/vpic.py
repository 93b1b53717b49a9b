"""The COS's virtual 8259A pair: what its in/out to 0x20, 0x21, 0xA0, 0xA1 reach.

After the takeover the real PIC is the kernel's (irq.py masks, acknowledges
and unmasks its lines to forward them). The COS keeps programming a PIC of
its own, and that PIC's registers live in the COS's virtual CPU in kernel
memory (cos_vcpu.py), one bit per line, master 0-7 and slave 8-15, as the
kernel's other line bitmaps:

  IRR   vcpu.pending     lines forwarded to the COS and not yet injected
  IMR   vcpu.imr         OCW1, written and read back at 0x21 / 0xA1
  ISR   vcpu.in_service  lines injected and not yet acknowledged (EOI, irq.py)

A masked line stays in the IRR, as on an 8259A, and is injected when the
COS unmasks it; a slave line also waits while the master's cascade line is
masked. ICW1 restarts a chip's initialisation as on the 8259A (its IMR is
cleared; the next writes to its odd port are ICW2-4, not masks: the
vectors stay the kernel's, 0x20 + line through the COS's own IDT).
vcpu.icw counts those words still expected (master bits 0-7, slave 8-15).
A read of 0x20 / 0xA0 gives the IRR (OCW3's ISR select is not modelled).
"""
MASTER, SLAVE = 0x20, 0xA0          # command ports; the data port (IMR) is one above
PORTS = {MASTER, MASTER + 1, SLAVE, SLAVE + 1}
CASCADE = 2                         # the slave hangs on master line 2
ICW1, SINGLE, IC4 = 0x10, 0x02, 0x01
EOI_MASK, EOI = 0x38, 0x20          # OCW2 with EOI set (specific or not)


def held(imr):
    """The lines an IMR holds back: its own bits, and every slave line while
    the cascade line is masked."""
    return imr | (0xFF00 if imr & (1 << CASCADE) else 0)


def ready(vcpu):
    """Pending lines the COS's virtual IMR lets through now."""
    return vcpu.pending & ~held(vcpu.imr)


def _byte(word, shift):
    return (word >> shift) & 0xFF


def _with_byte(word, shift, value):
    return (word & ~(0xFF << shift)) | ((value & 0xFF) << shift)


def write(kernel, port, value):
    """The COS's `out` to its PIC. True if its IMR changed (a held line may now go in)."""
    v, shift, value = kernel.vcpu, 0 if port < SLAVE else 8, value & 0xFF
    if port in (MASTER, SLAVE):
        if value & ICW1:
            v.imr = _with_byte(v.imr, shift, 0)
            words = 1 + (0 if value & SINGLE else 1) + (1 if value & IC4 else 0)   # ICW2, 3, 4
            v.icw = _with_byte(v.icw, shift, words)
            return True
        if port == MASTER and value & EOI_MASK == EOI:
            kernel.irqs.cos_eoi()
        return False
    left = _byte(v.icw, shift)
    if left:                                            # ICW2-4: the kernel keeps the vectors
        v.icw = _with_byte(v.icw, shift, left - 1)
        return False
    before = v.imr
    v.imr = _with_byte(before, shift, value)
    return v.imr != before


def read(kernel, port):
    """The COS's `in` from its PIC: its IMR, or its IRR."""
    v, shift = kernel.vcpu, 0 if port < SLAVE else 8
    return _byte(v.imr if port & 1 else v.pending, shift)
