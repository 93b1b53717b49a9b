"""The COS's x86 source: the main loop and the commands typed on COM1.

The idle is `sti; hlt`; each pass looks (IRQs held) at what the handlers
left: a command line to run, ticks to print.
"""
from . import layout as L
from .constants import CMOD

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
        mov edi, c_rmmod
        call streq
        je cmd_rmmod
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
        mov esi, s_insmod_failed
        cmp dword ptr [{L.MODULE_RESULT:#x}], 0
        jl insmod_said                       ; a negative eax: init failed (as Linux's init_module)
        inc dword ptr [{L.MODULES_LOADED:#x}]
        mov esi, s_insmod_ok
insmod_said:
        call cos_print
        jmp cmd_done
insmod_bad:
        mov esi, s_insmod_bad
        call cos_print
        jmp cmd_done
cmd_rmmod:                                   ; the module's exit (header word 3), at the COS's CPL
        cmp dword ptr [{L.MODULE_AREA:#x}], {CMOD:#x}
        jne rmmod_none
        mov eax, [{L.MODULE_AREA + 12:#x}]
        test eax, eax
        jz rmmod_none
        cmp eax, [{L.MODULE_AREA + 4:#x}]
        jae rmmod_none
        mov esi, s_rmmod_exit
        call cos_print
        add eax, {L.MODULE_CODE:#x}
        pushad
        call eax
        mov [{L.MODULE_RESULT:#x}], eax
        popad
        mov esi, s_rmmod_failed
        cmp dword ptr [{L.MODULE_RESULT:#x}], 0
        jl rmmod_said
        dec dword ptr [{L.MODULES_LOADED:#x}]
        mov esi, s_rmmod_ok
rmmod_said:
        call cos_print
        jmp cmd_done
rmmod_none:
        mov esi, s_rmmod_none
        call cos_print
        jmp cmd_done
"""
