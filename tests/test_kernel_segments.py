"""The kernel's own data segment. The COS's DS (0x10) ends below the kernel, and a VM's
is the VM's: the kernel's x86 must not reach its memory through them. `common` pushes
the interrupted code's DS..GS into the frame and loads KERNEL_DATA_SEL; the exit pops
them back (frame.py)."""
from test_takeover import booted, insmod
from vmkit.hw.x86 import decode_segment
from vmkit.kernel import layout, save_area
from vmkit.kernel.frame import Frame

SEGMENTS = ("ds", "es", "fs", "gs")


def _descriptor(board, sel):
    _, base, _, _ = board.cpu["gdtr"]
    return decode_segment(board.memory.read(base + (sel & ~7), 8))


def test_the_kernel_runs_on_its_own_data_segment_and_gives_the_world_its_own_back():
    board, cos, loader = booted(vm_tick=None)
    insmod(board, cos, loader)
    kernel = loader.kernel
    vm = kernel.install_vm("l: jmp l", 0x4000)
    entries = {}                                      # who entered -> (CPU's DS, ES; frame's DS..GS)
    def at_dispatch(cpu):
        frame = Frame(board.memory, cpu["esp"])
        if frame.vector < 0x100:                      # a trap's or an interrupt's frame
            entries.setdefault(frame.cs & 3, set()).add(
                (cpu["ds"], cpu["es"], tuple(getattr(frame, s) for s in SEGMENTS)))
    board.cpu.on_execute(kernel.base + kernel.image.dispatch, at_dispatch)
    resumed = set()                                   # the COS's segments where it runs again
    for _ in range(2000):
        board.run(100)
        if board.cpu.cpl == 1:
            resumed.add(tuple(board.cpu[s] for s in SEGMENTS))
    cos_sel, vm_sel = layout.COS_DATA_SEL, save_area.read_area(board.memory, vm.area)["ds"]
    kernel_data = layout.KERNEL_DATA_SEL
    # the COS's data segment would refuse the kernel's accesses: it ends below the kernel
    assert _descriptor(board, cos_sel).limit < kernel.base
    assert _descriptor(board, kernel_data).limit == 0xFFFFFFFF
    # entered from the COS (CPL 1): the kernel's DS/ES; from the VM (CPL 3) through its VMM: the
    # VMM's, whose limit reaches the kernel (claim 22), or the kernel's once the switch loaded it;
    # the world's own in the frame either way
    assert entries[1] == {(kernel_data, kernel_data, (cos_sel,) * 4)}
    vmm_data = layout.VMM_DATA_SEL
    assert vm_sel & 3 == 3 and entries[3] == {(vmm_data, vmm_data, (vm_sel,) * 4),
                                              (kernel_data, kernel_data, (vm_sel,) * 4)}
    # the exit's pops gave the COS its own back
    assert resumed == {(cos_sel,) * 4}
