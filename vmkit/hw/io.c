/* in/out below the I/O privilege level: the CPU's check, in the hook Unicorn calls.
 *
 * Unicorn checks neither IOPL nor the TSS's I/O permission bitmap (measured, 2.1.4), so
 * the platform does (CPU._io_denied says the same in Python, for a machine without a C
 * compiler): at CPL 0, or a CPL no higher than EFLAGS.IOPL, the access goes through
 * (never in virtual-8086 mode); else every byte of the access must have its bit clear in
 * the bitmap, which starts at the TSS offset in the TSS's word at +102, and the two bytes
 * the CPU reads from the access's first byte of it must lie inside TR's limit.
 * A refused in/out is noted here (its EIP, the instructions counted before it) and the
 * run stops: a register written inside an I/O hook is not honoured until the
 * translation block ends, so the #GP is delivered by the CPU's run loop (cpu.py).
 * An allowed one reaches the board's port bus, which is Python (device_in/out).
 *
 * Refused, the COS's every EOI (an `out 0x20` at CPL 1) costs this C and one stop,
 * not a call into Python and four more back into Unicorn for its registers. */
#include "vmkit.h"

typedef uint32_t (*device_in_fn)(void *uc, uint32_t port, int size, void *user);
typedef void (*device_out_fn)(void *uc, uint32_t port, int size, uint32_t value, void *user);


#define IOPL_SHIFT 12
#define EFLAGS_VM 0x20000u
#define TSS_IOMAP 102            /* the bitmap's offset, a word in the 104-byte TSS */

struct vmkit_io {
    reg_read_fn reg_read;
    stop_fn stop;
    device_in_fn device_in;      /* CPU's Python: the port bus */
    device_out_fn device_out;
    const uint8_t *memory;       /* the machine's physical memory (memory.py's buffer) */
    uint64_t memory_size;
    const uint64_t *count;       /* the instruction counter's count (counter.c) */
    int64_t cs_id, eflags_id, eip_id, tr_id, eax_id;
    uint64_t refused;            /* 1 after a refused in/out, until the CPU takes it */
    uint64_t eip, at_count;      /* that in/out's EIP, and the instructions before it */
};

/* Memory the machine lacks reads as all ones, as the bus gives nothing there: refused. */
static unsigned byte_at(const struct vmkit_io *io, uint64_t at)
{
    return at < io->memory_size ? io->memory[at] : 0xFF;
}

static int refused(void *uc, const struct vmkit_io *io, uint32_t port, int size)
{
    uint64_t cs = 0, eflags = 0;
    struct vmkit_mmr tr = {0, 0, 0, 0};
    io->reg_read(uc, (int)io->cs_id, &cs);
    io->reg_read(uc, (int)io->eflags_id, &eflags);
    /* virtual-8086 mode is CPL 3 whatever CS holds (a paragraph there), and its in/out
     * are checked against the bitmap alone, IOPL or not (Intel's IN/OUT: VM = 1) */
    if (!(eflags & EFLAGS_VM)) {
        unsigned cpl = cs & 3;
        if (cpl == 0 || cpl <= ((eflags >> IOPL_SHIFT) & 3))
            return 0;
    }
    io->reg_read(uc, (int)io->tr_id, &tr);
    uint64_t tss = tr.base, limit = tr.limit;
    if (limit < TSS_IOMAP + 1)
        return 1;
    uint64_t bitmap = tss + (byte_at(io, tss + TSS_IOMAP) | byte_at(io, tss + TSS_IOMAP + 1) << 8);
    uint64_t first = bitmap + port / 8;
    /* the CPU reads two bytes from `first` for any access (Bochs, QEMU: the map's last byte
     * must be followed by one more inside the limit), and the access's last bit lies in them */
    if (first + 1 > tss + limit)
        return 1;
    /* up to four ports' bits lie in the two bytes from `first` (the second masked off
     * when the access does not reach it) */
    unsigned pair = byte_at(io, first) | byte_at(io, first + 1) << 8;
    return (pair >> (port % 8)) & ((1u << size) - 1) ? 1 : 0;
}

static void refuse(void *uc, struct vmkit_io *io)
{
    uint64_t eip = 0;
    io->reg_read(uc, (int)io->eip_id, &eip);
    io->refused = 1;
    io->eip = eip;
    io->at_count = *io->count;
    io->stop(uc);
}

uint32_t vmkit_io_in(void *uc, uint32_t port, int size, struct vmkit_io *io)
{
    if (refused(uc, io, port, size)) {
        uint64_t eax = 0;
        refuse(uc, io);
        io->reg_read(uc, (int)io->eax_id, &eax);
        return (uint32_t)(eax & ((1ull << (8 * size)) - 1));   /* the register keeps its value */
    }
    return io->device_in(uc, port, size, 0);
}

void vmkit_io_out(void *uc, uint32_t port, int size, uint32_t value, struct vmkit_io *io)
{
    if (refused(uc, io, port, size)) {
        refuse(uc, io);
        return;
    }
    io->device_out(uc, port, size, value, 0);
}
