"""The shared memory region of a VM's network driver and the kernel (claims 18-20, 39-40).

Declared once here; the kernel's path (vm_net.py), the guest's driver
(vmm/net_guest.py, which takes its offsets from these names) and any widget
read the same bytes. The region is pages of the VM's own memory (so its
driver reaches them at CPL 3 through its page directory, at guest addresses:
every pointer in it is one) which the kernel reaches too, by their host
address (its VMM's checked translation, VMM.host), as the NIC's DMA does. (Not through
its CPU's mapping window, mapcache.py: a frame arrives in the NIC's interrupt,
which may interrupt the COS, which runs without paging, where the window is
out of reach; and frames are copied whole, the window maps a page a slot.)

    region + 0x0000  NetHeader: the pointers (ring indices), the request count, the MAC
    region + 0x0040  TX slots: the driver's pointers to its output frames
    region + 0x0080  RX slots: the kernel's pointers into the physical receive buffer portion
    region + FRAMES  the driver's own frames (what a TX slot may point at)
    region + PHYS_TX the physical transmit buffer portion: the kernel copies a frame here
                     and the real NIC takes it from here (a descriptor names it)
    region + PHYS_RX the physical receive buffer portion: the kernel copies a frame for
                     the VM's MAC here and points an RX slot at it
    region + SIZE

Ownership of the indices: the driver writes tx_producer and rx_consumer, the
kernel writes tx_consumer and rx_producer. The kernel keeps its own copy of
the two it writes (PortState, below: in kernel memory) and never believes
the region's, since the guest can write anything there.
"""
from vmkit.kernel.record import Record, doc_tables

PAGE = 0x1000
SLOTS = 8                   # per ring, a power of two; one slot stays empty (full != empty)
BUFFER = 0x800              # a frame buffer: any Ethernet frame (<= 1514 bytes) fits
HEADER, TX_SLOTS, RX_SLOTS = 0x000, 0x040, 0x080
FRAMES = PAGE
PHYS_TX = FRAMES + SLOTS * BUFFER
PHYS_RX = PHYS_TX + SLOTS * BUFFER
SIZE = PHYS_RX + SLOTS * BUFFER
DONE, ERROR = 1, 2          # a slot's flags, as the NIC's descriptors have them


class NetHeader(Record):
    FIELDS = (("tx_producer", "I", "next TX slot the driver fills (the driver writes it)"),
              ("tx_consumer", "I", "next TX slot the kernel takes (the kernel writes it)"),
              ("rx_producer", "I", "next RX slot the kernel fills (the kernel writes it)"),
              ("rx_consumer", "I", "next RX slot the driver takes (the driver writes it)"),
              ("slots", "I", "slots per ring"),
              ("requests", "I", "requests for transmission the kernel sensed"),
              ("mac", "6s", "the VM's MAC address"),
              ("reserved", "2s", ""))


class Slot(Record):
    FIELDS = (("buffer", "I", "pointer: guest-physical address of the frame"),
              ("length", "H", "bytes"),
              ("flags", "H", "DONE | ERROR once the kernel is through with it"))


# ---- the kernel's own records: in kernel memory, never in the region -----------------------------
class NetCounters(Record):  # at the start of the kernel's network page
    FIELDS = (("ports", "I", "ports attached"),
              ("unknown_mac", "I", "received frames for no VM, not the COS's, not the kernel's"),
              ("reserved", "8s", ""))


class PortState(Record):    # one per VM port, after NetCounters
    FIELDS = (("region", "I", "guest address of the VM's shared region"),
              ("tx_consumer", "I", "the kernel's copy: next TX slot it takes"),
              ("rx_producer", "I", "the kernel's copy: next RX slot it fills"),
              ("requests", "I", "requests for transmission sensed"),
              ("frames_sent", "I", "frames handed to the NIC"),
              ("frames_received", "I", "frames copied into the receive portion"),
              ("refused_pointer", "I", "TX slots pointing outside the driver's frames"),
              ("refused_length", "I", "TX slots with a length outside 14..1514"),
              ("refused_source", "I", "TX frames whose source MAC is not the VM's"),
              ("empty_requests", "I", "requests with nothing queued"),
              ("bad_index", "I", "ring indices >= SLOTS found in the region"),
              ("flooded", "I", "requests refused after FLOOD_LIMIT empty ones in a tick"),
              ("rx_dropped", "I", "frames for the VM with no free RX slot"),
              ("tick", "I", "kernel tick of the last request"),
              ("tick_empty", "I", "requests with nothing queued in that tick"),
              ("mac", "6s", "the VM's MAC"),
              ("reserved", "2s", ""))


def tx_slot(i):
    return TX_SLOTS + i * Slot.SIZE


def rx_slot(i):
    return RX_SLOTS + i * Slot.SIZE


assert NetHeader.SIZE <= TX_SLOTS - HEADER and SLOTS * Slot.SIZE <= RX_SLOTS - TX_SLOTS
assert RX_SLOTS + SLOTS * Slot.SIZE <= FRAMES and SLOTS & (SLOTS - 1) == 0


# ---- docs/net.md's tables: python -m vmkit.kernel.net_ring docs/net.md ----------------------
STRUCTURES = {c.__name__: c for c in (NetHeader, Slot, NetCounters, PortState)}


if __name__ == "__main__":
    import sys
    for path in sys.argv[1:]:
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(doc_tables(text, STRUCTURES))
