"""The COS's x86 source: device enumeration and the drivers' probes.

`enumerate_devices` copies the firmware's device table into COS_DEVICES,
asking each device's driver (the `drivers` table in data.py) to probe it;
a driver that finds its device answering claims it (DEVICE_CLAIMED).

The keyboard and sensor probes also attach their driver: the PIC, PIT and
UART were programmed by the boot code before enumeration, and IRQ 0 and 4
unmasked with them; a keyboard or sensor line is unmasked only once its
device has answered, so a board without one leaves the line masked.
"""
from vmkit.hw.board import DEVICE_TABLE
from . import layout as L
from .constants import (PIC_MASTER_MASK, PIC_MASTER_DATA, PIC_MASTER_ELCR, VMKB, CDEV,
                        KBD_DATA, KBD_STATUS, KBD_IRQ, KBD_ENABLE,
                        SENSOR_DATA, SENSOR_STATUS, SENSOR_CONTROL, SENSOR_IRQ)

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
probe_kbd:                                   ; the 8042 at 0x60/0x64, IRQ 1: attach
        push edx
        mov edx, {KBD_DATA:#x}
        mov al, {KBD_IRQ}
        call expect_port_irq
        jne kbd_absent
        in al, {KBD_STATUS:#x}
        cmp al, 0xff                         ; nothing decodes the port: all ones
        je kbd_absent
        mov al, {KBD_ENABLE:#x}              ; command: enable the keyboard
        out {KBD_STATUS:#x}, al
kbd_flush:                                   ; drop bytes left from before we ran: a full
        in al, {KBD_STATUS:#x}               ; buffer holds the edge-triggered line high
        test al, 1                           ; and no interrupt would ever come
        jz kbd_flushed
        in al, {KBD_DATA:#x}
        jmp kbd_flush
kbd_flushed:
        in al, {PIC_MASTER_DATA:#x}
        and al, {0xFF & ~(1 << KBD_IRQ):#x}  ; unmask IRQ 1
        out {PIC_MASTER_DATA:#x}, al
        mov eax, 1
        pop edx
        ret
kbd_absent:
        xor eax, eax
        pop edx
        ret
probe_sensor:                                ; the sensor at 0x300, IRQ 5: attach
        push edx
        mov edx, {SENSOR_DATA:#x}
        mov al, {SENSOR_IRQ}
        call expect_port_irq
        jne sensor_absent
        mov dx, {SENSOR_STATUS:#x}
        in al, dx
        cmp al, 0xff
        je sensor_absent
        mov dx, {PIC_MASTER_ELCR:#x}         ; ELCR: line 5 level-triggered, as the
        in al, dx                            ; device keeps its line up until served
        or al, {1 << SENSOR_IRQ:#x}
        out dx, al
        mov dx, {SENSOR_CONTROL:#x}
        mov al, 1                            ; CONTROL: interrupt enable
        out dx, al
        in al, {PIC_MASTER_DATA:#x}
        and al, {0xFF & ~(1 << SENSOR_IRQ):#x} ; unmask IRQ 5
        out {PIC_MASTER_DATA:#x}, al
        mov eax, 1
        pop edx
        ret
sensor_absent:
        xor eax, eax
        pop edx
        ret
expect_port_irq:                             ; edi = entry: ZF = 1 if it has port dx, IRQ al
        cmp [edi + 8], dx
        jne expect_done
        cmp [edi + 12], al
expect_done:
        ret
"""
