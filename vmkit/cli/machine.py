"""The machine a `vmkit` subcommand runs, from a description (description.py):
built by the lessons' builder (takeover: the COS boots, insmod loads the
vmkernel, which displaces it), VMs installed through the kernel, and run with
its external inputs applied at their virtual times."""
import base64

from vmkit.kernel.worlds import VMError
from vmkit.lessons import takeover
from .description import BUILTIN_GUESTS, UsageError

CHUNK = 100_000                 # instructions between looks at the machine (progress, panic)


class MachineFailed(Exception):
    """The machine did not come up (the COS's boot or the kernel's load did not
    finish): exit status 1, one line, like a panic."""


class Machine:
    """A booted COS, the vmkernel loaded, VMs installed: run it with its inputs."""

    def __init__(self, desc):
        self.desc = desc
        try:
            self.board, self.cos, loader = takeover.takeover(timer_period=desc["timer_period"],
                                                             cpus=desc["cpus"], nics=desc["nics"],
                                                             vm_tick=None)   # timer_period ticks every world
            self.kernel = loader.kernel
            self.kernel.worlds.quantum = desc["quantum"]
            self.vms = [self.kernel.install_vm(self._guest(vm), vm["memory"], vm["name"], vm["cpu"])
                        for vm in desc["vms"]]
        except (VMError, ValueError) as e:
            raise UsageError(f"cannot build the machine: {e}") from None
        except (TimeoutError, RuntimeError) as e:
            raise MachineFailed(f"the machine did not come up: {e}") from None
        self.start = self.board.clock
        self.inputs = list(desc["inputs"])

    @staticmethod
    def _guest(vm):
        guest = vm["guest"]
        if isinstance(guest, str):
            return lambda base, n=vm["name"]: BUILTIN_GUESTS[guest](base, n)
        image = base64.b64decode(guest["image"])
        if guest["source"]:
            return image.decode("latin-1")           # assembled at 0 by install_vm
        return image

    def panic(self):
        """Why the machine stopped, or None: a CPU shut down (a vmkernel panic,
        a triple fault), or the COS took a fault of its own."""
        for cpu in self.board.cpus:
            if cpu.shutdown:
                return f"CPU {cpu.index} stopped: {cpu.shutdown}"
        if self.cos.var("FAULTS"):
            faults = [line for line in self.cos.console().splitlines() if "fault" in line]
            return f"the COS faulted: {faults[-1] if faults else 'see its console'}"
        return None

    def run(self, instructions=None, step=None):
        """Run `instructions` of virtual time (default: the description's),
        applying each input at its time (`at`, counted from the end of the
        build); stops early at a panic. Yields the virtual time run so far
        after each piece, for a progress bar or a live view. The size of the
        pieces does not change the trace (measured: one run of 300,000, thirty
        of 10,000, or 12,345 and the rest give the same digest): device events
        and interrupts fire at their virtual times whatever Board.run is asked."""
        total = self.desc["instructions"] if instructions is None else instructions
        end = self.board.clock + total
        step = step or CHUNK
        while self.board.clock < end:
            target = min(end, self.board.clock + step)
            if self.inputs:
                target = min(target, self.start + self.inputs[0]["at"])
            if target > self.board.clock:
                self.board.run(target - self.board.clock)
            while self.inputs and self.start + self.inputs[0]["at"] <= self.board.clock:
                self._apply(self.inputs.pop(0))
            yield total - (end - self.board.clock)
            if self.panic():
                return

    def run_all(self, instructions=None):
        for _ in self.run(instructions):
            pass

    def type_now(self, text):
        """Text typed from outside now (an interactive session): applied at this
        virtual time and kept with the description's inputs, so a recording has it."""
        x = {"at": self.board.clock - self.start, "serial": text}
        self.desc["inputs"].append(x)
        self._apply(x)

    def _apply(self, x):
        """An external input arrives: bytes on the COS's serial line, scancodes,
        a sensor event, or a frame on a NIC's wire."""
        if "serial" in x:
            self.board.uart.feed(x["serial"].encode("latin-1"))
        elif "keys" in x:
            self.board.keyboard.press(bytes(x["keys"]))
        elif "sensor" in x:
            getattr(self.board.sensor, x["sensor"])()
        else:
            self.board.nics[x["nic"]].receive(bytes.fromhex(x["frame"]))

    def consoles(self):
        """[(world, where, text)]: the COS's COM1, each VM's virtual serial port."""
        out = [("cos", "COM1", self.cos.console())]
        out += [(vm.name, f"virtual COM1, CPU {vm.cpu}", bytes(vm.vmm.console).decode("latin-1"))
                for vm in self.vms]
        return out

    def consoles_text(self, tail=0):
        """Each world's console, its last `tail` lines (0: all); crashed VMs noted."""
        out = []
        for name, where, text in self.consoles():
            lines = text.splitlines()
            shown = lines[-tail:] if tail else lines
            cut = f"  (last {len(shown)} of {len(lines)} lines)" if len(shown) < len(lines) else ""
            out += [f"== {name} ({where}) =={cut}", *shown]
        out += [f"vmkit: {vm.name} crashed: {vm.fault}" for vm in self.vms if vm.state == "crashed"]
        return "\n".join(out)
