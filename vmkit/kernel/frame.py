"""The trap frame on the kernel stack, as the stubs leave it for the dispatcher.

    esp+0   pushad: edi esi ebp (esp) ebx edx ecx eax
    esp+32  vector, error code (the stub pushes 0 where the CPU pushed none)
    esp+40  eip cs eflags            (pushed by the CPU)
    esp+52  esp ss                   (only when the trap came from CPL > 0)
Reading and writing it is how the kernel changes what the interrupted code
sees when the stub's popad/iretd return to it.
"""
from .words import Words

FIELDS = ("edi", "esi", "ebp", "esp0", "ebx", "edx", "ecx", "eax", "vector", "error",
          "eip", "cs", "eflags", "esp", "ss")


class Frame(Words):
    FIELDS = FIELDS

    @property
    def from_cos(self):
        return self.cs & 3 == 1

    def push(self, value):
        """Push onto the interrupted (COS) stack: flat segments, so SS base is 0."""
        self.esp -= 4
        self.memory.write_u32(self.esp, value, code=False)

    def pop(self):
        value = self.memory.read_u32(self.esp)
        self.esp += 4
        return value
