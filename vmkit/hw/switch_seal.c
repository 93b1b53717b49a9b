/* A world switch's sealing step, in C, at the counter's breakpoint (switch_seal.py says why).
 *
 * The kernel's switch x86 saves the running world into its save area, writes SAVED into the
 * frame's vector slot and jumps to the dispatcher, whose address is a breakpoint: the run would
 * stop there and the kernel's Python (switch.saved) seal the area, check the next one, tell the
 * limit filter about the GDT the load will lgdt, and leave GO_SWITCH and ESI = 0 for the load.
 * When the kernel has armed this CPU for that switch, vmkit_seal_step does those steps here,
 * in the same order, with the same values, and the run goes on: the instruction at the
 * breakpoint runs and counts as it would after the resume. Its three trace events are recorded
 * with the count the handler would have seen (struct vmkit_seal_events; switch_seal.py appends
 * them to the trace before anything else is).
 *
 * It declines (returns 0, before any byte or register has changed for good) whenever the
 * step is not the ordinary one: not armed, not SAVED in the frame, ESI/EDI not the armed
 * areas, the stack or an area outside RAM or the kernel's block, the stack not identity-mapped
 * under paging (or its tables unreadable, or a large page), the next area's CRC wrong (the
 * Python refuses that world), a limit configuration not prepared yet (the Python decodes it),
 * the record full. The run then stops at the breakpoint as without it, and the Python does all.
 *
 * Memory is the machine's RAM buffer, read physical = linear where the stack is identity-mapped
 * (the kernel's block is, in every address space: kernel/paging.py), as the Python's Frame and
 * save-area reads are. The CRC is zlib's CRC-32 (reflected 0xEDB88320, ~0 in and out). */
#include <string.h>

#include "vmkit.h"

typedef int (*reg_write_fn)(void *uc, int regid, const void *value);

/* Unicorn's ids, in this order (switch_seal.py fills them). */
enum { S_ESP, S_ESI, S_EDI, S_EFLAGS, S_CR0, S_CR3, S_COUNT };

#define PDE_PRESENT 1u
#define PDE_LARGE 0x80u
#define PAGE_MASK 0xFFFFF000u
#define SEAL_EVENTS 4

/* Steps done here, not yet in the trace: per step, the count at the hit (the breakpoint's:
 * the instruction counted), the CPU, the area saved, its EIP, IF, the area to load. */
struct vmkit_seal_events {
    uint64_t count;
    uint64_t rec[SEAL_EVENTS][6];
};

struct vmkit_seal {
    uint64_t armed;                       /* 1: the next hit at `at` may do the step (one-shot) */
    uint64_t at;                          /* the dispatcher's address (the breakpoint) */
    uint64_t save, load;                  /* the two save areas (physical; ESI and EDI) */
    uint64_t size;                        /* bytes sealed; the CRC follows them */
    uint64_t slot;                        /* the frame's vector slot, from ESP */
    uint64_t frame;                       /* the frame's size in bytes */
    uint64_t saved, go;                   /* SAVED (found), GO_SWITCH (left) */
    uint64_t gdtr_at, eip_at;             /* in an area: lgdt's operand, the EIP saved */
    uint64_t low, high;                   /* the kernel's block: the stack lies inside */
    uint64_t cpu;
    const unsigned char *ram;
    uint64_t ram_size;
    reg_read_batch_fn reg_read_batch;
    reg_write_fn reg_write;
    int64_t ids[S_COUNT];
    struct vmkit_limits *limits;
    struct vmkit_seal_events *events;     /* the board's, shared by its CPUs */
    uint64_t done, declined;              /* counts (tests, figures) */
};

static uint32_t crc_table[256];

static uint32_t crc32(const unsigned char *p, uint64_t n)
{
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Does the linear page of `address` map to itself through the directory at `cr3`? (4 KiB
 * pages, as the kernel builds them: a large page or a table outside RAM, no.) */
int identity_mapped(const unsigned char *ram, uint64_t ram_size, uint64_t cr3, uint64_t address)
{
    uint64_t pde_at = (cr3 & PAGE_MASK) + 4 * ((address >> 22) & 0x3FF);
    if (pde_at + 4 > ram_size)
        return 0;
    uint32_t pde = u32_at(ram + pde_at);
    if (!(pde & PDE_PRESENT) || (pde & PDE_LARGE))
        return 0;
    uint64_t pte_at = (pde & PAGE_MASK) + 4 * ((address >> 12) & 0x3FF);
    if (pte_at + 4 > ram_size)
        return 0;
    uint32_t pte = u32_at(ram + pte_at);
    return (pte & PDE_PRESENT) && (pte & PAGE_MASK) == (address & PAGE_MASK);
}

/* The counter, at a breakpoint before counting it (`count`: the count the handler would see).
 * 1: the step is done, the run goes on; 0: declined, the run stops at the breakpoint. */
int seal_step(void *uc, struct vmkit_counter *c, uint64_t address, uint64_t count)
{
    struct vmkit_seal *s = c->seal;
    if (!s->armed || address != s->at || s->limits->suspended)
        return 0;
    s->armed = 0;                         /* one-shot: a decline leaves it to the Python */
    s->declined++;
    uint64_t v[S_COUNT] = {0};
    int ids[S_COUNT];
    void *values[S_COUNT];
    for (int i = 0; i < S_COUNT; i++) {
        ids[i] = (int)s->ids[i];
        values[i] = &v[i];
    }
    if (s->reg_read_batch(uc, ids, values, S_COUNT))
        return 0;
    uint64_t esp = v[S_ESP] & 0xFFFFFFFFu;
    if (v[S_ESI] != s->save || v[S_EDI] != s->load || esp < s->low || esp + s->frame > s->high
        || !ram_holds(s->ram_size, esp, s->frame) || !ram_holds(s->ram_size, s->save, s->size + 4)
        || !ram_holds(s->ram_size, s->load, s->size + 4))
        return 0;
    if ((v[S_CR0] & CR0_PG) && !(identity_mapped(s->ram, s->ram_size, v[S_CR3], esp)
                                 && identity_mapped(s->ram, s->ram_size, v[S_CR3], esp + s->frame - 1)))
        return 0;
    unsigned char *ram = (unsigned char *)s->ram;
    if (u32_at(ram + esp + s->slot) != s->saved || s->events->count >= SEAL_EVENTS)
        return 0;
    /* seal (the Python's order: the seal first, then the next area's check, which would see
     * the seal if the two overlapped), kept undoable until the refresh has installed */
    uint32_t old = u32_at(ram + s->save + s->size);
    uint32_t crc = crc32(ram + s->save, s->size);
    memcpy(ram + s->save + s->size, &crc, 4);
    if (crc32(ram + s->load, s->size) != u32_at(ram + s->load + s->size)) {
        memcpy(ram + s->save + s->size, &old, 4);
        return 0;                         /* the Python refuses it, and says why */
    }
    const unsigned char *g = ram + s->load + s->gdtr_at;
    uint64_t gdt_limit = (uint64_t)g[0] | (uint64_t)g[1] << 8, gdt_base = u32_at(g + 2);
    int64_t got = vmkit_limits_refresh(uc, s->limits, 0, 0, 1, gdt_base, gdt_limit);
    if (got < 0) {
        if (got == -1)
            s->limits->misses--;          /* the Python's refresh counts it */
        else
            s->limits->current = -1;      /* the Python's refresh installs again, and raises */
        memcpy(ram + s->save + s->size, &old, 4);
        return 0;
    }
    uint32_t go = (uint32_t)s->go;
    memcpy(ram + esp + s->slot, &go, 4);
    uint64_t zero = 0;
    s->reg_write(uc, (int)s->ids[S_ESI], &zero);
    uint64_t *r = s->events->rec[s->events->count++];
    r[0] = count;
    r[1] = s->cpu;
    r[2] = s->save;
    r[3] = u32_at(ram + s->save + s->eip_at);
    r[4] = (v[S_EFLAGS] & 0x200) ? 1 : 0;
    r[5] = s->load;
    s->declined--;
    s->done++;
    return 1;
}
