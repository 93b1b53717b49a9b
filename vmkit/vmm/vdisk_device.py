"""The virtual disk adapter a VMM gives its VM: a SCSI host adapter in front of a VDISK.

The guest sees the board's own adapter (hw/scsi.py, docs/devices.md): the
same four registers (RB_ADDR, DOORBELL, STATUS, CONTROL) at VDISK_PORT, the
same 36-byte request block in its own memory, READ(10)/WRITE(10) of 512-byte
sectors, DONE and an interrupt (line VDISK_LINE of its virtual PIC) at the
end. So its driver is an ordinary SCSI driver (disk_guest.py), and nothing
in it knows of VMFS.

Why ports that trap, not a shared-memory ring: the VM's TSS has no I/O
bitmap, so every in/out of the guest is a #GP into its VMM already (vmm.py);
a request is two of them (RB_ADDR, DOORBELL) and one more to clear DONE,
against the thousands of instructions a request costs anyway, and the
request block itself is in guest memory, as a real bus master's is. A ring
would save those traps but needs a doorbell all the same (or polling), and
the kit's network path already shows the ring.

At the doorbell the VMM reads the block from guest memory (its address
checked: inside the VM's memory, else STATUS RBERR, as the real adapter
answers a block outside RAM) and checks the command: a data buffer outside
the VM's memory is refused with CHECK CONDITION / HARDWARE ERROR and the
DMA-error flag, a sector past the VDISK's end with ILLEGAL REQUEST / LBA OUT
OF RANGE: that VM's request fails, nothing else happens. A good request goes
to the kernel (kernel/vdisk.py), which resolves each VDISK block through the
file's descriptor and pointer blocks and queues the SCSI requests on the
shared controller; the data moves by DMA to or from the VDISK's buffer in
kernel memory, and is copied between that buffer and the guest's buffer
here, after the address check. Nothing waits inside the trap: the guest
halts (or goes on), and the completion, from the controller's IRQ, writes
the status into the guest's request block, sets DONE and makes the VM's
virtual line pending; the VMM injects it through the guest's own IDT.

Access width: every register is read and written whole (32 bits); a narrow
guest access counts as the whole register, as the COS's virtual NIC does.
The request block's and the buffer's addresses are guest addresses (the
guest sees its memory from 0, paging.py): the copies use the host addresses
VMM.host gives after `owns` checked the whole range, not the mapping-cache
window: they move up to 256 KiB at a time,
where the window maps a page per slot for the VMM's word-sized accesses.
"""
import struct

from vmkit.hw.scsi import (ASC_INVALID_FIELD, ASC_INVALID_OPCODE, ASC_LBA_OUT_OF_RANGE,
                           ASC_LUN_NOT_SUPPORTED, ASC_READ_ERROR, ASC_WRITE_ERROR, CHECK_CONDITION,
                           CONTROL, CTL_IE, DOORBELL, FLAG_DMA_ERROR, GOOD, HARDWARE_ERROR,
                           ILLEGAL_REQUEST, MEDIUM_ERROR, NPORTS, RB_ADDR, RB_SIZE, READ_10,
                           READ_CAPACITY_10, STATUS, ST_BUSY, ST_DONE, ST_RBERR, TEST_UNIT_READY,
                           WRITE_10, Request)
from vmkit.kernel.vdisk import MAX_TRANSFER
from vmkit.kernel.vmfs_errors import VmfsError
from vmkit.kernel.vmfs_format import SECTOR

VDISK_PORT = 0x1400             # the adapter's 16 ports in the VM's I/O space
VDISK_LINE = 11                 # its line on the VM's virtual PIC: vector 0x20 + 11 in the guest
SUPPORTED = (TEST_UNIT_READY, READ_CAPACITY_10, READ_10, WRITE_10)


class Refused(Exception):
    """Ends a guest's request with CHECK CONDITION (never leaves this module)."""
    def __init__(self, key, asc, why, dma_error=False):
        super().__init__(why)
        self.key, self.asc, self.why, self.dma_error = key, asc, why, dma_error


class VirtualDisk:
    def __init__(self, vmm, vdisk):
        self.vmm, self.vdisk = vmm, vdisk
        self.memory, self.trace = vmm.memory, vmm.trace
        self.rb_addr = self.status = self.control = 0
        self.ignored_doorbells = self.completed = self.refused = 0
        self.last_error = None

    def claims(self, port):
        return VDISK_PORT <= port < VDISK_PORT + NPORTS

    # ---- the registers --------------------------------------------------------------------------
    def read(self, port):
        return {RB_ADDR: self.rb_addr, STATUS: self.status,
                CONTROL: self.control}.get(port - VDISK_PORT, 0)

    def write(self, port, value):
        reg = port - VDISK_PORT
        if reg == RB_ADDR:
            self.rb_addr = value
        elif reg == DOORBELL:
            self._doorbell()
        elif reg == STATUS:                          # write 1s to clear
            self.status &= ~(value & (ST_DONE | ST_RBERR))
        elif reg == CONTROL:
            self.control = value & CTL_IE

    # ---- a request's life ---------------------------------------------------------------------
    def _doorbell(self):
        if self.status & ST_BUSY:
            self.ignored_doorbells += 1
            return
        rb = self.rb_addr
        if not self.vmm.owns(rb, RB_SIZE):
            self._refuse(None, f"request block at {rb:#x} is outside the VM's memory")
            self.status |= ST_DONE | ST_RBERR
            return self._interrupt()
        r = Request(rb, self.memory.read(self.vmm.host(rb, RB_SIZE), RB_SIZE))
        self.status |= ST_BUSY
        try:
            self._start(r)
        except Refused as e:
            self._refuse(r, e.why)
            self._finish(r, CHECK_CONDITION, (e.key, e.asc, 0), e.dma_error)

    def _start(self, r):
        if r.opcode not in SUPPORTED:
            raise Refused(ILLEGAL_REQUEST, ASC_INVALID_OPCODE, f"{r.op_name} is not supported")
        if r.lun != 0:
            raise Refused(ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED, f"LUN {r.lun}")
        if r.opcode == TEST_UNIT_READY:
            return self._finish(r, GOOD)
        if r.opcode == READ_CAPACITY_10:
            self._check_buffer(r, 8)
            self.memory.write(self.vmm.host(r.data_addr, 8), struct.pack(">II", self.vdisk.sectors - 1, SECTOR))
            return self._finish(r, GOOD, transferred=8)
        length = r.blocks * SECTOR
        if r.lba + r.blocks > self.vdisk.sectors:
            raise Refused(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE, f"sectors {r.lba}+{r.blocks} "
                          f"past the VDISK's {self.vdisk.sectors}")
        if length > MAX_TRANSFER or length > r.data_length:
            raise Refused(ILLEGAL_REQUEST, ASC_INVALID_FIELD, f"{r.blocks} sectors: more than "
                          f"{MAX_TRANSFER // SECTOR} or than the buffer's {r.data_length} bytes")
        self._check_buffer(r, length)
        if r.opcode == WRITE_10:                     # snapshot, as the adapter does at the doorbell
            self.memory.write(self.vdisk.buffer, self.memory.read(self.vmm.host(r.data_addr, length), length),
                              code=False)
        try:
            self.vdisk.submit(r.opcode, r.lba, r.blocks, lambda status: self._done(r, status))
        except VmfsError as e:                       # e.g. a block address that is not a file block
            self.last_error = str(e)
            asc = ASC_READ_ERROR if r.opcode == READ_10 else ASC_WRITE_ERROR
            raise Refused(MEDIUM_ERROR, asc, str(e))

    def _check_buffer(self, r, length):
        if not self.vmm.owns(r.data_addr, max(length, 1)):
            raise Refused(HARDWARE_ERROR, 0, f"data buffer {r.data_addr:#x}+{length} is outside "
                          f"the VM's memory", dma_error=True)

    def _done(self, r, status):
        """From the controller's completion IRQ (kernel/vdisk.py): the data, the status, DONE."""
        length = r.blocks * SECTOR
        if status == GOOD and r.opcode == READ_10:
            if self.vmm.owns(r.data_addr, length):   # checked at the doorbell; checked again
                self.memory.write(self.vmm.host(r.data_addr, length), self.memory.read(self.vdisk.buffer, length))
        sense = (0, 0, 0) if status == GOOD else \
            (MEDIUM_ERROR, ASC_READ_ERROR if r.opcode == READ_10 else ASC_WRITE_ERROR, 0)
        self._finish(r, status, sense, transferred=length if status == GOOD else 0)

    def _finish(self, r, status, sense=(0, 0, 0), dma_error=False, transferred=0):
        flags = (r.flags & ~FLAG_DMA_ERROR) | (FLAG_DMA_ERROR if dma_error else 0)
        at = self.vmm.host(r.addr, RB_SIZE)         # checked at the doorbell
        self.memory.write(at + 2, struct.pack("<BBBBH", status, *sense, flags), code=False)
        self.memory.write(at + 16, struct.pack("<I", transferred), code=False)
        self.status = (self.status & ~ST_BUSY) | ST_DONE
        self.completed += 1
        self.trace.emit("vdisk.complete", vm=self.vmm.name, op=r.op_name, lba=r.lba,
                        blocks=r.blocks, status=status)
        self._interrupt()

    def _refuse(self, r, why):
        self.refused += 1
        self.last_error = why
        self.trace.emit("vdisk.refused", vm=self.vmm.name, why=why)

    def _interrupt(self):
        if self.control & CTL_IE:
            self.vmm.raise_line(VDISK_LINE)


def install_vm_with_vdisk(kernel, guest, memory_bytes, name, vdisk, vdisk_bytes=None, cpu=None, entry=0):
    """A VM whose VMM has a virtual disk adapter in front of the VDISK file `vdisk` (created
    with `vdisk_bytes` if missing). The VDISK is opened first, because opening it reads its
    metadata through the shared controller and so runs the machine: the VM must not run
    before its adapter exists."""
    from vmkit.kernel.vdisk import Vdisks
    store = Vdisks.of(kernel)
    disk = store.attach(vdisk, vdisk_bytes, owner=name)
    try:
        world = kernel.install_vm(guest, memory_bytes, name, cpu, entry)
    except Exception:
        store.detach(disk)
        raise
    world.vmm.disk = VirtualDisk(world.vmm, disk)
    return world


def detach_vdisk(kernel, world):
    """Take the VDISK from `world` (its adapter goes; later guest accesses reach nothing), so
    a new VM can have it. `world` may be given by name."""
    from vmkit.kernel.worlds import VMError, World
    if isinstance(world, str):
        world = next((w for w in kernel.worlds.all if w.name == world), world)
    if not isinstance(world, World) or world not in kernel.worlds.all:
        names = [w.name for w in kernel.worlds.all if w.kind == "vm"]
        raise VMError(f"detach_vdisk takes one of this kernel's VM worlds {names}, not {world!r:.40}")
    if world.vmm is not None and world.vmm.disk is not None:
        kernel.vdisks.detach(world.vmm.disk.vdisk)
        world.vmm.disk = None
