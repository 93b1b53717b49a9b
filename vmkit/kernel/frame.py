"""The trap frame on the kernel stack, as the stubs leave it for the dispatcher.

    esp+0   pushad: edi esi ebp (esp) ebx edx ecx eax
    esp+32  gs fs es ds              the interrupted code's data segments: `common`
                                     pushes them and loads the kernel's own, whose
                                     limit reaches it (the COS's ends below it)
    esp+48  vector, error code (the stub pushes 0 where the CPU pushed none)
    esp+56  eip cs eflags            (pushed by the CPU)
    esp+68  esp ss                   (only when the trap came from CPL > 0)
Reading and writing it is how the kernel changes what the interrupted code
sees when the stub's popad/iretd return to it.
"""

from .words import Words, u32s

FLAT = 0xFFFFFFFF

FIELDS = ("edi", "esi", "ebp", "esp0", "ebx", "edx", "ecx", "eax", "gs", "fs", "es", "ds",
          "vector", "error", "eip", "cs", "eflags", "esp", "ss")
SEGMENTS = ("ds", "es", "fs", "gs")

# The way back from the kernel, through the frame: the interrupted code's registers and
# data segments (a segment register may be reloaded only with a selector the CPU accepts
# for it, checked again here), then iretd. Every exit of the kernel's x86 ends so.
EXIT = """\
        popad
        pop gs
        pop fs
        pop es
        pop ds
        add esp, 8              ; vector, error code
        iretd"""


class StackPastLimit(Exception):
    """A push or pop the kernel does on the COS's stack would reach past the
    limit of its stack segment: the CPU would refuse it (#SS), so the kernel does."""
    def __init__(self, address, size, limit):
        super().__init__(f"{size} bytes at {address:#x} on the COS's stack, past its limit {limit:#x}")
        self.address, self.size, self.limit = address, size, limit


class Frame(Words):
    FIELDS = FIELDS
    __slots__ = ("stack_limit",)

    def __init__(self, memory, address, stack_limit=FLAT):
        """stack_limit: the last offset of the interrupted (COS) stack's segment
        (base 0). The kernel's pushes and pops there are Python writes, which no
        segment-limit check sees: they check it here, as the CPU's own would.
        (A frame inside the memory buffer is made by __new__, as its words' fields.)"""
        self.memory, self.address, self.stack_limit = memory, address, stack_limit

    def __new__(cls, memory, address, stack_limit=FLAT):
        """Words.__new__'s, written out (the kernel makes a frame per entry)."""
        view = getattr(memory, "_view", None)
        if view is not None and 0 <= address and address + cls.SIZE <= len(view):
            frame = cls._in_memory.from_address(memory.address + address)
            frame.memory, frame.address, frame.stack_limit = memory, address, stack_limit
            return frame
        return object.__new__(cls)

    @property
    def from_cos(self):
        return self.cs & 3 == 1

    def check_stack(self, below=0, above=0):
        """Raise StackPastLimit, before anything changes, unless the `below` bytes
        under ESP and the `above` bytes from ESP up lie inside the stack's segment."""
        esp = self.esp
        low, high = esp - below, esp + above - 1
        if low < 0 or max(high, esp - 1) > self.stack_limit:
            raise StackPastLimit(low & FLAT, below + above, self.stack_limit)

    def push(self, value):
        """Push onto the interrupted (COS) stack: base 0, its limit checked (check_stack's
        test for the 4 bytes below ESP, with ESP read once: the kernel pushes 3-4 words
        per interrupt it gives the COS)."""
        esp = self.esp
        low = esp - 4
        if low < 0 or esp - 1 > self.stack_limit:
            raise StackPastLimit(low & FLAT, 4, self.stack_limit)
        self.esp = low
        self.memory.write_u32(low, value, code=False)

    def push_words(self, *values):
        """Push `values` in this order (the first at the highest address), as that many
        `push`es would, checked the same way (the first push's top, the last's bottom) before
        anything changes: ESP written once, the words stored in one write (the kernel pushes
        3-4 words per interrupt it gives the COS)."""
        n = 4 * len(values)
        esp = self.esp
        low = esp - n
        if low < 0 or esp - 1 > self.stack_limit:
            raise StackPastLimit(low & FLAT, n, self.stack_limit)
        memory, words = self.memory, [v & FLAT for v in values]
        words.reverse()
        view = getattr(memory, "_view", None)
        if view is None or low + n > len(view):          # (memory's own checks: a bus error)
            memory.write(low, u32s(len(values)).pack(*words), code=False)
        else:
            u32s(len(values)).pack_into(view, low, *words)
        self.esp = low

    def pop(self):
        """Pop from it, likewise (check_stack's test for the 4 bytes from ESP up)."""
        esp = self.esp
        if esp < 0 or esp + 3 > self.stack_limit:
            raise StackPastLimit(esp & FLAT, 4, self.stack_limit)
        value = self.memory.read_u32(esp)
        self.esp = esp + 4
        return value

    def pop_words(self, n):
        """`n` pops at once, in the order they pop (the word at ESP first), checked as
        check_stack(above=4·n) checks them before anything changes: ESP written once, the
        words read in one access (the COS's patched iretd pops three)."""
        esp = self.esp
        size = 4 * n
        if esp < 0 or esp + size - 1 > self.stack_limit:
            raise StackPastLimit(esp & FLAT, size, self.stack_limit)
        memory = self.memory
        view = getattr(memory, "_view", None)
        if view is None or esp + size > len(view):        # (memory's own checks: a bus error)
            words = u32s(n).unpack(memory.read(esp, size))
        else:
            words = u32s(n).unpack_from(view, esp)
        self.esp = esp + size
        return words
