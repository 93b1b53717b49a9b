"""The COS: a ring-0 x86 operating system, as assembly text.

`program()` is the whole source, assembled for COS_CODE; `build()` returns
its bytes and the addresses of its named labels. The COS is written as any
small 1990s kernel: it uses cli/sti/hlt, pushfd/popfd, lgdt/lidt/ltr, in/out
and iretd directly. That is the point: once a second kernel displaces it to
CPL 1, those instructions trap (or are patched) and the kernel emulates them.

Code first, then (after `cos_code_end`) tables and strings, so a linear
disassembly of [COS_CODE, cos_code_end) sees only instructions.
"""
import functools
import struct

from vmkit.hw.asm import assemble
from vmkit.hw.board import DEVICE_TABLE
from vmkit.hw.x86 import ERROR_CODE_VECTORS, encode_segment, CODE_RX, DATA_RW, TSS_AVAILABLE
from . import layout as L

PIC_MASTER_MASK = 0xFF & ~(1 << 0 | 1 << 2 | 1 << 4)   # timer, cascade, serial
COM1, LSR = 0x3F8, 0x3FD
CMOD = struct.unpack("<I", L.MODULE_MAGIC)[0]
VMKB = struct.unpack("<I", b"VMKB")[0]
CDEV = struct.unpack("<I", L.DEVICES_MAGIC)[0]
# Labels whose addresses build() reports (the IDT diagram, tests, the kernel).
SYMBOLS = ("cos_entry", "main_loop", "timer_handler", "serial_handler", "irq_spurious",
           "irq_stubs", "irq_stubs_end", "exc_stubs", "exc_stubs_end", "fault_common",
           "unexpected_handler", "cos_alloc_pages", "cos_print", "cos_print_hex",
           "run_line", "cmd_insmod", "cos_code_end")


def _string(label, text):
    return f"{label}: .byte " + ", ".join(f"{b:#x}" for b in text.encode() + b"\0")


def _gdt_stores():
    """The COS writes its own GDT: null, ring-0 code, ring-0 data, its TSS."""
    flat = 0xFFFFFFFF
    gdt = (bytes(8) + encode_segment(0, flat, CODE_RX) + encode_segment(0, flat, DATA_RW)
           + encode_segment(L.COS_TSS, L.TSS_LIMIT, TSS_AVAILABLE, s=0, db=0, g=0))
    words = struct.unpack(f"<{len(gdt) // 4}I", gdt)
    return "\n".join(f"        mov dword ptr [{L.COS_GDT + 4 * i:#x}], {w:#x}"
                     for i, w in enumerate(words))


BOOT = f"""
cos_entry:
        cli
        cld
        mov edi, {L.STATE_START:#x}          ; zero the COS's state (the config stays)
        mov ecx, {(L.STATE_END - L.STATE_START) // 4:#x}
        xor eax, eax
        rep stosd
{_gdt_stores()}
        mov word ptr [{L.GDT_PTR:#x}], {8 * L.GDT_ENTRIES - 1:#x}
        mov dword ptr [{L.GDT_PTR + 2:#x}], {L.COS_GDT:#x}
        lgdt [{L.GDT_PTR:#x}]
        jmp {L.COS_CS:#x}:reload_cs          ; CS from the COS's GDT
reload_cs:
        mov ax, {L.COS_DS:#x}
        mov ds, ax
        mov es, ax
        mov fs, ax
        mov gs, ax
        mov ss, ax
        mov esp, {L.STACK_TOP:#x}
        mov edi, {L.COS_TSS:#x}              ; the TSS: ring-0 stack for interrupts from outer rings
        mov ecx, 0x1a
        xor eax, eax
        rep stosd
        mov dword ptr [{L.COS_TSS + 4:#x}], {L.STACK_TOP:#x}
        mov dword ptr [{L.COS_TSS + 8:#x}], {L.COS_DS:#x}
        mov word ptr [{L.COS_TSS + 102:#x}], 0x68   ; I/O map base past the limit: no bitmap
        mov ax, {L.COS_TSS_SEL:#x}
        ltr ax
        xor ecx, ecx                         ; the IDT: 256 interrupt gates into COS code
idt_fill:
        mov eax, unexpected_handler
        cmp ecx, 0x30
        jae idt_gate
        mov eax, [irq_table + ecx*4 - 0x80]
        cmp ecx, 0x20
        jae idt_gate
        mov eax, [exc_table + ecx*4]
idt_gate:
        mov edx, eax
        and eax, 0xffff
        or eax, {L.COS_CS << 16:#x}           ; selector 0x08 | offset 15..0
        mov [{L.COS_IDT:#x} + ecx*8], eax
        and edx, 0xffff0000
        or edx, 0x8e00                       ; present, DPL 0, 32-bit interrupt gate
        mov [{L.COS_IDT + 4:#x} + ecx*8], edx
        inc ecx
        cmp ecx, {L.IDT_ENTRIES:#x}
        jb idt_fill
        mov word ptr [{L.IDT_PTR:#x}], {8 * L.IDT_ENTRIES - 1:#x}
        mov dword ptr [{L.IDT_PTR + 2:#x}], {L.COS_IDT:#x}
        lidt [{L.IDT_PTR:#x}]
        mov dword ptr [{L.COS_EXPORTS + L.EXPORT_ALLOC_PAGES:#x}], cos_alloc_pages
        mov dword ptr [{L.COS_EXPORTS + L.EXPORT_PRINT:#x}], cos_print
        mov dword ptr [{L.COS_EXPORTS + L.EXPORT_PRINT_HEX:#x}], cos_print_hex
        mov dword ptr [{L.NEXT_FREE_PAGE:#x}], {L.PAGE_POOL:#x}
        mov dword ptr [{L.CODE_END:#x}], cos_code_end
        mov al, 0x11                         ; 8259A pair: ICW1..ICW4
        out 0x20, al
        out 0xa0, al
        mov al, {L.IRQ_BASE:#x}
        out 0x21, al
        mov al, {L.IRQ_BASE + 8:#x}
        out 0xa1, al
        mov al, 4
        out 0x21, al
        mov al, 2
        out 0xa1, al
        mov al, 1
        out 0x21, al
        out 0xa1, al
        mov al, {PIC_MASTER_MASK:#x}          ; OCW1: unmask IRQ 0, 2, 4
        out 0x21, al
        mov al, 0xff                         ; the slave's lines stay masked
        out 0xa1, al
        mov al, 0x34                         ; PIT channel 0, lo/hi, mode 2
        out 0x43, al
        mov eax, [{L.TIMER_PERIOD:#x}]
        out 0x40, al
        mov al, ah
        out 0x40, al
        mov dx, {COM1 + 3:#x}                 ; UART: 8N1, divisor 1, receive interrupt
        mov al, 0x80
        out dx, al
        mov dx, {COM1:#x}
        mov al, 1
        out dx, al
        inc dx
        xor al, al
        out dx, al
        mov dx, {COM1 + 3:#x}
        mov al, 3
        out dx, al
        mov dx, {COM1 + 1:#x}
        mov al, 1                            ; IER: received data available
        out dx, al
        mov dx, {COM1 + 4:#x}
        mov al, 0x0b                         ; MCR: DTR, RTS, OUT2 (gates IRQ 4)
        out dx, al
        mov esi, s_booting
        call cos_print
        call enumerate_devices
        mov esi, s_ready
        call cos_print
        mov dword ptr [{L.READY:#x}], 1
        sti
"""

MAIN = f"""
main_loop:
        cli                                  ; look at what the handlers left, IRQs held
        cmp dword ptr [{L.LINE_READY:#x}], 0
        jne run_line
        mov ecx, [{L.PRINT_EVERY:#x}]
        test ecx, ecx
        jz idle
        mov eax, [{L.TICKS:#x}]
        sub eax, [{L.PRINTED_TICK:#x}]
        cmp eax, ecx
        jae print_tick
idle:   sti                                  ; sti's shadow: no IRQ slips in before hlt
        hlt
        jmp main_loop
print_tick:
        sti
        pushfd                               ; read TICKS and move PRINTED_TICK together
        cli
        mov eax, [{L.TICKS:#x}]
        mov [{L.PRINTED_TICK:#x}], eax
        popfd
        mov esi, s_tick
        call cos_print
        call print_dec
        call newline
        jmp main_loop
run_line:
        sti
        mov esi, {L.LINE_BUF:#x}
        mov edi, c_help
        call streq
        je cmd_help
        mov edi, c_ticks
        call streq
        je cmd_ticks
        mov edi, c_devices
        call streq
        je cmd_devices
        mov edi, c_insmod
        call streq
        je cmd_insmod
        mov edi, c_mem
        call streq
        je cmd_mem
        mov esi, s_unknown
        call cos_print
cmd_done:
        pushfd                               ; hand the line buffer back to the serial handler
        cli
        mov dword ptr [{L.LINE_LEN:#x}], 0
        mov dword ptr [{L.LINE_READY:#x}], 0
        call serial_collect                  ; bytes that waited while the line was pending
        inc dword ptr [{L.COMMANDS_DONE:#x}]
        popfd
        jmp main_loop
cmd_help:
        mov esi, s_help
        call cos_print
        jmp cmd_done
cmd_ticks:
        mov esi, s_ticks
        call cos_print
        mov eax, [{L.TICKS:#x}]
        call print_dec
        call newline
        jmp cmd_done
cmd_mem:
        mov esi, s_mem
        call cos_print
        mov eax, [{L.NEXT_FREE_PAGE:#x}]
        call cos_print_hex
        mov esi, s_ramtop
        call cos_print
        mov eax, [{L.RAM_TOP:#x}]
        call cos_print_hex
        call newline
        jmp cmd_done
cmd_devices:
        mov ecx, [{L.COS_DEVICES + 4:#x}]
        mov edi, {L.COS_DEVICES + 8:#x}
cmd_dev_next:
        test ecx, ecx
        jz cmd_done
        mov esi, s_cos_lower
        call cos_print
        call print_device
        mov esi, s_claimed
        cmp byte ptr [edi + {L.DEVICE_CLAIMED}], 0
        jne cmd_dev_print
        mov esi, s_unclaimed
cmd_dev_print:
        call cos_print
        add edi, {L.DEVICE_ENTRY}
        dec ecx
        jmp cmd_dev_next
cmd_insmod:                                  ; check the file, then call its init at CPL 0
        cmp dword ptr [{L.MODULE_AREA:#x}], {CMOD:#x}
        jne insmod_bad
        mov eax, [{L.MODULE_AREA + 4:#x}]
        test eax, eax
        jz insmod_bad
        cmp eax, {L.MODULE_AREA_SIZE - L.MODULE_HEADER:#x}
        ja insmod_bad
        cmp [{L.MODULE_AREA + 8:#x}], eax
        jae insmod_bad
        mov esi, s_insmod_init
        call cos_print
        mov eax, {L.MODULE_CODE:#x}
        add eax, [{L.MODULE_AREA + 8:#x}]
        pushad
        call eax
        mov [{L.MODULE_RESULT:#x}], eax
        popad
        inc dword ptr [{L.MODULES_LOADED:#x}]
        mov esi, s_insmod_ok
        call cos_print
        jmp cmd_done
insmod_bad:
        mov esi, s_insmod_bad
        call cos_print
        jmp cmd_done
"""


def _exception_stubs():
    """One stub per CPU exception: push a dummy error code where the CPU pushes none."""
    lines = ["exc_stubs:"]
    for v in range(32):
        push = "" if v in ERROR_CODE_VECTORS else "push 0\n        "
        lines.append(f"exc_{v}: {push}push {v:#x}\n        jmp fault_common")
    return "\n        ".join(lines) + "\nexc_stubs_end:"


def _irq_stubs():
    """Lines without a driver: remember the line, count it, EOI."""
    lines = ["irq_stubs:"]
    for line in range(16):
        if line not in (0, 4):
            lines.append(f"irq_{line}: push eax\n        mov eax, {line}\n        jmp irq_spurious")
    return "\n        ".join(lines) + "\nirq_stubs_end:"


HANDLERS = f"""
timer_handler:                               ; IRQ 0, vector 0x20
        pushad
        inc dword ptr [{L.TICKS:#x}]
        mov al, 0x20
        out 0x20, al
        popad
        iretd
serial_handler:                              ; IRQ 4, vector 0x24
        pushad
        inc dword ptr [{L.SERIAL_IRQS:#x}]
        call serial_collect
        mov al, 0x20
        out 0x20, al
        popad
        iretd
irq_spurious:                                ; eax = line; the stub pushed the old eax
        inc dword ptr [{L.SPURIOUS:#x} + eax*4]
        cmp al, 8
        mov al, 0x20
        jb irq_spurious_master
        out 0xa0, al                         ; a slave line: EOI the slave too
irq_spurious_master:
        out 0x20, al
        pop eax
        iretd
unexpected_handler:                          ; vectors 0x30-0xff: count and return
        inc dword ptr [{L.UNEXPECTED_INTS:#x}]
        iretd
{_exception_stubs()}
{_irq_stubs()}
fault_common:                                ; [esp] vector, [esp+4] error, [esp+8] eip
        pushad
        mov eax, [esp + 0x20]
        mov [{L.FAULT_VECTOR:#x}], eax
        mov eax, [esp + 0x24]
        mov [{L.FAULT_ERROR:#x}], eax
        mov eax, [esp + 0x28]
        mov [{L.FAULT_EIP:#x}], eax
        inc dword ptr [{L.FAULTS:#x}]
        mov esi, s_fault
        call cos_print
        mov eax, [{L.FAULT_VECTOR:#x}]
        call print_dec
        mov esi, s_at
        call cos_print
        mov eax, [{L.FAULT_EIP:#x}]
        call cos_print_hex
        call newline
fault_stop:                                  ; the COS stops here for good
        cli
        hlt
        jmp fault_stop
serial_collect:                              ; with IRQs off: RBR into LINE_BUF, echoed
        push eax
        push ebx
        push edx
collect_next:
        cmp dword ptr [{L.LINE_READY:#x}], 0
        jne collect_done                     ; a line waits for the main loop: leave the rest
        mov dx, {LSR:#x}
        in al, dx
        test al, 1
        jz collect_done
        mov dx, {COM1:#x}
        in al, dx
        cmp al, 0x0d
        je collect_eol
        cmp al, 0x0a
        je collect_eol
        mov ebx, [{L.LINE_LEN:#x}]
        cmp ebx, {L.LINE_MAX - 1:#x}
        jae collect_next                     ; line full: drop the byte
        mov [{L.LINE_BUF:#x} + ebx], al
        inc dword ptr [{L.LINE_LEN:#x}]
        call putc
        jmp collect_next
collect_eol:
        mov ebx, [{L.LINE_LEN:#x}]
        test ebx, ebx
        jz collect_next                      ; an empty line is no command
        mov byte ptr [{L.LINE_BUF:#x} + ebx], 0
        mov dword ptr [{L.LINE_READY:#x}], 1
        call newline
        jmp collect_next
collect_done:
        pop edx
        pop ebx
        pop eax
        ret
"""

DRIVERS = f"""
enumerate_devices:                           ; the firmware table -> COS_DEVICES, claimed
        pushad
        mov esi, {DEVICE_TABLE:#x}
        xor ecx, ecx
        cmp dword ptr [esi], {VMKB:#x}
        jne enum_count
        mov ecx, [esi + 4]
        cmp ecx, {L.MAX_DEVICES}
        jbe enum_count
        mov ecx, {L.MAX_DEVICES}
enum_count:
        mov dword ptr [{L.COS_DEVICES:#x}], {CDEV:#x}
        mov [{L.COS_DEVICES + 4:#x}], ecx
        add esi, 8
        mov edi, {L.COS_DEVICES + 8:#x}
enum_next:
        test ecx, ecx
        jz enum_done
        mov eax, [esi]
        mov [edi], eax
        mov eax, [esi + 4]
        mov [edi + 4], eax
        mov eax, [esi + 8]
        mov [edi + 8], eax
        mov eax, [esi + 12]
        and eax, 0xff                        ; IRQ byte kept, padding cleared
        mov [edi + 12], eax
        call claim_device
        push esi
        mov esi, s_cos
        call cos_print
        call print_device
        mov esi, s_nl
        cmp byte ptr [edi + {L.DEVICE_CLAIMED}], 0
        jne enum_print
        mov esi, s_nodriver
enum_print:
        call cos_print
        pop esi
        add esi, {L.DEVICE_ENTRY}
        add edi, {L.DEVICE_ENTRY}
        dec ecx
        jmp enum_next
enum_done:
        popad
        ret
claim_device:                                ; edi = entry: find its driver, probe, claim
        push eax
        push ebx
        mov ebx, drivers
claim_next:
        cmp dword ptr [ebx + 8], 0
        je claim_done
        mov eax, [edi]
        cmp eax, [ebx]
        jne claim_skip
        mov eax, [edi + 4]
        cmp eax, [ebx + 4]
        jne claim_skip
        call dword ptr [ebx + 8]             ; the driver's probe: eax = 1 if it answered
        mov [edi + {L.DEVICE_CLAIMED}], al
        jmp claim_done
claim_skip:
        add ebx, 12
        jmp claim_next
claim_done:
        pop ebx
        pop eax
        ret
probe_pic:                                   ; the mask we programmed reads back
        push edx
        movzx edx, word ptr [edi + 8]
        inc edx
        in al, dx
        cmp al, {PIC_MASTER_MASK:#x}
        sete al
        movzx eax, al
        pop edx
        ret
probe_pit:                                   ; no identification register: read the count
        push edx
        movzx edx, word ptr [edi + 8]
        in al, dx
        mov eax, 1
        pop edx
        ret
probe_serial:                                ; the 16550's scratch register holds a byte
        push edx
        movzx edx, word ptr [edi + 8]
        add edx, 7
        mov al, 0x5a
        out dx, al
        in al, dx
        cmp al, 0x5a
        sete al
        movzx eax, al
        pop edx
        ret
probe_nic:                                   ; IMR = 0 (quiet), a MAC that is not all ones
        push edx
        movzx edx, word ptr [edi + 8]
        add edx, 8
        xor eax, eax
        out dx, eax
        add edx, 0x28
        in eax, dx
        cmp eax, 0xffffffff
        setne al
        movzx eax, al
        pop edx
        ret
probe_scsi:                                  ; CONTROL = 0 (quiet), STATUS not all ones
        push edx
        movzx edx, word ptr [edi + 8]
        add edx, 0x0c
        xor eax, eax
        out dx, eax
        sub edx, 4
        in eax, dx
        cmp eax, 0xffffffff
        setne al
        movzx eax, al
        pop edx
        ret
"""

LIBRARY = f"""
cos_alloc_pages:                             ; export: ecx pages -> eax address or 0
        push edx
        pushfd
        cli
        xor eax, eax
        test ecx, ecx
        jz alloc_done
        cmp ecx, 0x100000
        jae alloc_done
        mov edx, ecx
        shl edx, 12
        add edx, [{L.NEXT_FREE_PAGE:#x}]
        jc alloc_done
        cmp edx, [{L.RAM_TOP:#x}]
        ja alloc_done
        mov eax, [{L.NEXT_FREE_PAGE:#x}]
        mov [{L.NEXT_FREE_PAGE:#x}], edx
alloc_done:
        popfd
        pop edx
        ret
cos_print:                                   ; export: esi = NUL-terminated string
        push eax
        push esi
print_next:
        mov al, [esi]
        test al, al
        jz print_done
        call putc
        inc esi
        jmp print_next
print_done:
        pop esi
        pop eax
        ret
cos_print_hex:                               ; export: eax as 8 hex digits
        push ecx
        mov ecx, 8
        call print_hexn
        pop ecx
        ret
print_hexmin:                                ; eax in hex, no leading zeros
        push ecx
        push edx
        mov ecx, 1
        mov edx, eax
hexmin_count:
        shr edx, 4
        jz hexmin_go
        inc ecx
        jmp hexmin_count
hexmin_go:
        call print_hexn
        pop edx
        pop ecx
        ret
print_hexn:                                  ; eax, ecx = digits (1..8)
        push eax
        push ecx
        push edx
        mov edx, eax
        push ecx
        neg ecx
        add ecx, 8
        shl ecx, 2
        shl edx, cl                          ; the first digit to print at the top
        pop ecx
hexn_next:
        rol edx, 4
        mov al, dl
        and al, 0x0f
        add al, 0x30
        cmp al, 0x39
        jbe hexn_digit
        add al, 0x27
hexn_digit:
        call putc
        loop hexn_next
        pop edx
        pop ecx
        pop eax
        ret
print_dec:                                   ; eax, unsigned decimal
        push eax
        push ebx
        push ecx
        push edx
        mov ebx, 10
        xor ecx, ecx
dec_divide:
        xor edx, edx
        div ebx
        push edx
        inc ecx
        test eax, eax
        jnz dec_divide
dec_out:
        pop eax
        add al, 0x30
        call putc
        loop dec_out
        pop edx
        pop ecx
        pop ebx
        pop eax
        ret
newline:
        push eax
        mov al, 0x0a
        call putc
        pop eax
        ret
putc:                                        ; al -> COM1, once the transmitter is empty
        push edx
        push eax
        mov dx, {LSR:#x}
putc_wait:
        in al, dx
        test al, 0x20
        jz putc_wait
        pop eax
        mov dx, {COM1:#x}
        out dx, al
        pop edx
        ret
print_device:                                ; edi = entry: "name ports 0xA-0xB irq N"
        push eax
        push ecx
        push esi
        mov esi, edi
        mov ecx, 8
device_name:
        mov al, [esi]
        test al, al
        jz device_ports
        call putc
        inc esi
        loop device_name
device_ports:
        mov esi, s_ports
        call cos_print
        movzx eax, word ptr [edi + 8]
        call print_hexmin
        mov esi, s_dash
        call cos_print
        movzx ecx, word ptr [edi + 10]
        lea eax, [eax + ecx - 1]
        call print_hexmin
        mov esi, s_irq
        call cos_print
        movsx eax, byte ptr [edi + 12]
        test eax, eax
        js device_noirq
        call print_dec
        jmp device_end
device_noirq:
        mov esi, s_none
        call cos_print
device_end:
        pop esi
        pop ecx
        pop eax
        ret
streq:                                       ; ZF = 1 if the strings at esi and edi are equal
        push eax
        push esi
        push edi
streq_next:
        mov al, [esi]
        cmp al, [edi]
        jne streq_done
        inc esi
        inc edi
        test al, al
        jnz streq_next
streq_done:
        pop edi
        pop esi
        pop eax
        ret
"""


def _driver(name, probe):
    return f".byte {', '.join(f'{b:#x}' for b in name.encode().ljust(8, bytes(1)))}\n.long {probe}"


DATA = "\n".join([
    ".align 4",
    "exc_table: .long " + ", ".join(f"exc_{v}" for v in range(32)),
    "irq_table: .long " + ", ".join("timer_handler" if n == 0 else "serial_handler" if n == 4
                                     else f"irq_{n}" for n in range(16)),
    "drivers:",
    *(_driver(n, f"probe_{n}") for n in ("pic", "pit", "serial", "nic", "scsi")),
    ".long 0, 0, 0",
    _string("s_booting", "COS: booting\n"), _string("s_ready", "COS: ready\n"),
    _string("s_cos", "COS: "), _string("s_cos_lower", "cos: "), _string("s_nl", "\n"),
    _string("s_ports", " ports 0x"), _string("s_dash", "-0x"), _string("s_irq", " irq "),
    _string("s_none", "none"), _string("s_nodriver", " (no driver)\n"),
    _string("s_claimed", " claimed\n"), _string("s_unclaimed", " (no driver)\n"),
    _string("s_tick", "cos: tick "), _string("s_ticks", "cos: ticks "),
    _string("s_help", "cos: commands: help ticks devices insmod mem\n"),
    _string("s_unknown", "cos: unknown command\n"),
    _string("s_mem", "cos: next free page 0x"), _string("s_ramtop", " ram top 0x"),
    _string("s_insmod_init", "insmod: init\n"), _string("s_insmod_ok", "insmod: ok\n"),
    _string("s_insmod_bad", "insmod: bad module\n"),
    _string("s_fault", "COS: fault "), _string("s_at", " at 0x"),
    *(_string(f"c_{c}", c) for c in ("help", "ticks", "devices", "insmod", "mem")),
])


def program():
    """The whole COS as one assembly text (see module doc)."""
    return "\n".join((BOOT, MAIN, HANDLERS, DRIVERS, LIBRARY, "cos_code_end:", DATA))


@functools.lru_cache(maxsize=1)
def build():
    """(code bytes, {label: address}) for the COS at COS_CODE. Cached: the
    source does not depend on the configuration, which lives in COS data."""
    text = program() + "\n.long " + ", ".join(SYMBOLS)
    code = assemble(text, L.COS_CODE)
    table, code = code[-4 * len(SYMBOLS):], code[:-4 * len(SYMBOLS)]
    symbols = dict(zip(SYMBOLS, struct.unpack(f"<{len(SYMBOLS)}I", table)))
    if len(code) > L.COS_CODE_LIMIT:
        raise AssertionError(f"COS code is {len(code):#x} bytes, more than {L.COS_CODE_LIMIT:#x}")
    return code, symbols
