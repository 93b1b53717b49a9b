"""Exercise 10 — resolve a VDISK block (claims 23, 43).

A VM's virtual disk is a file in VMFS. For every block of every guest
request the kernel asks this function where the block is:

    fd             the file's descriptor (kernel/vmfs_format.py FileDescriptor), as on the disk:
                     fd.blocks          how many blocks the file has
                     fd.pointer_blocks  0 while the file has at most 256 blocks; then how many
                                        pointer blocks it has (one per 1024 blocks)
                     fd.addresses       256 block addresses (a tuple of ints)
    block          the VDISK block number, 0 <= block < fd.blocks
    pointer_block  pointer_block(p) gives the 1024 addresses held in pointer block number p
                   (read from kernel memory, where the kernel keeps this file's pointer blocks)

Return the file block address of `block`, exactly as stored (an int; its low three bits say it
is a file block, and bit 5 may say "to be zeroed": leave them).

A file of at most 256 blocks is *direct*: fd.addresses[block] is the block's address. A longer
file is *indirect*: fd.addresses[i] is the address of a pointer block (claim 23's "pointer block
pointer"), whose entry j is the address of block i * 1024 + j. An address names its pointer
block by a number: `number(address)` (kernel/vmfs_address.py) gives it. docs/vmfs.md
("Resolving a VDISK block") has the walk.

The kernel checks what you return: anything but a file block address in range fails the guest's
request (its driver sees CHECK CONDITION). A file block of the wrong place is not caught by the
kernel: the guest reads someone else's bytes.
"""
from vmkit.kernel.vmfs_address import number

DIRECT = 256                   # addresses in a descriptor
PER_POINTER_BLOCK = 1024       # addresses in a pointer block


def resolve(fd, block, pointer_block):
    """The file block address of VDISK block `block`."""
    ### BEGIN SOLUTION
    if not fd.pointer_blocks:
        return fd.addresses[block]
    p = number(fd.addresses[block // PER_POINTER_BLOCK])
    return pointer_block(p)[block % PER_POINTER_BLOCK]
    ### END SOLUTION
