"""Where things are inside the vmkernel's memory (offsets from its load base).

The COS gives the loader one contiguous block (cos_alloc_pages); the image
is copied to its start and everything the kernel keeps lives after it, so
every interrupt gate, descriptor table and stack is in memory "allocated
to and controlled by the kernel" (claim 4).
"""
PAGE = 0x1000
KERNEL_PAGES = 64                 # 256 KiB asked of the COS
KERNEL_SIZE = KERNEL_PAGES * PAGE # the kernel's block: [base, kernel_end(base)) (below)
CODE = 0x0000                     # the image (header + x86 code)
DATA = 0x8000                     # kernel variables (below)
GDT = 0x9000
IDT = 0xA000                      # 256 gates, 2 KiB
TSS = 0xB000                      # TSS + I/O permission bitmap (8 KiB + 1)
COS_STATE = 0xE000                # the COS's virtual CPU (cos_vcpu.py)
PATCHES = 0xF000                  # table of the COS instructions patched to int3
HEAP, HEAP_END = 0x10000, 0x28000 # pages the kernel hands out (syscalls.py, nic_share.py)
PERCPU = 0x28000                  # each CPU's own block (smp.py), PERCPU_SIZE apart:
PERCPU_SIZE = 0x8000
CPU_TSS = 0x0000                  #   its TSS (CPU 1; CPU 0 keeps TSS below, with the I/O bitmap)
CPU_VM_TSS = 0x0100               #   the TSS its VM worlds run with (CPU 1; CPU 0 keeps VM_TSS)
CACHE_COUNTERS = 0x0200           #   its mapping cache's counters (mapcache.py)
SYSTEM_WORLD = 0x0300             #   its system world's block (save area, as a world's)
CPU_STACK_TOP = 0x2000            #   its kernel stack (CPU 1; CPU 0's is under STACK_TOP)
SYSTEM_PAGEDIR = 0x2000           #   its system world's page directory and tables (<= 4 pages)
WINDOW_TABLE = 0x7000             #   the page table of its mapping-cache window
STACK_TOP = KERNEL_SIZE           # CPU 0's kernel stack grows down from the end of the block

# kernel variables at DATA
# where the stub goes after the dispatcher (written into the frame's vector slot, per CPU):
GO_BACK, GO_IDLE, GO_WORK = 0, 1, 2  # 0 back (iretd), 1 idle (sti; hlt), 2 the kernel's own work
GO_SWITCH = 3                     # the world switch's x86 (switch.py): ESI/EDI = save areas
GO_SHOOTDOWN = 4                  # a TLB shootdown taken: invlpg the mapping window (mapcache.py)
GO_UNLOAD = 6                     # the unload: the COS's tables and a return to it at CPL 0 (unload.py)
GO_PARK = 7                       # another CPU parks: paging off, firmware tables, cli; hlt (unload.py)
WORK_LENGTH = DATA + 0x04         # iterations of one piece of kernel work
WORK_DONE = DATA + 0x08           # iterations done, ever: the kernel's progress
TAKEOVER_GDTR = DATA + 0x10       # lgdt's operand at the takeover (u16 limit, u32 base; loader.py)
TAKEOVER_IDTR = DATA + 0x18       # lidt's operand at the takeover
KERNEL_IDTR = TAKEOVER_IDTR       # (the kernel's own IDT: the world switch loads it too, switch.py)
UNLOAD = DATA + 0x40              # what the unload's x86 loads into the CPU (unload.py's UnloadRecord)
DEVICES = DATA + 0x100            # the device list as the COS handed it over
SCSI_COS_RB = DATA + 0x400        # the kernel's copy of the COS's SCSI request block (scsi_share.py)

# selectors of the kernel's GDT: the COS keeps its own selector numbers, now DPL 1
COS_CODE_SEL, COS_DATA_SEL = 0x08, 0x10
KERNEL_CODE_SEL, KERNEL_DATA_SEL, KERNEL_TSS_SEL = 0x20, 0x28, 0x30
COS_RPL = 1                       # the displaced COS runs at CPL 1
GDT_ENTRIES = 7

# worlds and VMs (worlds.py, switch.py, vmm/): after the kernel TSS's I/O bitmap (ends ~0xD069)
VM_TSS = 0xD100                   # one TSS for every VM world: ESP0 = the kernel stack, no I/O
                                  # bitmap (I/O map base past the limit), so CPL 3 gets no port
WORLDS = 0xD200                   # one 256-byte block per world: save area (save_area.py) + vCPU
WORLD_SIZE = 0x100
MAX_WORLDS = (COS_STATE - WORLDS) // WORLD_SIZE      # 14
USER_CODE_SEL, USER_DATA_SEL, VM_TSS_SEL = 0x38, 0x40, 0x48   # DPL 3 flat code/data; the VM TSS
CPU1_TSS_SEL, CPU1_VM_TSS_SEL = 0x50, 0x58                     # CPU 1's TSS and its VMs' (smp.py)
USER_RPL = 3

# A VM's VMM region (vmm/region.py): VMM_SIZE bytes of host pages taken with the VM's memory
# from the top of RAM, mapped supervisor-only twice in the VM's address space (paging.py): at
# VMM_BASE, just below the kernel (the VMM's own view: its code runs there, its gates point
# there, so the entry breakpoint is one linear address whichever VM runs), and at their host
# address (identity, as all kernel memory). Offsets from the region's start:
VMM_SIZE = 0x4000
VMM_GDT = 0x0000                  # the VM's GDT: the kernel's entries, its own guest and VMM segments
VMM_IDT = 0x0800                  # 256 gates to the VMM's stubs, 2 KiB
VMM_VCPU = 0x1000                 # the VM's virtual CPU (cos_vcpu.py's layout)
VMM_PATCHES = 0x1100              # the guest's iretd patched to int3 (patches.py's table), to VMM_ENTRIES
VMM_ENTRIES = 0x1800              # u32: entries into this VMM, counted by its own x86 through DS
VMM_CODE = 0x2000                 # the VMM's x86: 256 entry stubs, 16 bytes apart, then vmm_common
VMM_CODE_SEL, VMM_DATA_SEL = 0x60, 0x68   # DPL 0, base 0, limit the kernel block's end (claim 22)
VMM_GDT_LIMIT = VMM_DATA_SEL + 7  # a VM's GDT: the kernel's entries, then the VMM's two
VMM_DECIDED = 0x80000000          # in the frame's vector slot: the VMM handled it; the rest: where to go


def kernel_end(kernel_base):
    """The first byte past the kernel's block: the one name for where the kernel ends
    (Kernel.end; the VMM's segment limit, the VMs' floor, every VM's kernel mapping)."""
    return kernel_base + KERNEL_SIZE


def vmm_base(kernel_base):
    """Where every VM's VMM region lies in its linear address space: just below the kernel."""
    return kernel_base - VMM_SIZE
