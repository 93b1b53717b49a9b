"""The COS's x86 source: boot, from the firmware's hand-off to `sti`.

Zero the state, load its own GDT and TSS, build and load its IDT, publish
the exports and CODE_END, program the PIC pair, the PIT and the UART,
enumerate the device table (drivers.py: the keyboard and sensor drivers
attach there), print the banner, set READY.
"""
import struct

from vmkit.hw.x86 import encode_segment, CODE_RX, DATA_RW, TSS_AVAILABLE
from . import layout as L
from .constants import PIC_MASTER_MASK, COM1


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
        mov edi, {L.DRIVER_STATE_START:#x}          ; and the drivers' state
        mov ecx, {(L.DRIVER_STATE_END - L.DRIVER_STATE_START) // 4:#x}
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
