"""The loading module (claims 2-4, 26-27, 29-30).

The load-call module is a driver the COS installs (insmod). Its init asks
the COS for memory and calls the loading module, whose entry is an address
in that driver's code: a stub where this Python hands over (CPU.on_execute).
The loading module checks the vmkernel image, copies it into the COS's
memory block, builds the kernel's GDT, TSS and IDT there (every gate into
the kernel's stubs), takes every byte from that block up away from the COS
(its segments now end below the block, its allocator's RAM top is the
block's base: as ESX left its console OS the low part of memory), writes
the lgdt/lidt operands there, and sets EIP to the kernel code's first
instruction. The CPU does the rest, in the COS's flat code segment: cli,
lgdt, lidt, ltr (which checks the TSS descriptor, written available, and
marks it busy) and a far jump to the kernel's entry. From then on every
interrupt and fault goes to the kernel. Each step is a trace event carrying
the registers it changed (load.switched: read back from the CPU at the
kernel's first dispatch), which notebook 02 steps through.

The same module's exit (the COS's `rmmod`) asks the kernel to unload
(kernel/unload.py); back at CPL 0 it calls the loading module's second
entry, `unloaded`, which gives the kernel's block back to the COS.
"""
import struct

from vmkit.hw.x86 import (encode_gate, encode_segment, encode_tss, CODE_RX, DATA_RW,
                          TSS_AVAILABLE, GATE_INT32)
from vmkit.cos import layout as cos_layout
from vmkit.cos.cos import COS
from vmkit.kernel import layout
from vmkit.kernel.image import KernelImage, KernelImageError, TAKEOVER, build as build_image
from vmkit.kernel.kernel import Kernel
from vmkit.kernel.worlds import VM_TICK
from vmkit.kernel.unload import CALL as UNLOAD_CALL, give_back
from vmkit.vmm.vmm import VMM

SYSCALL_VECTOR = 0x90          # requests for system resources (kernel/syscalls.py)
COS_VECTORS = {3, SYSCALL_VECTOR}   # vectors the COS, at CPL 1, may raise with int / int3
COS_PORTS = range(0x3F8, 0x400)     # the serial console stays the COS's (host-managed)
OK, REFUSED = 0, 1


class LoadError(ValueError):
    pass


def build_kernel_idt(stubs, selector, cos_vectors):
    """256 interrupt gates, gate v -> stubs[v] in the kernel's code segment.

    A gate's DPL says who may reach it with `int n`: 0 for all but the
    vectors the de-privileged COS raises on purpose (DPL 1). Exercise 02a."""
    return b"".join(encode_gate(stubs[v], selector, GATE_INT32, 1 if v in cos_vectors else 0)
                    for v in range(256))


def kernel_gdt(cos_limit=0xFFFFFFFF):
    """The kernel's GDT up to its TSS. The COS keeps its selectors, now DPL 1 and
    ending at `cos_limit` (the last byte below the kernel): paging cannot keep CPL 1
    out of supervisor pages, a segment limit can (the platform checks it, hw/limits.py)."""
    flat = 0xFFFFFFFF
    entries = [bytes(8),
               encode_segment(0, cos_limit, CODE_RX, layout.COS_RPL),  # 0x08: the COS's code, now DPL 1
               encode_segment(0, cos_limit, DATA_RW, layout.COS_RPL),  # 0x10: the COS's data, now DPL 1
               bytes(8),                                             # 0x18: the COS's TSS: not any more
               encode_segment(0, flat, CODE_RX, 0),                  # 0x20: kernel code
               encode_segment(0, flat, DATA_RW, 0)]                  # 0x28: kernel data
    return entries


def _asm_string(label, text):
    return f"{label}: .byte " + ", ".join(str(b) for b in text.encode() + b"\n\0")


WHY_SIZE = 160                  # the load-call module's last bytes: why the loading module refused


def load_call_module_source():
    """The load-call module: a COS driver (claim 3) whose init calls the loading module.

    It asks first, with no block (eax = 0), whether a load could go ahead (the
    image intact, no vmkernel running yet), so a refusal costs the COS no memory.
    On a refusal it prints the loading module's reason once and its init returns
    -1, so the COS's insmod reports that it failed; 0 when the kernel runs.
    Its exit (rmmod) asks the kernel to unload (int 0x90, EAX = 4): a refusal
    is printed the same way; back at CPL 0 it calls `unloading_module`."""
    alloc, print_ = cos_layout.COS_EXPORTS, cos_layout.COS_EXPORTS + 4
    return f"""
loading_module:                 ; the loading module's entry: its Python runs here
        ret
unloading_module:               ; its second entry, after the unload: frees the kernel's block
        ret
init:   pushad
        mov esi, msg_loading
        call dword ptr [{print_:#x}]
        xor eax, eax                    ; no block yet: may a load go ahead?
        call loading_module             ; eax = 0 if so; if not, `why` says why
        test eax, eax
        jnz refused
        mov ecx, {layout.KERNEL_PAGES}
        call dword ptr [{alloc:#x}]     ; memory for the kernel, from the COS
        mov esi, msg_no_memory
        test eax, eax
        jz refused_because
        mov ecx, {layout.KERNEL_PAGES}
        call loading_module             ; eax = block, ecx = pages; returns eax = 0 if loaded
        test eax, eax
        jnz refused
        mov esi, msg_running
        call dword ptr [{print_:#x}]
        mov eax, 3                      ; hand the kernel the COS's device list (claim 5)
        mov ebx, {cos_layout.COS_DEVICES:#x}
        int 0x90
        mov esi, msg_handed
        call dword ptr [{print_:#x}]
        popad
        xor eax, eax                    ; init succeeded
        ret
refused:
        mov esi, why
refused_because:
        push esi
        mov esi, msg_refused
        call dword ptr [{print_:#x}]
        pop esi
        call dword ptr [{print_:#x}]
        popad
        mov eax, -1                     ; init failed: the COS's insmod says so
        ret
{_asm_string("msg_loading", "vmkload: loading the vmkernel")}
{_asm_string("msg_running", "vmkload: vmkernel running; COS displaced")}
{_asm_string("msg_handed", "vmkload: device list handed over")}
{_asm_string("msg_no_memory", f"the COS has no {layout.KERNEL_PAGES} free pages for the kernel")}
msg_refused: .byte {", ".join(str(b) for b in b"vmkload: refused: " + bytes(1))}
exit:   pushad                          ; rmmod: the kernel halts and gives the COS its machine back
        mov ax, cs
        test al, 3
        mov esi, msg_no_kernel
        jz refused_because              ; at CPL 0 already: no vmkernel displaces the COS
        mov esi, msg_unloading
        call dword ptr [{print_:#x}]
        mov eax, {UNLOAD_CALL}                      ; unload; ebx: where to say why not
        mov ebx, why
        int 0x90                        ; returns at CPL 0, in the COS's own tables, or refused
        test eax, eax
        jnz refused
        call unloading_module           ; the kernel's block back to the COS, cleared
        mov esi, msg_unloaded
        call dword ptr [{print_:#x}]
        popad
        xor eax, eax
        ret
{_asm_string("msg_unloading", "vmkload: unloading the vmkernel")}
{_asm_string("msg_unloaded", "vmkload: vmkernel unloaded; COS at CPL 0")}
{_asm_string("msg_no_kernel", "no vmkernel is loaded")}
why:    .fill {WHY_SIZE}, 1, 0          ; last: the loading module writes its reason here
"""


class Loader:
    def __init__(self, board, image=None, build_idt=build_kernel_idt, emulate_if=None, vm_tick=VM_TICK):
        """build_idt and emulate_if are where exercises 02a and 02b plug in. vm_tick:
        instructions per tick while a VM runs (default a real kernel's 100 Hz); None
        gives VMs the COS's PIT tick, for lessons that show single IRQs."""
        self.board = board
        if image is not None and not isinstance(image, (bytes, bytearray, memoryview)):
            raise TypeError(f"a kernel image is bytes (kernel.image.build() makes one), "
                            f"not {type(image).__name__} {image!r:.40}")
        for name, fn in (("build_idt", build_idt), ("emulate_if", emulate_if)):
            if not callable(fn) and not (fn is None and name == "emulate_if"):
                raise TypeError(f"{name} must be a function, not {fn!r:.40}")
        if vm_tick is not None and (not isinstance(vm_tick, int) or isinstance(vm_tick, bool) or vm_tick < 1):
            raise ValueError(f"a VM tick is a positive number of instructions or None, not {vm_tick!r:.40}")
        self.image = build_image() if image is None else bytes(image)
        self.build_idt = build_idt
        self.emulate_if = emulate_if
        self.vm_tick = vm_tick
        self.kernel = None
        self.module = COS.make_module(load_call_module_source(), init_label="init", exit_label="exit")
        self.entry = cos_layout.MODULE_AREA + 16          # `loading_module` is the first byte
        self.why = cos_layout.MODULE_AREA + len(self.module) - WHY_SIZE
        self.ram = None               # the COS's allocator before the load (unload.py gives it back)
        for cpu in board.cpus:
            cpu.on_execute(self.entry, self.load)
            cpu.on_execute(self.entry + 1, self.unloaded)

    def load(self, cpu):
        """The loading module runs: eax = the COS's block, ecx = its pages."""
        code = len(self.module) - WHY_SIZE
        if self.board.memory.read(cos_layout.MODULE_AREA, code) != self.module[:code]:
            return                    # another module's first instruction: not the loader's stub
        base, pages = cpu["eax"], cpu["ecx"]
        if base == 0:                 # asked first, before the COS gives memory: may it go ahead?
            try:
                self._check_image()
                cpu["eax"] = OK
            except (LoadError, KernelImageError) as e:
                self._refuse(cpu, e)
            return
        self.board.trace.emit("load.called", cpu.index, block=base, pages=pages, eip=cpu["eip"])
        try:
            image = self._check(base, pages)
            idt = self._kernel_idt(base, image)
        except (LoadError, KernelImageError) as e:
            self._refuse(cpu, e)
            return
        mem = self.board.memory
        self.ram = (mem.read_u32(cos_layout.RAM_TOP), base, base + pages * layout.PAGE)
        mem.write(base, image.relocated(base))
        self.board.trace.emit("load.copied", cpu.index, at=base, size=len(image.data))
        mem.write(base + layout.IDT, idt, code=False)
        self.board.trace.emit("load.idt", cpu.index, at=base + layout.IDT, gates=256)
        tss = encode_tss(base + layout.STACK_TOP, layout.KERNEL_DATA_SEL, allowed_ports=COS_PORTS)
        gdt = kernel_gdt(base - 1) + [encode_segment(base + layout.TSS, len(tss) - 1, TSS_AVAILABLE, 0, s=0, db=0, g=0)]
        mem.write(base + layout.TSS, tss, code=False)
        mem.write(base + layout.GDT, b"".join(gdt), code=False)
        mem.write(base + layout.TAKEOVER_GDTR, struct.pack("<HI", len(gdt) * 8 - 1, base + layout.GDT), code=False)
        mem.write(base + layout.TAKEOVER_IDTR, struct.pack("<HI", 256 * 8 - 1, base + layout.IDT), code=False)
        self.kernel = Kernel(self.board, base, image, cos_state=self._cos_state(cpu), monitor=VMM)
        self.kernel.ram = self.ram
        if self.emulate_if is not None:
            self.kernel.emulate_if = self.emulate_if
        self.kernel.worlds.vm_tick = self.vm_tick
        before = {r: cpu[r] for r in ("eip", "idtr", "gdtr", "tr", "cs")}
        self.kernel.on_entered = lambda c: self._switched(c, before)
        mem.write_u32(cos_layout.RAM_TOP, base)   # the COS keeps the memory below the kernel
        cpu["eip"] = base + TAKEOVER              # the kernel's x86 loads its tables and CS itself

    def _switched(self, cpu, before):
        """The kernel's first dispatch: what the takeover's lgdt, lidt, ltr and far
        jump loaded, read back from the CPU. EIP is the entry the far jump named (the
        CPU is past it by now, at the dispatcher, in the CS the jump loaded)."""
        cpu.descriptors_changed()                 # the platform checks the COS's new limits
        self.board.trace.emit("load.switched", cpu.index,
                              eip=f"{before['eip']:#x}->{self.kernel.base + self.kernel.image.entry:#x}",
                              idtr=f"{before['idtr'][1]:#x}->{cpu['idtr'][1]:#x}",
                              gdtr=f"{before['gdtr'][1]:#x}->{cpu['gdtr'][1]:#x}",
                              tr=f"{before['tr'][0]:#x}->{cpu['tr'][0]:#x}",
                              cs=f"{before['cs']:#x}->{cpu['cs']:#x}")

    def unloaded(self, cpu):
        """The module's exit is back at CPL 0 after the kernel's unload: the
        kernel's block goes back to the COS (kernel/unload.py: give_back)."""
        code = len(self.module) - WHY_SIZE
        if self.board.memory.read(cos_layout.MODULE_AREA, code) != self.module[:code]:
            return
        if self.kernel is None or self.kernel.unloading != "done" or cpu.cpl != 0:
            return                    # not after an unload: the stub is a plain ret
        give_back(self.kernel, cpu)
        self.kernel, self.ram = None, None

    def _refuse(self, cpu, error):
        """Say why in the trace and in the module's `why` (its init prints it);
        `ret` runs next with eax = REFUSED, and the COS goes on as it was."""
        self.board.trace.emit("load.refused", cpu.index, why=str(error))
        text = str(error).encode("ascii", "replace")[:WHY_SIZE - 2] + b"\n\0"
        self.board.memory.write(self.why, text, code=False)
        cpu["eax"] = REFUSED

    def _check_image(self):
        if self.kernel is not None:
            raise LoadError(f"a vmkernel is already loaded (at {self.kernel.base:#x})")
        return KernelImage(self.image, room=layout.DATA)

    def _check(self, base, pages):
        image = self._check_image()
        if base % layout.PAGE or pages * layout.PAGE < layout.KERNEL_SIZE:
            raise LoadError(f"the COS's block {base:#x} x {pages} pages is not a page-aligned "
                            f"{layout.KERNEL_SIZE:#x} bytes")
        self.board.memory.check(base, pages * layout.PAGE)
        return image

    def _kernel_idt(self, base, image):
        """build_idt's table, made before anything is copied: a build_idt that fails
        or gives the wrong size refuses the load, and the COS goes on as it was.
        (An exercise stub's NotImplementedError goes on up: the grader reads it
        as "not attempted".)"""
        try:
            idt = self.build_idt([base + image.stub(v) for v in range(256)],
                                 layout.KERNEL_CODE_SEL, COS_VECTORS)
        except NotImplementedError:
            raise
        except Exception as e:
            raise LoadError(f"build_idt failed: {type(e).__name__}: {e}") from e
        if not isinstance(idt, (bytes, bytearray, memoryview)):
            raise LoadError(f"build_idt must give bytes, it gave {type(idt).__name__}")
        if len(idt) != 256 * 8:
            raise LoadError(f"the kernel IDT must be 2048 bytes, build_idt gave {len(idt)}")
        return bytes(idt)

    def _cos_state(self, cpu):
        """What the COS was when it called: the kernel returns there, displaced."""
        s = cpu.state()
        s["return_eip"] = self.board.memory.read_u32(s["esp"])     # pushed by `call loading_module`
        return s
