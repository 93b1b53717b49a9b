"""The displaced COS tries to get out (notebook 09): each attempt is x86 in a COS
module, on a machine of its own, and what follows *refused* is what the machine
did about it: the CPU's CS as the COS's own code read it, the kernel's
`kernel.refused`, `kernel.cos_limit` and `kernel.cos_dma` events, the kernel's
IDT bytes before and after."""
from typing import NamedTuple

from vmkit.cos import layout as cos_layout
from vmkit.kernel import layout
from vmkit.lessons import takeover
from vmkit.lessons.devices import scratch_disk, scsi_driver


class Escape(NamedTuple):
    attempt: str
    refused: bool
    evidence: str       # what the machine shows

    def __str__(self):
        return f"{self.attempt}\n    {'refused' if self.refused else 'NOT REFUSED'}: {self.evidence}"


NOTE = 0x5000                   # COS memory the escaping module writes what it saw into


def _iretd_to(selector):
    """COS x86: iretd to `selector`:escaped with its own flags; at `escaped`, note CS
    as the CPU has it, then try to read CR0 (a CPL 0 instruction) and note it."""
    return f"""init:
        mov dword ptr [{NOTE:#x}], 0
        mov dword ptr [{NOTE + 4:#x}], 0
        pushfd
        push {selector:#x}
        mov eax, escaped
        push eax
        iretd
escaped:
        mov ax, cs
        mov [{NOTE:#x}], ax
        xor eax, eax
        mov eax, cr0
        mov [{NOTE + 4:#x}], eax
        xor eax, eax
        ret"""


def escapes():
    """The COS's ways out, each tried by x86 in a COS module on a machine of its own,
    each with what the machine did about it."""
    out = []
    board, cos, loader = takeover.takeover()
    kernel, m = loader.kernel, board.memory
    mark = takeover.run_module(board, cos, _iretd_to(layout.COS_CODE_SEL))      # RPL 0: CPL 0?
    cs, cr0 = m.read_u32(NOTE) & 0xFFFF, m.read_u32(NOTE + 4)
    refused = [e["insn"] for e in board.trace.since(mark, "kernel.refused")]
    out.append(Escape(f"iretd to its own code with selector {layout.COS_CODE_SEL:#x} (RPL 0: CPL 0?)",
                      cs & 3 != 0 and cr0 == 0,
                      f"the code after it ran with CS {cs:#x} (CPL {cs & 3}); its `mov eax, cr0` trapped "
                      f"to the kernel ({'refused' if 'mov eax, cr0' in refused else 'not refused'}), EAX {cr0:#x}"))
    idt = kernel.base + layout.IDT
    before = m.read(idt, 256 * 8)
    mark = takeover.run_module(board, cos, f"init:\n        mov dword ptr [{idt + 13 * 8:#x}], 0xdeadbeef\n"
                                           "        xor eax, eax\n        ret")
    seen = board.trace.since(mark, "kernel.cos_limit")
    fault = next((e for e in board.trace.since(mark, "cpu.fault") if "limit" in str(e["why"])), None)
    out.append(Escape(f"a store into the kernel's IDT at {idt + 13 * 8:#x}",
                      m.read(idt, 256 * 8) == before and bool(seen),
                      (f"#GP({fault['error']}) by the COS's segment limit {seen[0]['limit']:#x}; the kernel skipped "
                       f"the store; the IDT's bytes are unchanged: {m.read(idt, 256 * 8) == before}")
                      if seen and fault else "no limit fault was recorded"))
    board.close()
    board, cos, loader = takeover.takeover(disk=scratch_disk())
    kernel, m = loader.kernel, board.memory
    idt = kernel.base + layout.IDT
    before = m.read(idt, 256 * 8)
    mark = takeover.run_module(board, cos, "init:\n" + scsi_driver(0x28, 1, 1, idt))
    board.run(100_000)
    refused = board.trace.since(mark, "kernel.cos_dma")
    requests, unchanged = len(board.trace.since(mark, "scsi.request")), m.read(idt, 256 * 8) == before
    out.append(Escape("a SCSI read (DMA) of a disk block into the kernel's IDT, through the shared controller",
                      unchanged and bool(refused) and not requests,
                      (f"the kernel checked the buffer against the COS's limit ({refused[0]['limit']:#x}) and refused it "
                       f"(into {refused[0]['into']}); requests the controller saw: {requests}; the IDT's bytes "
                       f"are unchanged: {unchanged}") if refused else "no refusal was recorded"))
    board.close()
    board, cos, loader = takeover.takeover()
    mark = takeover.run_module(board, cos, _iretd_to(layout.KERNEL_CODE_SEL))
    refused = board.trace.since(mark, "kernel.refused")
    m = board.memory
    out.append(Escape(f"iretd to the kernel's code selector {layout.KERNEL_CODE_SEL:#x}",
                      bool(refused) and m.read_u32(NOTE) == 0,
                      (f"the kernel refused `{refused[0]['insn']}` and reflected #GP({m.read_u32(cos_layout.FAULT_ERROR):#x}) "
                       f"to the COS's own handler; `escaped` ran: {'no' if m.read_u32(NOTE) == 0 else 'yes'}")
                      if refused else "no refusal was recorded"))
    board.close()
    out.append(_jump_into_the_kernel())
    return out


def _jump_into_the_kernel():
    """A near jmp to the kernel's code (where a VMM's jmp lands): the CPU refuses the fetch
    past the COS's code segment's limit; the #GP is the COS's own (its handler stops it)."""
    board, cos, loader = takeover.takeover()
    kernel, m = loader.kernel, board.memory
    target = kernel.base + kernel.image.dispatched
    cos.put_module(cos.make_module(f"init:\n        mov eax, {target:#x}\n        jmp eax"))
    mark = board.trace.mark()
    cos.type("insmod\n")
    board.run(1_000_000)                    # its init never returns: its #GP handler halts it
    fetch = [e for e in board.trace.since(mark, "cpu.fault") if e["eip"] == target]
    seen = board.trace.since(mark, "kernel.cos_limit")
    vector, error, eip = (m.read_u32(a) for a in (cos_layout.FAULT_VECTOR, cos_layout.FAULT_ERROR,
                                                   cos_layout.FAULT_EIP))
    board.close()
    return Escape(f"a jmp into the kernel's code at {target:#x}",
                  len(fetch) == 1 and (vector, eip) == (13, target),
                  (f"#GP({fetch[0]['error']}) at the target, before its first instruction ran: {fetch[0]['why']}; "
                   f"the kernel reported it ({seen[0]['what'] if seen else 'not reported'}) and the COS's own "
                   f"handler got vector {vector} error {error} at {eip:#x}") if fetch else "no fault at the target")
