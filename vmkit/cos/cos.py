"""The console OS on a board: boot it, talk to it, give it modules.

Everything the COS does happens in x86 (vmkit/cos/, see source.py); this class
only loads it, writes its configuration into COS data before boot, and
reads its state back from emulated memory. Nothing here counts ticks or
keeps a device list of its own.
"""
import struct
from typing import NamedTuple

from vmkit.hw.asm import AsmError, assemble, disassemble
from vmkit.hw.board import MachineStopped
from . import layout as L
from .source import build

# Instructions that behave differently (trap, or must be patched) once the COS
# runs at CPL 1 under another kernel.
SENSITIVE = ("cli", "sti", "hlt", "pushfd", "popfd", "iretd", "lgdt", "lidt", "ltr", "in", "out")


def _whole(n):
    return isinstance(n, int) and not isinstance(n, bool)


class CosDevice(NamedTuple):
    name: str
    port: int
    ports: int
    irq: int | None
    claimed: bool


class COS:
    def __init__(self, board):
        self.board = board
        self.code, self.symbols = build()

    # ---- boot ------------------------------------------------------------------
    @classmethod
    def boot(cls, board, timer_period=L.DEFAULT_TIMER_PERIOD, print_every=L.DEFAULT_PRINT_EVERY,
             wait=True, limit=1_000_000):
        """Load the COS, write its configuration, start CPU 0 at COS_ENTRY (CPL 0).

        With `wait`, run until the COS set READY (it printed "COS: ready" and
        enabled interrupts), at most `limit` instructions."""
        if not _whole(timer_period) or not 1 <= timer_period <= 0x10000:
            raise ValueError(f"timer period {timer_period!r} outside 1..65536 instructions")
        if not _whole(print_every) or print_every < 0:
            raise ValueError(f"print_every must be a whole number >= 0 (0: never), not {print_every!r}")
        if board.memory.size < L.PAGE_POOL:
            raise ValueError(f"the COS needs at least {L.PAGE_POOL >> 20} MiB of memory")
        cos = cls(board)
        board.load(L.COS_CODE, cos.code)
        write = board.memory.write_u32
        write(L.RAM_TOP, board.memory.size)
        write(L.TIMER_PERIOD, timer_period)
        write(L.PRINT_EVERY, print_every)
        board.boot(L.COS_ENTRY, stack=L.STACK_TOP)
        if wait:
            board.run_until(lambda: cos.var("READY") == 1, limit, "the COS booting")
        return cos

    # ---- reading the COS's memory -------------------------------------------------
    def var(self, name):
        """A named u32 variable of COS data (layout.VARIABLES), read from memory."""
        if name not in L.VARIABLES:
            raise KeyError(f"the COS has no variable {name!r}; it has {', '.join(L.VARIABLES)}")
        return self.board.memory.read_u32(L.VARIABLES[name])

    def ticks(self):
        return self.var("TICKS")

    def console(self):
        return self.board.uart.text

    def devices(self):
        """The COS's device list, decoded from COS_DEVICES in emulated memory."""
        mem = self.board.memory
        if mem.read(L.COS_DEVICES, 4) != L.DEVICES_MAGIC:
            return []
        count = min(mem.read_u32(L.COS_DEVICES + 4), L.MAX_DEVICES)
        out = []
        for i in range(count):
            raw = mem.read(L.COS_DEVICES + 8 + i * L.DEVICE_ENTRY, L.DEVICE_ENTRY)
            name, port, ports, irq = struct.unpack_from("<8sHHb", raw)
            out.append(CosDevice(name.rstrip(b"\0").decode("latin-1"), port, ports,
                                 None if irq < 0 else irq, raw[L.DEVICE_CLAIMED] == 1))
        return out

    def exports(self):
        """{export name: address}, as the COS wrote its exports table."""
        return {name: self.board.memory.read_u32(L.COS_EXPORTS + 4 * i)
                for i, name in enumerate(L.EXPORT_NAMES)}

    def sensitive_instructions(self):
        """[(address, mnemonic)] of the COS's privileged and flag-sensitive
        instructions, from a linear disassembly of its code (code comes
        before data, so the disassembly sees only instructions)."""
        end = self.symbols["cos_code_end"] - L.COS_CODE
        found = []
        for address, text in disassemble(self.board.memory.read(L.COS_CODE, end), L.COS_CODE):
            mnemonic = text.split()[0]
            if mnemonic in SENSITIVE:
                found.append((address, mnemonic))
        return found

    # ---- the console ---------------------------------------------------------------
    def type(self, text):
        """Characters arriving on COM1, as from a terminal."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"type text (str) or bytes, not {type(text).__name__} {text!r:.40}")
        self.board.uart.feed(text.encode("latin-1") if isinstance(text, str) else text)

    def run_command(self, line, limit=2_000_000, step=2_000):
        """Type `line` and Enter; run until the COS finished the command
        (its COMMANDS_DONE counter moved). Returns the console text printed
        since typing (the echo included). TimeoutError after `limit`."""
        if not isinstance(line, str) or not line.strip() or "\n" in line or "\r" in line:
            raise ValueError(f"one non-empty command line, not {line!r}")
        if not _whole(limit) or limit < 0 or not _whole(step) or step < 1:
            raise ValueError(f"limit and step are numbers of instructions, not {limit!r}, {step!r}")
        self._check_running(f"it reads no more commands ({line!r})")
        start, done = len(self.board.uart.output), self.var("COMMANDS_DONE")
        self.type(line + "\n")
        end = self.board.clock + limit
        while self.var("COMMANDS_DONE") == done:
            if self.board.cpu.shutdown:        # e.g. a kernel the command loaded panicked
                self._check_running(f"while it ran {line!r}")
            if self.board.clock >= end:
                raise TimeoutError(f"the COS did not finish {line!r} within {limit} instructions")
            if self.var("FAULTS"):
                break                          # the command faulted: return what it printed
            self.board.run(min(step, end - self.board.clock))
        return self.board.uart.output[start:].decode("latin-1")

    def _check_running(self, what):
        """The COS runs on CPU 0: if that CPU stopped (a triple fault, a kernel panic
        during insmod) say why, rather than wait for output that cannot come."""
        why = self.board.cpu.shutdown
        if why:
            raise MachineStopped(f"{why}: CPU 0 stopped, so the COS stopped {what}")
        if self.var("FAULTS"):
            raise RuntimeError(f"the COS has stopped (a fault); {what}")

    # ---- modules --------------------------------------------------------------------
    @staticmethod
    def make_module(asm_source, init_label="init", exit_label=None):
        """Assemble module code for MODULE_CODE and prepend the 16-byte header
        (magic, code size, init offset, exit offset: 0 when the module has no exit,
        which `rmmod` calls)."""
        if not isinstance(asm_source, str):
            raise TypeError(f"a module is x86 source text, not {type(asm_source).__name__} {asm_source!r:.40}")
        try:
            code = assemble(asm_source + f"\n.long {init_label}\n.long {exit_label or 0}", L.MODULE_CODE)
        except AsmError as e:
            if str(e).startswith(f"line {asm_source.count(chr(10)) + 2}:"):   # the .long
                raise AsmError(f"the module has no label {init_label!r} for its init") from None
            if str(e).startswith(f"line {asm_source.count(chr(10)) + 3}:"):
                raise AsmError(f"the module has no label {exit_label!r} for its exit") from None
            raise
        init, exit_ = struct.unpack("<II", code[-8:])
        init -= L.MODULE_CODE
        exit_ = exit_ - L.MODULE_CODE if exit_label else 0
        code = code[:-8]
        if not 0 <= init < len(code):
            raise ValueError(f"init label {init_label!r} is not inside the module's code")
        return struct.pack("<4sIII", L.MODULE_MAGIC, len(code), init, exit_) + code

    def put_module(self, image, verify=True):
        """Copy a module file into MODULE_AREA, as the administrator copies it.

        Refuses an image shorter than the header or larger than the area;
        with `verify` (the default) also one with a wrong magic, size or init
        offset. verify=False copies a corrupt file as-is, so that the COS's
        own x86 check can be seen refusing it."""
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise TypeError(f"a module file is bytes (COS.make_module builds one), "
                            f"not {type(image).__name__} {image!r:.40}")
        image = bytes(image)
        if len(image) < L.MODULE_HEADER:
            raise ValueError(f"a module file starts with a {L.MODULE_HEADER}-byte header; "
                             f"this one has {len(image)} bytes")
        if len(image) > L.MODULE_AREA_SIZE:
            raise ValueError(f"module of {len(image):#x} bytes does not fit the "
                             f"{L.MODULE_AREA_SIZE:#x}-byte module area")
        magic, size, init, _ = struct.unpack_from("<4sIII", image)
        if verify and (magic != L.MODULE_MAGIC or size != len(image) - L.MODULE_HEADER
                       or not init < size):
            raise ValueError(f"not a module file: magic {magic!r} (want {L.MODULE_MAGIC!r}), "
                             f"code size {size}, init offset {init}, "
                             f"{len(image) - L.MODULE_HEADER} bytes of code")
        self.board.memory.write(L.MODULE_AREA, image)
        self.board.trace.emit("cos.module_copied", address=L.MODULE_AREA, size=len(image))

    def insmod(self, image, limit=2_000_000):
        """put_module then the `insmod` command; returns what the COS printed."""
        self.put_module(image)
        return self.run_command("insmod", limit)
