"""The COS's x86 source: interrupt and exception handlers.

One stub per CPU exception into `fault_common`; the timer, keyboard,
serial and sensor handlers; one stub per IRQ line without a driver into
`irq_spurious`;
`unexpected_handler` for vectors 0x30-0xFF; and `serial_collect`, which
the serial handler and the main loop share.
"""
from vmkit.hw.x86 import ERROR_CODE_VECTORS
from . import layout as L
from .constants import (COM1, LSR, IRQ_HANDLERS, KBD_DATA, KBD_STATUS, SENSOR_DATA)


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
        if line not in IRQ_HANDLERS:
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
kbd_handler:                                 ; IRQ 1, vector 0x21: every byte the 8042 holds
        push eax
        inc dword ptr [{L.KBD_IRQS:#x}]
kbd_next:
        in al, {KBD_STATUS:#x}               ; status bit 0: the output buffer is full
        test al, 1
        jz kbd_done
        in al, {KBD_DATA:#x}                 ; the byte (reading it empties the buffer)
        movzx eax, al
        mov [{L.LAST_KEY:#x}], eax
        inc dword ptr [{L.KEYS:#x}]
        jmp kbd_next
kbd_done:
        mov al, 0x20                         ; EOI (edge-triggered: the line is low again)
        out 0x20, al
        pop eax
        iretd
sensor_handler:                              ; IRQ 5, vector 0x25: take the reading
        push eax
        push edx
        inc dword ptr [{L.SENSOR_IRQS:#x}]
        mov dx, {SENSOR_DATA:#x}
        in al, dx                            ; DATA: reading it acknowledges, the line drops
        movzx eax, al
        mov [{L.SENSOR_LAST:#x}], eax
        mov al, 0x20                         ; EOI: level-triggered, so the line must be low
        out 0x20, al                         ; by now or the interrupt comes straight back
        pop edx
        pop eax
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
