"""A guest written in C: a freestanding program built with gcc as a flat binary linked at 0.

A VM's guest sees its memory from address 0 (kernel/paging.py), so an
unmodified program linked at 0 runs as a guest: its globals and string
literals sit at the addresses the linker gave them. `build` compiles C
source with

    gcc -m32 -ffreestanding -nostdlib -fno-pic -no-pie -static   (no libc; absolute
                                        addresses, no GOT: nothing relocates it)
        -fno-stack-protector             (its canary is read at %gs:0x14: no TLS here)
        -fno-asynchronous-unwind-tables  (no .eh_frame in the image)
        -Wl,-T,c/guest.ld  -Wl,--build-id=none   (linked at 0, _start first, no note
                                        section ahead of the code)
    objcopy -O binary                   (the bytes from address 0; .bss is left out:
                                        install_vm zeroes the VM's memory)

and returns the image for install_vm (entry 0: guest.ld puts _start, in
section .text.start, first). c/hello.c (HELLO) is a sample: it prints on its
console through the VM's virtual 16550 (an `out` to 0x3F8, which traps into
its VMM) using globals, a string literal and .bss.

gcc must be able to target 32-bit x86 (-m32: a multilib gcc or the
gcc-multilib package); `unavailable()` says why not when it cannot.
"""
import pathlib
import shutil
import subprocess
import tempfile

HERE = pathlib.Path(__file__).parent / "c"
LINKER_SCRIPT = HERE / "guest.ld"
HELLO = HERE / "hello.c"
FLAGS = ("-m32", "-ffreestanding", "-nostdlib", "-fno-pic", "-no-pie", "-static", "-fno-stack-protector",
         "-fno-asynchronous-unwind-tables", "-fno-builtin", "-Os")


class CGuestError(RuntimeError):
    """The C guest could not be built (no gcc, no 32-bit target, a compile error)."""


def build(source, extra_flags=()):
    """The flat binary (bytes, linked at 0, entry 0) of C `source`: a path to a .c file,
    or the program's text. Raises CGuestError naming what failed."""
    gcc, objcopy = shutil.which("gcc"), shutil.which("objcopy")
    if gcc is None or objcopy is None:
        raise CGuestError(f"cannot build a C guest: {'gcc' if gcc is None else 'objcopy'} is not installed")
    if isinstance(source, pathlib.Path) or (isinstance(source, str) and source.endswith(".c")
                                            and "\n" not in source):
        path = pathlib.Path(source)
        if not path.is_file():
            raise CGuestError(f"cannot build a C guest: no file {path}")
        text = path.read_text()
    elif isinstance(source, str):
        text = source
    else:
        raise CGuestError(f"a C guest's source is a path or C text, not {type(source).__name__}")
    if not text.strip():
        raise CGuestError("a C guest's source is empty: it needs a `void _start(void)`")
    with tempfile.TemporaryDirectory(prefix="cguest") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "guest.c").write_text(text)
        elf, image = tmp / "guest.elf", tmp / "guest.bin"
        said = _run([gcc, *FLAGS, *extra_flags, f"-Wl,-T,{LINKER_SCRIPT}", "-Wl,--build-id=none",
                     "-o", str(elf), str(tmp / "guest.c")], "gcc")
        if "entry symbol _start" in said:           # ld only warns: the image would start elsewhere
            raise CGuestError("the C guest defines no `_start`: its first instruction, at guest "
                              "address 0, is `_start` (vmm/c/guest.ld)")
        _run([objcopy, "-O", "binary", str(elf), str(image)], "objcopy")
        code = image.read_bytes()
    if not code:
        raise CGuestError("the C guest's image is empty: nothing was linked at 0")
    return code


def _run(argv, what):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CGuestError(f"{what} failed: {e}") from None
    if done.returncode:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise CGuestError(f"{what} failed (exit {done.returncode}): " + " | ".join(lines[-4:]))
    return done.stderr or ""


def unavailable():
    """None if gcc can build a 32-bit freestanding guest here, else why not (text)."""
    try:
        build("void _start(void) { for (;;) ; }\n")
    except CGuestError as e:
        return str(e)
    return None
