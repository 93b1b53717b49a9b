/* A world switch's verify, in C (switch_verify.py says why): after the switch's x86 has
 * loaded a world, every claim-15 item read back from the CPU and the frame the stub's popad
 * and iretd will load, and compared with the save area it was loaded from.
 *
 * vmkit_verify does, in one call, what the kernel's Python verify (kernel/switch.py:
 * _verify) does: the registers and table registers in one uc_reg_read_batch, the frame and
 * the save area from the RAM buffer, the TSS and LDT descriptors TR and LDTR name from the
 * GDT in RAM (decoded as hw/x86.py's decode_segment does), the same comparisons on the same
 * full-width values. It returns a bit per item that differs (bit i: the layout's item i; then
 * VERIFY_TR_DESCRIPTOR ... VERIFY_IF), 0 when all agree, or -1, declined, where the Python
 * would read something other than plain RAM: the frame, the area or a descriptor past RAM,
 * or, with paging on, the frame or a descriptor on a page not mapped to itself (the Python
 * reads physical = linear, as the kernel's identity-mapped block makes it). The Python then
 * verifies, and names what differs from the mask or from its own reading.
 *
 * The layout (which frame word or register each item comes from, where the area holds it
 * and how wide) is the kernel's, given once (struct vmkit_verify's layout fields). */
#include <string.h>

#include "vmkit.h"

/* Unicorn's ids, in this order (switch_verify.py fills them): plain, then table registers. */
enum { RD_SS, RD_CR3, RD_CR0, RD_EFLAGS, RD_CS, RD_GDTR, RD_IDTR, RD_LDTR, RD_TR, RD_COUNT, RD_PLAIN = RD_GDTR };

/* Register values an item can come from (an item's source is -(1 + one of these)). */
enum { V_SS, V_CR3, V_GDTR_LIMIT, V_GDTR_BASE, V_IDTR_LIMIT, V_IDTR_BASE, V_LDTR_SEL, V_TR_SEL, V_COUNT };

#define VERIFY_ITEMS 32
#define VERIFY_TR_DESCRIPTOR 32           /* bits past the items: the checks beside them */
#define VERIFY_LDTR_DESCRIPTOR 33
#define VERIFY_CR0_PG 34
#define VERIFY_IF 35
#define EFLAGS_IF 0x200u
#define TSS_BUSY 0xBu

struct vmkit_verify {
    const unsigned char *ram;
    uint64_t ram_size;
    reg_read_batch_fn reg_read_batch;
    int64_t ids[RD_COUNT];
    /* the layout: per item, its frame offset (>= 0) or -(1 + V_*), its offset in the save
     * area and its width there (2 or 4 bytes) */
    uint64_t items, area_size;
    int64_t source[VERIFY_ITEMS];
    uint64_t area_at[VERIFY_ITEMS], width[VERIFY_ITEMS];
    uint64_t frame_size;                  /* the frame's bytes, as far as the SS a CPL 3 trap pushes */
    uint64_t cs_at, eip_at, eflags_at;    /* in the frame */
    uint64_t cpl0_frame;                  /* where a CPL 0 frame ends: the world's ESP */
    uint64_t esp_item, ss_item, cr3_item; /* ESP, SS: from there and the SS register at CPL 0 */
    /* what the last call read (the Python's CR0 and CS; the frame's EIP, CS, EFLAGS) */
    uint64_t cr0, cs, eip, frame_cs, eflags;
    uint64_t done, declined;              /* counts (tests, figures) */
};

/* Bytes the Python reads at physical = linear: in RAM, and with paging on, their first and
 * last byte's pages mapped to themselves. */
static int plain(const struct vmkit_verify *v, uint64_t cr0, uint64_t cr3, uint64_t address, uint64_t length)
{
    if (!ram_holds(v->ram_size, address, length))
        return 0;
    return !(cr0 & CR0_PG) || (identity_mapped(v->ram, v->ram_size, cr3, address)
                               && identity_mapped(v->ram, v->ram_size, cr3, address + length - 1));
}

/* The descriptor `sel` names in the GDT (base, limit in bytes, type, S), as decode_segment.
 * 1: decoded; 0: none (a null selector, past the limit); -1: not plain RAM (declined). */
static int descriptor(const struct vmkit_verify *v, const uint64_t *r, const struct vmkit_mmr *gdtr, uint64_t sel,
                      uint64_t *base, uint64_t *limit, unsigned *type, unsigned *s)
{
    uint64_t index = sel & ~7ull;
    if (!index || index + 7 > gdtr->limit)
        return 0;
    if (!plain(v, r[RD_CR0], r[RD_CR3], gdtr->base + index, 8))
        return -1;
    const unsigned char *p = v->ram + gdtr->base + index;
    uint32_t lo = u32_at(p), hi = u32_at(p + 4);
    uint64_t lim = (lo & 0xFFFFu) | (hi & 0xF0000u);
    *limit = hi & (1u << 23) ? (lim << 12) | 0xFFFu : lim;
    *base = (lo >> 16) | ((uint64_t)(hi & 0xFFu) << 16) | (hi & 0xFF000000u);
    *type = (hi >> 8) & 0xFu;
    *s = (hi >> 12) & 1u;
    return 1;
}

int64_t vmkit_verify(void *uc, struct vmkit_verify *v, uint64_t frame, uint64_t area)
{
    v->declined++;
    uint64_t r[RD_PLAIN] = {0};
    struct vmkit_mmr t[RD_COUNT - RD_PLAIN];
    memset(t, 0, sizeof t);               /* Unicorn fills only some of an entry's bytes */
    int ids[RD_COUNT];
    void *values[RD_COUNT];
    for (int i = 0; i < RD_COUNT; i++) {
        ids[i] = (int)v->ids[i];
        values[i] = i < RD_PLAIN ? (void *)&r[i] : (void *)&t[i - RD_PLAIN];
    }
    if (v->items > VERIFY_ITEMS || v->reg_read_batch(uc, ids, values, RD_COUNT))
        return -1;
    const struct vmkit_mmr *gdtr = &t[RD_GDTR - RD_PLAIN], *idtr = &t[RD_IDTR - RD_PLAIN];
    const struct vmkit_mmr *ldtr = &t[RD_LDTR - RD_PLAIN], *tr = &t[RD_TR - RD_PLAIN];
    if (!plain(v, r[RD_CR0], r[RD_CR3], frame, v->frame_size) || !ram_holds(v->ram_size, area, v->area_size))
        return -1;
    uint64_t tss_base = 0, tss_limit = 0, ldt_base = 0, ldt_limit = 0;
    unsigned tss_type = 0, tss_s = 0, ldt_type, ldt_s;
    int tss = descriptor(v, r, gdtr, tr->selector, &tss_base, &tss_limit, &tss_type, &tss_s);
    int ldt = descriptor(v, r, gdtr, ldtr->selector, &ldt_base, &ldt_limit, &ldt_type, &ldt_s);
    if (tss < 0 || ldt < 0)
        return -1;
    const uint64_t got[V_COUNT] = {r[RD_SS], r[RD_CR3], gdtr->limit, gdtr->base, idtr->limit, idtr->base,
                                   ldtr->selector, tr->selector};
    const unsigned char *f = v->ram + frame, *a = v->ram + area;
    uint64_t cs = u32_at(f + v->cs_at), mask = 0, cr3_wanted = 0;
    for (uint64_t i = 0; i < v->items; i++) {
        int64_t from = v->source[i];
        uint64_t now = from >= 0 ? u32_at(f + from) : got[-1 - from];
        if (!(cs & 3) && i == v->esp_item)
            now = frame + v->cpl0_frame;  /* a CPL 0 frame: its stack ends where the frame does */
        else if (!(cs & 3) && i == v->ss_item)
            now = r[RD_SS];
        const unsigned char *p = a + v->area_at[i];
        uint64_t want = v->width[i] == 2 ? (uint64_t)(p[0] | p[1] << 8) : u32_at(p);
        if (i == v->cr3_item)
            cr3_wanted = want;
        if (now != want)
            mask |= 1ull << i;
    }
    if (tss < 1 || tss_base != tr->base || tss_limit != tr->limit || tss_type != TSS_BUSY || tss_s)
        mask |= 1ull << VERIFY_TR_DESCRIPTOR;
    if ((ldtr->selector & ~3u) && (ldt < 1 || ldt_base != ldtr->base || ldt_limit != ldtr->limit))
        mask |= 1ull << VERIFY_LDTR_DESCRIPTOR;
    if (!(r[RD_CR0] & CR0_PG) != !cr3_wanted)
        mask |= 1ull << VERIFY_CR0_PG;
    if (r[RD_EFLAGS] & EFLAGS_IF)
        mask |= 1ull << VERIFY_IF;
    v->cr0 = r[RD_CR0];
    v->cs = r[RD_CS];
    v->eip = u32_at(f + v->eip_at);
    v->frame_cs = cs;
    v->eflags = u32_at(f + v->eflags_at);
    v->declined--;
    v->done++;
    return (int64_t)mask;
}
