"""The vmkernel image: a header, then x86 code linked at address 0 plus a
relocation table, so the loader can put it wherever the COS's memory is.

Header (44 bytes, little-endian):
    magic "VMKERNEL" | u32 version | u32 image size | u32 CRC-32 of the rest
    u32 entry | u32 stubs | u32 dispatch | u32 system world loop | u32 dispatched
    | u32 relocations
`dispatch` is where the Python dispatcher runs (a breakpoint); `dispatched`
the x86 just past it, which goes where the frame's vector slot says: a VMM
that has handled its guest's fault jumps there (vmm/region.py), one that has
not jumps to `dispatch`.
Offsets are from the start of the image. The relocation table (u32 count,
then u32 offsets of absolute addresses to add the load base to) is found
by assembling the code twice, at two origins, and comparing: the words
that differ by the difference are addresses. The code's first instruction
(TAKEOVER, just after the header) is where the loading module sets EIP: the
takeover's lgdt, lidt, ltr and far jump to `entry`, run by the CPU.
"""
import struct
import zlib

from vmkit.hw.asm import assemble
from vmkit.hw.x86 import ERROR_CODE_VECTORS
from . import layout, mapcache, smp, switch_x86, unload
from .frame import EXIT, Frame

MAGIC = b"VMKERNEL"
VERSION = 3
HEADER = struct.Struct("<8sIIIIIIIII")
STUB_SIZE = 16
TAKEOVER = HEADER.size            # the code's first instruction: where the loading module sets EIP


class KernelImageError(ValueError):
    pass


def kernel_source(load=switch_x86.LOAD):
    """Entry code, one 16-byte stub per vector, the common path into the
    dispatcher, and the world switch (switch.py; `load`: its loading part)."""
    stubs = []
    for v in range(256):
        push_error = "" if v in ERROR_CODE_VECTORS else "push 0\n"
        stubs.append(f".align 16\nstub_{v}:\n{push_error}push {v:#x}\njmp common")
    return f"""
takeover:                       ; the code's first byte: the loading module sets EIP here and
        cli                     ; the CPU runs it in the COS's own flat code segment, CPL 0
        lgdt [{layout.TAKEOVER_GDTR:#x} + base]   ; the kernel's tables, whose operands the
        lidt [{layout.TAKEOVER_IDTR:#x} + base]   ; loading module wrote into kernel memory
        mov ax, {layout.KERNEL_TSS_SEL:#x}
        ltr ax                  ; the CPU checks the descriptor (an available TSS) and marks it busy
        jmp {layout.KERNEL_CODE_SEL:#x}:entry + {HEADER.size:#x}  ; CS from the kernel's GDT (labels count
                                ; from the code's start, the image from its header)
entry:                          ; CPL 0, kernel GDT/IDT/TSS loaded (by the takeover above)
        mov ax, {layout.KERNEL_DATA_SEL:#x}  ; the kernel's own data segment: the COS's ends below it
        mov ds, ax
        mov es, ax
        mov fs, ax
        mov gs, ax
        mov ss, ax
        mov esp, {layout.STACK_TOP:#x} + base
        push 0                  ; a frame like a trap's: the dispatcher fills it in
        push 0                  ; to return to the COS, displaced, where it called us
        push 0
        push 0
        push 0
        push 0                  ; error code
        push 0x100              ; "vector" 0x100: kernel initialisation
        push {layout.COS_DATA_SEL:#x}           ; the COS's data segments (DPL 1): what the exit's
        push {layout.COS_DATA_SEL:#x}           ; pops load for it (an iretd to CPL 1 would null a
        push {layout.COS_DATA_SEL:#x}           ; DPL 0 one)
        push {layout.COS_DATA_SEL:#x}
        pushad
        jmp dispatch
{chr(10).join(stubs)}
.align 16
common: push ds                 ; the interrupted code's data segments, into the frame ...
        push es
        push fs
        push gs
        pushad
        mov ax, {layout.KERNEL_DATA_SEL:#x}  ; ... and the kernel's own: its memory lies past the
        mov ds, ax              ; limit of the COS's (and a VM's DS is the VM's)
        mov es, ax
dispatch:                       ; the Python dispatcher runs here (CPU.on_execute)
        nop
dispatched:                     ; (a VMM that decided comes here: vmm/region.py)
        mov eax, [esp + {Frame.OFFSET['vector']}]     ; where to go: the dispatcher leaves it in the frame's vector
        cmp eax, 1              ; slot, on this CPU's own stack (a shared variable would race)
        je idle
        cmp eax, 2
        je work
        cmp eax, {layout.GO_SWITCH}
        je world_switch
{mapcache.DISPATCH_SOURCE}
{unload.X86_DISPATCH}
{EXIT}
idle:   sti                     ; nothing to run: wait for an interrupt
        hlt
        cli
        jmp dispatch
system_world:                   ; each CPU's system world's thread (smp.py): CPL 0, its own
        sti                     ; stack and address space; every interrupt enters the kernel
        hlt                     ; from here and the scheduler may switch to a VM
        jmp system_world
work:   sti                     ; the kernel's own work, interruptible: the COS waits
        mov ecx, [{layout.WORK_LENGTH:#x} + base]
more:   inc dword ptr [{layout.WORK_DONE:#x} + base]
        loop more
        cli
        jmp dispatch
{switch_x86.x86_source(load)}
{mapcache.KERNEL_SOURCE}
{unload.X86}
{smp.KERNEL_SOURCE}
"""


def _assemble_at(origin, load):
    src = kernel_source(load).replace("+ base", f"+ {origin:#x}")
    return assemble(src, origin)


def _label_offsets(load=switch_x86.LOAD):
    """Where entry, the stubs and the dispatcher landed: a marked label table appended."""
    names = ["takeover", "entry", "dispatch", "system_world", "dispatched"] + [f"stub_{v}" for v in range(256)]
    probe = kernel_source(load) + "\n.long 0x4c42414c\n.long " + ", ".join(names) + "\n"
    code = assemble(probe.replace("+ base", "+ 0"), 0)
    at = code.rfind(struct.pack("<I", 0x4C42414C)) + 4
    takeover, entry, dispatch, system_world, dispatched, *stubs = struct.unpack_from(f"<{len(names)}I", code, at)
    if takeover != 0:
        raise AssertionError("the takeover is not the kernel code's first instruction")
    if any(b - a != STUB_SIZE for a, b in zip(stubs, stubs[1:])):
        raise AssertionError("kernel stubs are not 16 bytes apart")
    return entry, stubs[0], dispatch, system_world, dispatched


def build(load=switch_x86.LOAD):
    """The image bytes, as a vendor would ship them (`load`: the world switch's
    loading part, switch_x86.LOAD unless exercise 06 gives its own)."""
    shift = 0x10000000
    low, high = _assemble_at(0, load), _assemble_at(shift, load)
    relocs = [i for i in range(0, len(low) - 3)
              if struct.unpack_from("<I", high, i)[0] - struct.unpack_from("<I", low, i)[0] == shift]
    entry, stubs, dispatch, system_world, dispatched = _label_offsets(load)
    code_start = HEADER.size
    reloc_table = struct.pack(f"<I{len(relocs)}I", len(relocs), *(code_start + r for r in relocs))
    body = low + reloc_table
    fields = [entry + code_start, stubs + code_start, dispatch + code_start,
              system_world + code_start, dispatched + code_start, code_start + len(low)]
    size = HEADER.size + len(body)
    crc = zlib.crc32(struct.pack(f"<{len(fields)}I", *fields) + body)
    return HEADER.pack(MAGIC, VERSION, size, crc, *fields) + body


class KernelImage:
    """A checked image: refuse anything but a whole, intact vmkernel."""

    def __init__(self, data, room):
        data = bytes(data)
        if len(data) < HEADER.size:
            raise KernelImageError(f"kernel image is {len(data)} bytes, shorter than its header")
        magic, version, size, crc, *fields = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise KernelImageError(f"not a vmkernel image: magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise KernelImageError(f"kernel image version {version}, this loader knows {VERSION}")
        if size != len(data):
            raise KernelImageError(f"kernel image says {size} bytes but is {len(data)}")
        if size > room:
            raise KernelImageError(f"kernel image of {size} bytes does not fit the {room} bytes reserved for its code")
        if zlib.crc32(struct.pack(f"<{len(fields)}I", *fields) + data[HEADER.size:]) != crc:
            raise KernelImageError("kernel image checksum mismatch: the image is corrupt")
        self.data = data
        self.entry, self.stubs, self.dispatch, self.system_world, self.dispatched, relocs = fields
        self.relocations = self._relocation_table(relocs)
        self._check_code_offsets(relocs)

    def _relocation_table(self, at):
        """The table's u32 count and offsets, checked to lie inside the image: a
        correct CRC says only that the vendor's bytes arrived, not that they add up."""
        size = len(self.data)
        if not HEADER.size <= at <= size - 4:
            raise KernelImageError(f"kernel image header: relocation table at offset {at:#x} "
                                   f"is outside the image ({HEADER.size:#x}..{size - 4:#x})")
        count = struct.unpack_from("<I", self.data, at)[0]
        if count > (size - at - 4) // 4:
            raise KernelImageError(f"kernel image relocation table: {count} entries at offset {at:#x} "
                                   f"run past the image's {size} bytes")
        relocations = struct.unpack_from(f"<{count}I", self.data, at + 4)
        for i, off in enumerate(relocations):
            if not HEADER.size <= off <= at - 4:
                raise KernelImageError(f"kernel image relocation entry {i}: offset {off:#x} is outside "
                                       f"the code ({HEADER.size:#x}..{at:#x})")
        return relocations

    def _check_code_offsets(self, code_end):
        """Entry, dispatcher, system world, the x86 after the dispatcher and all 256
        stubs must be inside the code, which runs from the header to the relocation table."""
        spans = {"entry": (self.entry, 1), "dispatch": (self.dispatch, 1), "dispatched": (self.dispatched, 1),
                 "system world": (self.system_world, 1), "stubs": (self.stubs, 256 * STUB_SIZE)}
        for name, (off, length) in spans.items():
            if not HEADER.size <= off <= code_end - length:
                raise KernelImageError(f"kernel image header: {name} offset {off:#x} (+{length:#x} bytes) "
                                       f"is outside the code ({HEADER.size:#x}..{code_end:#x})")

    def relocated(self, base):
        """The image as it must sit at `base`: every absolute address moved."""
        out = bytearray(self.data)
        for off in self.relocations:
            struct.pack_into("<I", out, off, (struct.unpack_from("<I", out, off)[0] + base) & 0xFFFFFFFF)
        return bytes(out)

    def stub(self, vector):
        return self.stubs + vector * STUB_SIZE
