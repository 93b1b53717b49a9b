"""The world switch's x86 (claims 14-15, 35-36), assembled into the kernel image.

`world_switch` saves the running world's state into its save area (save_area.py)
and hands back to the dispatcher (SAVED); after Python's check of the next area it
loads that world and hands back again (LOADED) for Python's verify; the stub's
iretd then starts it. switch.py tells the steps, the checks and the trace.
"""
from vmkit.hw.x86 import CR0_PG
from . import layout
from .frame import Frame
from .save_area import SYMBOLS

# where the switch's x86 hands back to the dispatcher (the frame's vector slot)
SAVED, LOADED = 0x101, 0x102
RELOAD = 1                                      # ESI: load with the kernel's own LOAD (no save)
# the frame, as the x86 reaches it from ESP (frame.py)
_F = {name: 4 * i for i, name in enumerate(Frame.FIELDS)}
_CPL0_FRAME = _F["esp"]                         # a CPL 0 frame ends here: ESP before the trap


LOAD = """
        lgdt [edi + AREA_GDTR]          ; the descriptor tables: GDTR first, the selectors below
        lldt word ptr [edi + AREA_LDTR] ;   are looked up in it (the CPU checks each descriptor)
        ltr word ptr [edi + AREA_TR]    ; TR's base and limit from its TSS descriptor, marked busy
        mov eax, [edi + AREA_CR3]       ; the address space (0: the COS's, no page directory)
        mov cr3, eax
        mov eax, [edi + AREA_ES]        ; the data segments, DS last: [edi + ...] goes through
        mov es, eax                     ;   DS, and the world's (the COS's) may end below the
        mov eax, [edi + AREA_FS]        ;   save area
        mov fs, eax
        mov eax, [edi + AREA_GS]
        mov gs, eax
        mov eax, [edi + AREA_DS]
        mov ds, eax
        lidt ss:[edi + AREA_IDTR]       ; the IDT last (through SS, the kernel's): until here a fault
                                        ;   enters the kernel's own IDT, whose stubs paging off
                                        ;   reaches (a VM's leads to its VMM at VMM_BASE, paged)
"""


def symbols_source():
    """The AREA_* offsets as assembler symbols (.set lines)."""
    return "\n".join(f".set {n}, {v:#x}" for n, v in SYMBOLS.items())


def _prologue(name):
    f = _F
    return f"""        cli                             ; (the kernel's load: exceptions disabled, always)
        ; -- the TSS being left becomes available: ltr refuses a busy one (the CPU
        ;    sets the busy bit, software clears it)
        sgdt [esp + {f['vector']}]      ; (the frame's vector and error slots: scratch)
        str eax
        and eax, 0xFFF8
        jz {name}_tr_free
        mov ecx, [esp + {f['vector'] + 2}]
        and byte ptr ss:[ecx + eax + 5], 0xFD   ; (SS: the kernel's flat data segment; a VMM's DS
{name}_tr_free:                         ;  ends at the kernel, a VM's GDT lies above it)
        lidt [{layout.KERNEL_IDTR:#x} + base]   ; the kernel's own IDT while loading: a fault here
                                        ;  enters the kernel's stubs through its CS, which every
                                        ;  world's GDT has (a VM's IDT leads to its VMM's stubs,
                                        ;  mapped only with paging on)
        mov eax, cr0                    ; paging off while loading: the kernel is identity-mapped,
        and eax, {~CR0_PG & 0xFFFFFFFF:#x}             ; and CR3 may become 0 (the COS's)
        mov cr0, eax"""


def x86_source(load=LOAD):
    """`world_switch`, reached from the stub's `dispatch` with GO_SWITCH in
    the frame's vector slot and IF clear. ESI = the running world's save area
    (0: nothing to save, load only; RELOAD: load only, with the kernel's own
    LOAD), EDI = the one to load. `load` is the part that loads the CPU
    (exercise 06 writes its own); what comes before and after it is the
    kernel's, and so is the load that puts back a world after a refused one,
    or starts a CPU: a wrong `load` cannot stop the kernel going back."""
    f = _F
    return f"""
{symbols_source()}
world_switch:
        test esi, esi
        jz world_load
        cmp esi, {RELOAD}
        je world_reload
        ; -- save: the running world's registers, from the frame the stub built ...
        mov ecx, 8
save_general:
        mov eax, [esp + 4*ecx - 4]
        mov [esi + 4*ecx - 4], eax
        loop save_general
        mov eax, [esp + {f['eip']}]
        mov [esi + AREA_EIP], eax
        mov eax, [esp + {f['cs']}]
        mov [esi + AREA_CS], eax
        mov eax, [esp + {f['eflags']}]
        mov [esi + AREA_EFLAGS], eax
        lea eax, [esp + {_CPL0_FRAME}]  ; from CPL 0 the CPU pushed no ESP/SS: the world's
        mov ecx, ss                     ; stack is where the frame ends, its SS is ours
        test byte ptr [esp + {f['cs']}], 3
        jz save_stack
        mov eax, [esp + {f['esp']}]
        mov ecx, [esp + {f['ss']}]
save_stack:
        mov [esi + AREA_ESP], eax
        mov [esi + AREA_SS], ecx
        ; -- ... and what only the CPU holds
        mov eax, [esp + {f['ds']}]      ; the world's data segments: the stub saved them in
        mov [esi + AREA_DS], eax        ; the frame (the CPU holds the kernel's now)
        mov eax, [esp + {f['es']}]
        mov [esi + AREA_ES], eax
        mov eax, [esp + {f['fs']}]
        mov [esi + AREA_FS], eax
        mov eax, [esp + {f['gs']}]
        mov [esi + AREA_GS], eax
        sgdt [esi + AREA_GDTR]
        sidt [esi + AREA_IDTR]
        sldt eax
        mov [esi + AREA_LDTR], eax
        str eax
        mov [esi + AREA_TR], eax
        mov eax, cr3
        mov [esi + AREA_CR3], eax
        cli                             ; exceptions disabled (claim 14)
        mov dword ptr [esp + {f['vector']}], {SAVED:#x}    ; the dispatcher seals it, checks the next
        jmp dispatch
world_load:
{_prologue("world_load")}
        ; -- load
{load}
        jmp load_segments
world_reload:                           ; the kernel's own load, whatever `load` is
{_prologue("world_reload")}
        movzx eax, word ptr [edi + AREA_TR]     ; a world this CPU ran: its TSS is this CPU's,
        and eax, 0xFFF8                 ; so its descriptor may be made available (a refused
        jz reload_tr_free               ; load may have left it busy in another GDT)
        cmp ax, word ptr [edi + AREA_GDTR]
        ja reload_tr_free
        mov ecx, [edi + AREA_GDTR + 2]
        and byte ptr ss:[ecx + eax + 5], 0xFD
reload_tr_free:
{LOAD}
load_segments:                          ; -- the data segments the CPU accepted, for the frame
        mov ebx, ds                     ;    (the stub's pops load them on the way out), and
        mov edx, es                     ;    the kernel's own DS/ES again: its memory lies past
        mov ebp, fs                     ;    the limit of the COS's
        mov esi, gs
        mov ax, {layout.KERNEL_DATA_SEL:#x}
        mov ds, ax
        mov es, ax
        push {layout.KERNEL_CODE_SEL:#x}    ; and its own CS: a VMM enters the kernel with its own
        call load_cs                    ;   (VMM_CODE_SEL), which the next world's GDT may not have
        jmp load_paging                 ;   (the COS's): retf pops the address call pushed, then
load_cs:                                ;   this CS, from the GDT just loaded
        retf
load_paging:                            ; -- paging on if the loaded CR3 names a page directory
        mov eax, cr3
        test eax, eax
        jz load_frame_next
        mov eax, cr0
        or eax, {CR0_PG:#x}
        mov cr0, eax
load_frame_next:
        ; -- the frame the stub's popad and iretd load (after every check: a fault
        ;    above leaves the frame as it was)
        test byte ptr [edi + AREA_CS], 3
        jnz load_frame
        mov eax, [edi + AREA_SS]        ; a CPL 0 world: iretd pops no ESP/SS, so its
        mov ss, eax                     ; frame goes where its stack ends
        mov esp, [edi + AREA_ESP]
        sub esp, {_CPL0_FRAME}
load_frame:
        mov ecx, 8
load_general:
        mov eax, [edi + 4*ecx - 4]
        mov [esp + 4*ecx - 4], eax
        loop load_general
        mov eax, [edi + AREA_EIP]
        mov [esp + {f['eip']}], eax
        mov eax, [edi + AREA_CS]
        mov [esp + {f['cs']}], eax
        mov eax, [edi + AREA_EFLAGS]
        mov [esp + {f['eflags']}], eax
        mov [esp + {f['ds']}], ebx
        mov [esp + {f['es']}], edx
        mov [esp + {f['fs']}], ebp
        mov [esp + {f['gs']}], esi
        test byte ptr [edi + AREA_CS], 3
        jz world_loaded
        mov eax, [edi + AREA_ESP]
        mov [esp + {f['esp']}], eax
        mov eax, [edi + AREA_SS]
        mov [esp + {f['ss']}], eax
world_loaded:
        mov dword ptr [esp + {f['vector']}], {LOADED:#x}   ; the dispatcher verifies, then iretd
        jmp dispatch
"""
