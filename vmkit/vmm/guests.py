"""Tiny guest OSes: real x86 (Intel syntax) linked at 0, where each sees its memory start.

Each builder takes `base`, the address the code is linked at: install_vm
calls it with 0 (a VM's guest sees its memory from address 0, wherever its
pages lie in host memory: kernel/paging.py); a bench running the code on a
bare Unicorn links it where it loads it.

Each sets up its own IDT (gate 0x20: its timer handler), loads it with
lidt, enables interrupts with sti, and writes to its serial port 0x3F8:
every one of those traps to its VMM. The image is code only (variables,
IDT and stack live past it in the VM's memory) so the VMM can scan it for
iretd without mistaking data for code.

    0x0000          code
    0x3000          variables: ticks (u32), seen (u32), IDT pointer (6 bytes)
    0x3800          the guest's IDT (0x21 gates)
    top of memory   the guest's stack
"""
VARS, IDT = 0x3000, 0x3800
MIN_MEMORY = 0x4000 + 0x1000


def timer_handler(base, eoi=True):
    """x86: the guest's own timer handler, label `timer`: counts the tick in its
    variables (VARS) and, with `eoi`, acknowledges it at its (virtual) PIC."""
    eoi_code = "mov al, 0x20\n        out 0x20, al" if eoi else ""
    return f"""timer:  push eax                        ; the guest's own timer handler
        inc dword ptr [{base + VARS:#x}]
        {eoi_code}
        pop eax
        iretd"""


def load_idt(base, limit=0x107, sti=True):
    """x86: the guest loads its IDT (at IDT, `limit` its last byte) with lidt, through the
    table pointer in its variables (VARS + 8), and with `sti` enables interrupts."""
    v = base + VARS
    return f"""mov word ptr [{v + 8:#x}], {limit:#x}
        mov dword ptr [{v + 10:#x}], {base + IDT:#x}
        lidt [{v + 8:#x}]""" + ("\n        sti" if sti else "")


def _prologue(base, eoi=True):
    idt = base + IDT
    return f"""
start:  jmp setup
{timer_handler(base, eoi)}
setup:  lea eax, [timer]                 ; gate 0x20 -> timer (interrupt gate)
        mov word ptr [{idt + 0x100:#x}], ax
        mov word ptr [{idt + 0x102:#x}], 0x3b
        mov word ptr [{idt + 0x104:#x}], 0x8e00
        shr eax, 16
        mov word ptr [{idt + 0x106:#x}], ax
        {load_idt(base)}
        mov edx, 0x3f8
"""


def _print(text):
    return "\n".join(f"        mov al, {ord(c)}\n        out dx, al" for c in text)


def console(base, name, lines=1000, two_stacks=False):
    """Greets, then prints "<name> a", "<name> b", ... one line per timer tick.
    two_stacks: after each line its stack moves to the other of its two top pages,
    so the VMM pushes its ticks' frames on one page, then the other, by turns (the
    mapping cache's grader: a page used again while others came in)."""
    v = base + VARS
    top, again = ("\n        mov ebp, esp                    ; the top of its memory, where its VMM put ESP",
                  """jae done
        mov esp, ebp                    ; the stack is empty here: move it by turns
        test bl, 1
        jz wait
        sub esp, 0x1000
        jmp wait""") if two_stacks else ("", "jb wait")
    return _prologue(base) + _print(f"hello from {name}\n") + f"""
        xor ebx, ebx{top}
wait:   hlt                             ; until the next virtual tick
        mov eax, [{v:#x}]
        cmp eax, [{v + 4:#x}]
        je wait
        mov [{v + 4:#x}], eax
{_print(name + " ")}
        mov eax, ebx
        add al, 97
        out dx, al
        mov al, 10
        out dx, al
        inc ebx
        cmp ebx, 26
        jb nowrap
        xor ebx, ebx
nowrap: cmp dword ptr [{v + 4:#x}], {lines}
        {again}
done:   hlt
        jmp done
"""


def checksum(base, iterations):
    """A long register-only loop through thousands of world switches, then its result in hex."""
    return _prologue(base, eoi=False) + f"""
        xor eax, eax
        mov ecx, {iterations}
        mov esi, 0x12345678
        xor ebp, ebp
        xor ebx, ebx
        mov edi, 0x9e3779b9
again:  imul eax, eax, 31
        add eax, ecx                    ; the carry it sets is used next: EFLAGS
        adc esi, eax                    ; must survive a switch between the two
        rol esi, 3
        xor ebp, esi
        mov edx, ebp                    ; a data-dependent pause, so switches land
        and edx, 7                      ; all over the loop, not at one point
spin:   dec edx
        jns spin
        add ebx, ebp
        sbb edi, ebx
        dec ecx
        jnz again
        mov edx, 0x3f8
        xor eax, esi
        xor eax, ebp
        xor eax, ebx
        xor eax, edi
        mov edi, eax
        mov ecx, 8
digit:  rol edi, 4
        mov eax, edi
        and eax, 15
        add al, 48
        cmp al, 57
        jbe put
        add al, 7
put:    out dx, al
        dec ecx
        jnz digit
{_print(chr(10))}
stop:   hlt
        jmp stop
"""


def checksum_expected(iterations):
    """What `checksum` must print: the same arithmetic, in Python."""
    m = 0xFFFFFFFF
    eax, ecx, esi, ebp, ebx, edi = 0, iterations, 0x12345678, 0, 0, 0x9E3779B9
    while ecx:
        total = (eax * 31 & m) + ecx
        eax, carry = total & m, total >> 32
        esi = (esi + eax + carry) & m
        esi = ((esi << 3) | (esi >> 29)) & m
        ebp ^= esi
        total = ebx + ebp
        ebx, carry = total & m, total >> 32
        edi = (edi - ebx - carry) & m
        ecx -= 1
    return f"{eax ^ esi ^ ebp ^ ebx ^ edi:08X}\n"


def crasher(base, name):
    """Prints a line, then executes garbage (ud2): its VM must stop, no one else."""
    return _prologue(base) + _print(f"{name} about to crash\n") + "\n        ud2\n"


def driver_program(name, steps, step, driver, say):
    """A guest made of a device driver and a list of steps (disk_guest.py, net_guest.py):
    a function of its link address (install_vm gives 0) giving its source (install_vm's
    `guest`). step(base, name, i, step) gives one step's x86 (and refuses a bad step:
    each is tried first, before anything is installed); driver(base) the driver."""
    steps = list(steps)
    for i, s in enumerate(steps):
        step(0, name, i, s)

    def source(base):
        body = "".join(step(base, name, i, s) for i, s in enumerate(steps))
        return ("start:  jmp setup\n" + driver(base) + body
                + say(f"{name} done\n") + "\nstop:   hlt\n        jmp stop\n")
    return source
