"""A bus-master SCSI host adapter with one disk (target 0, LUN 0).

The guest's driver builds a 36-byte request block in its own memory (a CDB
plus where the data goes), writes the block's physical address to RB_ADDR
and rings DOORBELL. The adapter, like a real bus master, fetches the block
and moves the data by DMA through `board.memory`; it never sees a Python
object of the driver's. The register map and block layout are in
docs/devices.md.

Timing, chosen so the interesting things can be seen and are repeatable:
  - at the doorbell the block is read (snapshotted) and BUSY is set; later
    changes to the block in memory do not affect the request in flight;
  - `latency` retired instructions later (virtual time, `board.schedule`)
    the command executes: the data moves by DMA, the status, sense and
    `transferred` fields are written back into the block at the address
    the doorbell used, BUSY clears, DONE sets and the IRQ line rises (if
    enabled). Data is therefore not in memory, nor on the disk, before DONE.
  - one request at a time: a doorbell while BUSY is ignored, counted
    (`ignored_doorbells`) and traced (`scsi.busy`).

Whatever the guest puts in the block, the answer is a SCSI status, never a
Python exception: a bad opcode or range is CHECK CONDITION / ILLEGAL
REQUEST; a data buffer outside RAM is CHECK CONDITION / HARDWARE ERROR with
the DMA-error flag; a request block itself outside RAM cannot be answered
in memory, so STATUS bit 2 (RBERR) reports it instead.
"""
import struct

from .disk import DiskImageError, SECTOR

# registers (byte offsets from the base port)
RB_ADDR, DOORBELL, STATUS, CONTROL = 0x00, 0x04, 0x08, 0x0C
NPORTS = 16
ST_BUSY, ST_DONE, ST_RBERR = 1, 2, 4
CTL_IE = 1

# the request block
RB_SIZE = 36
RB_FORMAT = "<BBBBBBHIII16s"          # cdb_len lun status key asc ascq flags addr len xfer cdb
FLAG_DMA_ERROR = 1
GOOD, CHECK_CONDITION = 0x00, 0x02

# sense keys and additional sense codes used here (SPC-3)
NO_SENSE, MEDIUM_ERROR, HARDWARE_ERROR, ILLEGAL_REQUEST, DATA_PROTECT = 0x0, 0x3, 0x4, 0x5, 0x7
ASC_INVALID_OPCODE, ASC_LBA_OUT_OF_RANGE, ASC_INVALID_FIELD = 0x20, 0x21, 0x24
ASC_LUN_NOT_SUPPORTED, ASC_WRITE_PROTECTED, ASC_INTERNAL_FAILURE = 0x25, 0x27, 0x44
ASC_READ_ERROR, ASC_WRITE_ERROR = 0x11, 0x0C

TEST_UNIT_READY, REQUEST_SENSE, INQUIRY = 0x00, 0x03, 0x12
READ_CAPACITY_10, READ_10, WRITE_10 = 0x25, 0x28, 0x2A
OPCODES = {TEST_UNIT_READY: "TEST UNIT READY", REQUEST_SENSE: "REQUEST SENSE",
           INQUIRY: "INQUIRY", READ_CAPACITY_10: "READ CAPACITY(10)",
           READ_10: "READ(10)", WRITE_10: "WRITE(10)"}

INQUIRY_DATA = (bytes([0x00, 0x00, 0x05, 0x02, 31, 0, 0, 0])      # disk, SPC-3, 31 more bytes
                + b"VMKIT   " + b"VIRTUAL SCSI DSK" + b"1.0 ")
assert len(INQUIRY_DATA) == 36


class Check(Exception):
    """Ends a command with CHECK CONDITION (internal: never leaves this module)."""
    def __init__(self, key, asc, ascq=0, dma_error=False):
        super().__init__(key, asc)
        self.key, self.asc, self.ascq, self.dma_error = key, asc, ascq, dma_error


class Request:
    """The request block as the adapter fetched it at doorbell time."""
    def __init__(self, addr, raw):
        (self.cdb_length, self.lun, _, _, _, _, self.flags, self.data_addr,
         self.data_length, _, self.cdb) = struct.unpack(RB_FORMAT, raw)
        self.addr, self.opcode = addr, self.cdb[0]
        self.lba = self.blocks = 0
        if self.opcode in (READ_10, WRITE_10):
            self.lba = struct.unpack_from(">I", self.cdb, 2)[0]
            self.blocks = struct.unpack_from(">H", self.cdb, 7)[0]

    @property
    def op_name(self):
        return OPCODES.get(self.opcode, f"opcode {self.opcode:#04x}")


class SCSIController:
    def __init__(self, board, base, irq, disk, latency=200, name="scsi0"):
        self.board, self.base, self.irq, self.disk = board, base, irq, disk
        self.latency, self.name = latency, name
        self.rb_addr = self.status = self.control = 0
        self.ignored_doorbells = 0
        self.completed = 0
        self.sense = (NO_SENSE, 0, 0)            # what REQUEST SENSE reports next
        self._request = None                     # in flight, or None
        self._line = False
        board.ports.attach(self, base, NPORTS)

    # ---- port I/O --------------------------------------------------------
    def io_read(self, offset, size):
        reg = offset & ~3
        value = {RB_ADDR: self.rb_addr, STATUS: self.status,
                 CONTROL: self.control}.get(reg, 0)
        return value >> 8 * (offset & 3)

    def io_write(self, offset, size, value):
        reg, shift = offset & ~3, 8 * (offset & 3)
        lane = ((1 << 8 * size) - 1) << shift
        value = (value << shift) & lane & 0xFFFFFFFF
        if reg == RB_ADDR:                       # r/w: a narrow write changes only its bytes
            self.rb_addr = (self.rb_addr & ~lane) | value
        elif reg == DOORBELL:
            self._doorbell()
        elif reg == STATUS:                      # write 1s to clear
            self.status &= ~(value & (ST_DONE | ST_RBERR))
        elif reg == CONTROL:
            self.control = ((self.control & ~lane) | value) & CTL_IE
        self._update_irq()

    def _update_irq(self):
        level = bool(self.status & ST_DONE and self.control & CTL_IE)
        if level != self._line:
            self._line = level
            (self.board.pic.raise_line if level else self.board.pic.lower_line)(self.irq)

    # ---- a request's life --------------------------------------------------
    def _doorbell(self):
        if self.status & ST_BUSY:
            self.ignored_doorbells += 1
            self.board.trace.emit("scsi.busy", device=self.name, ignored=self.ignored_doorbells)
            return
        addr = self.rb_addr
        try:
            self._request = Request(addr, self.board.memory.read(addr, RB_SIZE))
            r = self._request
            self.board.trace.emit("scsi.request", device=self.name, op=r.op_name, lba=r.lba,
                                  blocks=r.blocks, rb=addr)
        except ValueError:                       # BusError: the block is not in RAM
            self._request = addr
            self.board.trace.emit("scsi.request", device=self.name, op="unreadable block",
                                  lba=0, blocks=0, rb=addr)
        self.status |= ST_BUSY
        self.board.schedule(self.latency, self._complete)

    def _complete(self):
        r, self._request = self._request, None
        self.status &= ~ST_BUSY
        self.completed += 1
        if not isinstance(r, Request):
            self.status |= ST_DONE | ST_RBERR
            self.board.trace.emit("scsi.complete", device=self.name, status="RBERR",
                                  sense="-", transferred=0)
            self._update_irq()
            return
        flags, transferred = r.flags & ~FLAG_DMA_ERROR, 0
        try:
            transferred = self._execute(r)
            status, sense = GOOD, (NO_SENSE, 0, 0)
        except Check as c:
            status, sense = CHECK_CONDITION, (c.key, c.asc, c.ascq)
            flags |= FLAG_DMA_ERROR if c.dma_error else 0
        if r.opcode != REQUEST_SENSE or status != GOOD:
            self.sense = sense
        try:                                     # write back: status, sense, flags, transferred
            # code=False: these fields are never instructions, so skip the costly flush of
            # the CPUs' translated code (~4 us per CPU, measured); data buffers keep it
            self.board.memory.write(r.addr + 2, struct.pack("<BBBBH", status, *sense, flags),
                                    code=False)
            self.board.memory.write(r.addr + 16, struct.pack("<I", transferred), code=False)
        except ValueError:                       # the block straddles the end of RAM
            self.status |= ST_RBERR
        self.status |= ST_DONE
        self.board.trace.emit("scsi.complete", device=self.name, status=status,
                              sense="%x/%02x/%02x" % sense, transferred=transferred)
        self._update_irq()

    # ---- commands ----------------------------------------------------------
    def _execute(self, r):
        """Run one command; returns bytes transferred or raises Check."""
        need = 6 if r.opcode < 0x20 else 10
        if r.opcode not in OPCODES:
            raise Check(ILLEGAL_REQUEST, ASC_INVALID_OPCODE)
        if r.lun != 0:
            raise Check(ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED)
        if not need <= r.cdb_length <= 16:
            raise Check(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
        if r.opcode == TEST_UNIT_READY:
            return 0
        if r.opcode == INQUIRY:                   # allocation length: cdb[3..4]
            if r.cdb[1] & 1:                      # EVPD: no vital product data pages here
                raise Check(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
            alloc = struct.unpack_from(">H", r.cdb, 3)[0]
            return self._to_host(r, INQUIRY_DATA[:min(alloc, r.data_length)])
        if r.opcode == REQUEST_SENSE:             # fixed format; allocation length: cdb[4]
            key, asc, ascq = self.sense
            data = bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0])
            self.sense = (NO_SENSE, 0, 0)
            return self._to_host(r, data[:min(r.cdb[4], r.data_length)])
        if r.opcode == READ_CAPACITY_10:
            if r.data_length < 8:
                raise Check(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
            return self._to_host(r, struct.pack(">II", self.disk.sectors - 1, SECTOR))
        # READ(10) / WRITE(10)
        if r.lba + r.blocks > self.disk.sectors:
            raise Check(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
        nbytes = r.blocks * SECTOR
        if r.data_length < nbytes:
            raise Check(ILLEGAL_REQUEST, ASC_INVALID_FIELD)
        if r.opcode == READ_10:
            try:
                data = self.disk.read(r.lba, r.blocks)
            except (OSError, DiskImageError):
                raise Check(MEDIUM_ERROR, ASC_READ_ERROR) from None
            return self._to_host(r, data)
        if self.disk.readonly:
            raise Check(DATA_PROTECT, ASC_WRITE_PROTECTED)
        try:
            data = self.board.memory.read(r.data_addr, nbytes)
        except ValueError:
            raise Check(HARDWARE_ERROR, ASC_INTERNAL_FAILURE, dma_error=True) from None
        try:
            self.disk.write(r.lba, data)
        except (OSError, DiskImageError):
            raise Check(MEDIUM_ERROR, ASC_WRITE_ERROR) from None
        return nbytes

    def _to_host(self, r, data):
        """DMA `data` into the request's buffer (may hold code: a boot loader reads a kernel)."""
        if not data:
            return 0
        try:
            self.board.memory.write(r.data_addr, data)
        except ValueError:
            raise Check(HARDWARE_ERROR, ASC_INTERNAL_FAILURE, dma_error=True) from None
        return len(data)

    def close(self):
        """Flush and close the disk image (the board's close() calls this)."""
        self.disk.close()

    def __repr__(self):
        return f"<SCSIController {self.name} at {self.base:#x} irq {self.irq}>"
