"""A guest OS with a network driver: real x86 at CPL 3, loaded within its VM (claims 18, 39).

The driver finds its device by reading NET_PORT + REGION (the shared
region's address, net_device.py), turns on its receive interrupt, and from
then on talks to the kernel through the region's bytes only (net_ring.py,
whose names give every offset below):
  send     write the frame into its part of the region (FRAMES), point the
           TX slot at tx_producer at it, move tx_producer; after the last
           frame of a batch, one `out` to REQUEST: the request for transmission.
  receive  its handler at gate 0x20 + NET_LINE of its own IDT takes every RX
           slot from rx_consumer to rx_producer, copying the frame the slot's
           pointer names into its inbox, then moves rx_consumer and sends EOI.

A program is a list of steps, each printing one line per frame on the VM's console:
  ("send", dst_mac, [payload, ...])  a batch: one frame per payload, one request
  ("recv", n)                        wait for n frames, print "<name> got <payload>"
  ("echo", n)                        wait for n frames, send each back to its sender,
                                     one request each, print "<name> echoed <payload>"
  ("flood", n)                       n requests in a row
  ("stream", dst_mac, batch, times[, size])  `times` batches of `batch` frames of `size`
                                     bytes (default 60), one request each
  ("sink", n)                        wait for n frames, print one line at the end
  ("asm", text)                      x86 of a test's own, with ebx = the region's address
Frames are dst | src (the VM's MAC, read from the region) | type 0x88B5 | payload,
padded to 60 bytes; a payload prints up to its first NUL.

    0x0000          code
    0x3000          variables: ticks, seen, IDT pointer, region, received, handled, lengths
    0x3800          the guest's IDT (timer 0x20, network 0x20 + NET_LINE)
    0x4000          its inbox: SLOTS frames
    REGION          the shared region (net_ring.SIZE bytes)
    top             the stack
"""
from vmkit.kernel import net_ring
from vmkit.kernel.net_ring import BUFFER, FRAMES, SLOTS, NetHeader, Slot
from vmkit.kernel.vm_net import NET_LINE
from . import guests
from .disk_guest import _gate, _say
from .net_device import CONTROL, NET_PORT, REGION as REGION_REG, REQUEST

VARS, IDT = guests.VARS, guests.IDT      # (guests.load_idt's table pointer and IDT)
INBOX, REGION = 0x4000, 0x8000
V_REGION, V_RECEIVED, V_HANDLED, V_LENGTHS = VARS + 0x10, VARS + 0x14, VARS + 0x18, VARS + 0x40
MEMORY = REGION + net_ring.SIZE + 0x1000           # the region, then a page of stack
GATES = 0x20 + NET_LINE + 1
SHIFT = BUFFER.bit_length() - 1
ETHERTYPE = b"\x88\xb5"                             # local experimental
H, S = NetHeader.OFFSET, Slot.OFFSET


def frame(dst, payload, src=b"\0" * 6):
    """The bytes the driver sends for `payload` to `dst` (src filled in by the driver)."""
    return (bytes(dst) + bytes(src) + ETHERTYPE + bytes(payload)).ljust(60, b"\0")


def _driver(base):
    return f"""
{guests.timer_handler(base)}
nirq:   pushad                          ; its network interrupt: take every filled RX slot
        mov ebx, [{base + V_REGION:#x}]
nl:     mov ebp, [ebx + {H['rx_consumer']:#x}]
        cmp ebp, [ebx + {H['rx_producer']:#x}]
        je nd
        lea eax, [ebx + ebp*8 + {net_ring.RX_SLOTS:#x}]
        mov esi, [eax + {S['buffer']:#x}]       ; the pointer the kernel set
        movzx ecx, word ptr [eax + {S['length']:#x}]
        mov edi, [{base + V_RECEIVED:#x}]
        and edi, {SLOTS - 1:#x}
        mov [edi*4 + {base + V_LENGTHS:#x}], ecx
        shl edi, {SHIFT:#x}
        add edi, {base + INBOX:#x}
        add ecx, 3                      ; by dwords, as a driver copies: a 60-byte frame in 15
        shr ecx, 2                      ; (both buffers are 2 KiB: the last dword stays inside;
                                        ; the clock counts every rep iteration: by bytes the
                                        ; handler took 77 instructions a frame, now 34, docs/net.md)
        rep movsd
        inc dword ptr [{base + V_RECEIVED:#x}]
        inc ebp
        and ebp, {SLOTS - 1:#x}
        mov [ebx + {H['rx_consumer']:#x}], ebp
        jmp nl
nd:     mov al, 0x20
        out 0x20, al
        popad
        iretd
next:   mov eax, [{base + V_HANDLED:#x}]    ; -> esi: the next inbox frame, ecx: its length
        cmp eax, [{base + V_RECEIVED:#x}]
        jne nx1
        hlt                             ; the other worlds run; a frame's interrupt wakes it
        jmp next
nx1:    and eax, {SLOTS - 1:#x}
        mov ecx, [eax*4 + {base + V_LENGTHS:#x}]
        shl eax, {SHIFT:#x}
        lea esi, [eax + {base + INBOX:#x}]
        inc dword ptr [{base + V_HANDLED:#x}]
        ret
pay:    push esi                        ; print the payload of the frame at esi, ecx bytes
        push ecx
        add esi, 0xe
        sub ecx, 0xe
        mov edx, 0x3f8
pl:     test ecx, ecx
        jz pe
        lodsb
        test al, al
        jz pe
        out dx, al
        dec ecx
        jmp pl
pe:     mov al, 0xa
        out dx, al
        pop ecx
        pop esi
        ret
echo:   push esi                        ; the frame at esi (ecx bytes) back to its sender
        push ecx
        mov ebx, [{base + V_REGION:#x}]
        mov edx, [ebx + {H['tx_producer']:#x}]
        mov edi, edx
        shl edi, {SHIFT:#x}
        lea edi, [ebx + edi + {FRAMES:#x}]
        push edi
        rep movsb
        pop edi
        mov eax, [edi + 6]
        mov [edi], eax
        mov ax, [edi + 0xa]
        mov [edi + 4], ax
        mov eax, [ebx + {H['mac']:#x}]
        mov [edi + 6], eax
        mov ax, [ebx + {H['mac'] + 4:#x}]
        mov [edi + 0xa], ax
        pop ecx
        lea eax, [ebx + edx*8 + {net_ring.TX_SLOTS:#x}]
        mov [eax + {S['buffer']:#x}], edi
        mov [eax + {S['length']:#x}], cx
        mov word ptr [eax + {S['flags']:#x}], 0
        inc edx
        and edx, {SLOTS - 1:#x}
        mov [ebx + {H['tx_producer']:#x}], edx
        mov edx, {NET_PORT + REQUEST:#x}
        out dx, eax                     ; the request for transmission
        pop esi
        ret
setup:  {_gate(base + IDT, 0x20, "timer")}
        {_gate(base + IDT, 0x20 + NET_LINE, "nirq")}
        {guests.load_idt(base, GATES * 8 - 1, sti=False)}
        mov edx, {NET_PORT + REGION_REG:#x}
        in eax, dx                      ; find the device: the shared region's address
        mov [{base + V_REGION:#x}], eax
        mov edx, {NET_PORT + CONTROL:#x}
        mov eax, 1
        out dx, eax                     ; interrupt on receive
        sti
"""


def _queue(base, data):
    """One frame into the TX slot at tx_producer; tx_producer moves. No request."""
    padded = data.ljust(-(-len(data) // 4) * 4, b"\0")
    words = [int.from_bytes(padded[o:o + 4], "little") for o in range(0, len(padded), 4)]
    stores = "\n".join(f"        mov dword ptr [edi + {4 * k:#x}], {w:#x}"
                       for k, w in enumerate(words) if w or len(words) <= 16)
    if len(words) > 16:                             # a long frame: zeros by one rep stosd (code stays small)
        stores = f"""        push ecx
        push edi
        xor eax, eax
        mov ecx, {len(words):#x}
        rep stosd
        pop edi
        pop ecx
{stores}"""
    return f"""
        mov ebx, [{base + V_REGION:#x}]
        mov ecx, [ebx + {H['tx_producer']:#x}]
        mov edi, ecx
        shl edi, {SHIFT:#x}
        lea edi, [ebx + edi + {FRAMES:#x}]
{stores}
        mov eax, [ebx + {H['mac']:#x}]
        mov [edi + 6], eax
        mov ax, [ebx + {H['mac'] + 4:#x}]
        mov [edi + 0xa], ax
        lea eax, [ebx + ecx*8 + {net_ring.TX_SLOTS:#x}]
        mov [eax + {S['buffer']:#x}], edi
        mov word ptr [eax + {S['length']:#x}], {len(data):#x}
        mov word ptr [eax + {S['flags']:#x}], 0
        inc ecx
        and ecx, {SLOTS - 1:#x}
        mov [ebx + {H['tx_producer']:#x}], ecx
"""


REQUEST_CODE = f"""
        mov edx, {NET_PORT + REQUEST:#x}
        out dx, eax                     ; the request for transmission
"""


def _loop(i, n, body):
    return f"""
        mov ebp, {n:#x}
r{i}:   push ebp
{body}
        pop ebp
        dec ebp
        jnz r{i}
"""


def _step(base, name, i, step):
    kind = step[0]
    if kind == "send":
        _, dst, payloads = step
        if not 1 <= len(payloads) < SLOTS:
            raise ValueError(f"step {i}: a batch is 1..{SLOTS - 1} frames, not {len(payloads)}")
        frames = "".join(_queue(base, frame(dst, p)) for p in payloads)
        return frames + REQUEST_CODE + _say(f"{name} sent {len(payloads)}\n") + "\n"
    if kind in ("recv", "echo"):
        _, n = step
        word = "got" if kind == "recv" else "echoed"
        body = ("        call next\n" + ("        call echo\n" if kind == "echo" else "")
                + _say(f"{name} {word} ") + "\n        call pay\n")
        return _loop(i, n, body)
    if kind == "stream":
        _, dst, batch, times, *size = step
        size = size[0] if size else 60
        if not 1 <= batch < SLOTS:
            raise ValueError(f"step {i}: a batch is 1..{SLOTS - 1} frames, not {batch}")
        if not 60 <= size <= 1514:
            raise ValueError(f"step {i}: a frame is 60..1514 bytes, not {size}")
        frames = "".join(_queue(base, frame(dst, (b"frame %d" % k).ljust(size - 14, b"\0")))
                         for k in range(batch))
        return _loop(i, times, frames + REQUEST_CODE) + _say(f"{name} streamed\n") + "\n"
    if kind == "sink":
        return _loop(i, step[1], "        call next\n") + _say(f"{name} sank {step[1]}\n") + "\n"
    if kind == "flood":
        return _loop(i, step[1], REQUEST_CODE) + _say(f"{name} flooded\n") + "\n"
    if kind == "asm":
        return f"        mov ebx, [{base + V_REGION:#x}]\n{step[1]}\n"
    raise ValueError(f"step {i}: {kind!r} is not send, recv, echo, flood, stream, sink or asm")


def program(name, steps):
    """A function of the guest's link address (install_vm gives 0) giving its source (install_vm's `guest`)."""
    return guests.driver_program(name, steps, _step, _driver, _say)
