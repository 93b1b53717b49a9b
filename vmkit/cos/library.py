"""The COS's x86 source: its library: the exports (alloc, print, print hex),
number printing, putc, print_device and streq."""
from . import layout as L
from .constants import COM1, LSR

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
