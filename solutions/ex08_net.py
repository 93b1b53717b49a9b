"""Exercise 08 — the kernel's transmit step (claims 18, 19, 39).

A VM's network driver (x86 at CPL 3 in the VM) writes frames into its part
of the shared region, points TX slots at them, moves tx_producer and makes
ONE request for transmission (one `out`: a trap). The kernel, sensing it,
calls this function with the slots queued since the last request: TX slots
consumer, consumer + 1, ... up to (not including) producer, modulo SLOTS.
Every one of them must go on this one request (claim 19).

For each slot i:
  1. read the slot: Slot.unpack(port.read(port.region + tx_slot(i), Slot.SIZE))
     gives .buffer (the driver's pointer, a guest address: the VM sees its memory
     from 0; port.read and port.write take guest addresses) and .length;
  2. check it; the driver is not trusted:
       - the length must be one an Ethernet frame can have, MIN_FRAME..MAX_FRAME;
         else port.refuse(i, "refused_length", why)
       - the whole frame, buffer .. buffer + length, must lie in the driver's
         frames of THIS VM's region: port.region + FRAMES .. port.region + FRAMES
         + SLOTS * BUFFER; else port.refuse(i, "refused_pointer", why)
         (a pointer anywhere else would put other bytes of the VM on the wire)
  3. copy the frame into slot i's buffer of the physical transmit buffer portion,
     port.region + PHYS_TX + i * BUFFER (port.write(address, data));
  4. hand THAT copy to the NIC: port.hand_to_nic(i, copy_address, length)
     (a descriptor of the real NIC names it; the slot gets DONE).

port.refuse and port.hand_to_nic mark the slot done and count; the kernel moves
tx_consumer past every slot after you return. The machine grades you: two VMs
ping and echo across the wire with your step in the running kernel, and a
third tries lengths and pointers it should not.
"""
from vmkit.hw.nic import MAX_FRAME, MIN_FRAME
from vmkit.kernel.net_ring import BUFFER, FRAMES, PHYS_TX, SLOTS, Slot, tx_slot


def transmit(port, consumer, producer):
    """Send (or refuse) every TX slot from consumer up to producer."""
    ### BEGIN SOLUTION
    frames = port.region + FRAMES
    i = consumer
    while i != producer:
        slot = Slot.unpack(port.read(port.region + tx_slot(i), Slot.SIZE))
        if not MIN_FRAME <= slot.length <= MAX_FRAME:
            port.refuse(i, "refused_length", f"length {slot.length}")
        elif not frames <= slot.buffer <= frames + SLOTS * BUFFER - slot.length:
            port.refuse(i, "refused_pointer", f"pointer {slot.buffer:#x}")
        else:
            copy = port.region + PHYS_TX + i * BUFFER
            port.write(copy, port.read(slot.buffer, slot.length))
            port.hand_to_nic(i, copy, slot.length)
        i = (i + 1) % SLOTS
    ### END SOLUTION
