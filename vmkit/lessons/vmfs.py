"""What notebook 10 shows of VMFS, read from the disk's bytes (claims 23, 43).

`file_map` decodes one file's descriptor and pointer blocks straight from
the volume's sectors (not from the library's copy), so a diagram drawn from
it shows what is on the disk now; `path` is the walk of one VDISK block.
"""
from vmkit.kernel import vmfs_address as A
from vmkit.kernel.vmfs_format import FD_SIZE, PB_ADDRESSES, PB_SIZE, SECTOR, FileDescriptor, PointerBlock


def file_map(vol, name, show=6, also=()):
    """{'descriptor': n, 'fd': FileDescriptor, 'pointer_blocks': [(p, [(i, address)])],
    'blocks': [(b, address, disk_sector)]}: the blocks shown are the first `show`, the last,
    and those in `also` (a highlighted block); the rest are counted in 'hidden'."""
    n, _ = vol.descriptor(name)
    fd = FileDescriptor.unpack(vol._read(vol.sb.fd_table + n * FD_SIZE, FD_SIZE))
    wanted = sorted({b for b in (*range(min(show, fd.blocks)), fd.blocks - 1, *also)
                     if 0 <= b < fd.blocks})
    pointer_blocks, blocks = [], []
    if fd.pointer_blocks:
        for i in sorted({b // PB_ADDRESSES for b in wanted}):
            p = A.number(fd.addresses[i])
            entries = PointerBlock.unpack(vol._read(vol.sb.pb_table + p * PB_SIZE, PB_SIZE)).addresses
            shown = [(b % PB_ADDRESSES, entries[b % PB_ADDRESSES]) for b in wanted
                     if b // PB_ADDRESSES == i]
            pointer_blocks.append((i, p, shown))
            blocks += [(i * PB_ADDRESSES + j, address) for j, address in shown]
    else:
        blocks = [(b, fd.addresses[b]) for b in wanted]
    first = getattr(vol.device, "first", 0)
    blocks = [(b, address, first + (vol.sb.fb_area + A.number(address) * vol.bs) // SECTOR)
              for b, address in blocks]
    return {"descriptor": n, "fd": fd, "pointer_blocks": pointer_blocks, "blocks": blocks,
            "hidden": fd.blocks - len(blocks)}


def path(vol, name, block):
    """The steps from a VDISK block to its disk sector, as text lines."""
    r = vol.resolve(name, block)
    steps = [f"VDISK block {block} of '{name}'",
             f"descriptor {r.descriptor}: addresses[{r.fd_index}] = "
             + (A.describe(A.pb(r.pointer_block)) if r.pointer_block is not None else A.describe(r.address))]
    if r.pointer_block is not None:
        steps.append(f"pointer block {r.pointer_block}: addresses[{r.pb_index}] = {A.describe(r.address)}")
    steps.append(f"file block {r.file_block} = disk sector {r.disk_sector}"
                 + (" (TBZ: reads as zeros)" if r.tbz else ""))
    return steps
