/* Segment limits (limits.py): Unicorn checks none, so the platform hooks the linear
 * ranges that lie past the limit of a segment that can be loaded. This filter runs on
 * every access in those ranges, at every CPL, and lets through without Python:
 *   - an access inside the limit of every segment register loaded now (a flat-segmented
 *     VM whose memory lies past the COS's limit; the kernel's own, all flat);
 *   - an access whose instruction cannot go through the registers it is outside of: the
 *     few bytes read here (prefixes, opcode) tell which registers an access may use (a
 *     stack instruction: SS; a string instruction: its source's and ES; a segment prefix:
 *     that one; anything else: DS or SS), so the kernel's pushes and its flat DS are not
 *     held up by the COS's (or a guest's) FS and GS, which it never uses; and `mov sreg, r`,
 *     `ltr r`, `lldt r`, a far `jmp`, whose only accesses are the CPU's own reads of a
 *     descriptor table, not a data access through a segment;
 *   - the CPU's own descriptor reads while the platform delivers an interrupt (its
 *     register writes load CS and SS: `quiet`);
 *   - any access while paging is on: Unicorn 2.1.4 gives a memory hook the *physical*
 *     address then (and matches the hook's range against it), so the offset cannot be
 *     known here; limits.py hooks nothing then, and checks limits where the access also
 *     page-faults (the #PF path: limits_paging.py).
 * Anything else goes to Python (limits_decode.py), which decodes the instruction to find the
 * segment it used. */
#include <stdint.h>

#include "vmkit.h"

/* A selector's descriptor as the GDT loaded *now* holds it, read from memory (paging off:
 * the caller has checked): used once GDTR no longer names the filter's table, between a
 * world switch's lgdt and the platform's next read of the new GDT, so that a segment the
 * load then loads is judged by its own descriptor, not by the entry of the same selector
 * in the GDT the switch left. 0: not judged here (null, LDT, past GDTR's limit, not a
 * present code/data segment, expand-down): Python looks. */
static int gdt_now(struct vmkit_limits *l, const struct vmkit_mmr *g, uint64_t sel,
                   uint64_t *base, uint64_t *limit, uint64_t *code)
{
    uint64_t index = (sel & 0xFFFF) >> 3;
    if ((sel & 4) || index == 0 || 8 * index + 7 > g->limit)
        return 0;
    uint64_t at = (g->base + 8 * index) & 0xFFFFFFFFu;
    if (at + 8 > l->ram_size)
        return 0;
    const unsigned char *d = l->ram + at;
    uint32_t lo = d[0] | d[1] << 8 | d[2] << 16 | (uint32_t)d[3] << 24;
    uint32_t hi = d[4] | d[5] << 8 | d[6] << 16 | (uint32_t)d[7] << 24;
    unsigned type = (hi >> 8) & 15;
    if (!(hi & (1u << 12)) || !(hi & (1u << 15)) || (type & 12) == 4)
        return 0;                         /* a system descriptor, not present, or expand-down */
    *base = (lo >> 16) | (hi & 0xFFu) << 16 | (hi & 0xFF000000u);
    *limit = (lo & 0xFFFF) | (hi & 0xF0000u);
    if (hi & (1u << 23))
        *limit = *limit << 12 | 0xFFF;
    *code = (type & 8) ? (((hi >> 13) & 3) | ((type & 4) ? CONFORMING : 0)) : NOT_CODE;
    return 1;
}

/* Is the table's entry for CS one that CS can hold at its CPL (a non-conforming code
 * segment's DPL is the CPL; a conforming one's at most)? If not, CS was loaded from another
 * table than the one described (a CPU between two GDTs: the firmware's CS under the
 * kernel's GDTR, before its far jump): its hidden base and limit are not these, and no
 * limit is judged from the table. */
int cs_described(struct vmkit_limits *l, uint64_t cs)
{
    uint64_t index = (cs & 0xFFFF) >> 3, cpl = cs & 3;
    if ((cs & 4) || index == 0 || index >= l->nsel || l->code[index] == NOT_CODE)
        return 0;
    uint64_t dpl = l->code[index] & 3;
    return (l->code[index] & CONFORMING) ? dpl <= cpl : dpl == cpl;
}

/* The segment registers (R_* bits) the instruction at CS:EIP (CS's base: cs_base) may access data through. */
static uint64_t segments_used(struct vmkit_limits *l, uint64_t cs_base, uint64_t eip,
                              uint64_t address, int size, const struct vmkit_mmr *gdtr)
{
    uint64_t at = (cs_base + (eip & 0xFFFFFFFFu)) & 0xFFFFFFFFu;
    if (at + 16 > l->ram_size)
        return R_ALL;
    const unsigned char *b = l->ram + at;
    uint64_t prefix = 0;
    unsigned i = 0;
    for (; i < 13; i++) {               /* b[i + 2] stays inside the 16 bytes */
        switch (b[i]) {
        case 0x26: prefix = R_ES; continue;
        case 0x2E: prefix = R_CS; continue;
        case 0x36: prefix = R_SS; continue;
        case 0x3E: prefix = R_DS; continue;
        case 0x64: prefix = R_FS; continue;
        case 0x65: prefix = R_GS; continue;
        case 0x66: case 0x67: case 0xF0: case 0xF2: case 0xF3: continue;
        }
        break;
    }
    unsigned op = b[i], modrm = b[i + 1];
    uint64_t data = prefix ? prefix : R_DS | R_SS;        /* a memory operand's */
    if (op == 0x0F) {
        unsigned op2 = b[i + 1], m = b[i + 2];
        if (op2 == 0xA0 || op2 == 0xA1 || op2 == 0xA8 || op2 == 0xA9)   /* push/pop fs, gs */
            return R_SS;
        if (op2 == 0x00 && (m >> 6) == 3)                 /* sldt str lldt ltr verr verw r */
            return 0;
        /* lldt/ltr m16: the operand is 2 bytes; the CPU's reads (and ltr's busy-bit write)
         * of the descriptor in the GDT are 4 each (measured): not through a segment */
        if (op2 == 0x00 && (((m >> 3) & 7) == 2 || ((m >> 3) & 7) == 3) && size != 2
            && address >= gdtr->base && address + size - 1 <= gdtr->base + gdtr->limit)
            return 0;
        return data;
    }
    if ((op >= 0x50 && op <= 0x61) || op == 0x06 || op == 0x07 || op == 0x0E || op == 0x16
        || op == 0x17 || op == 0x1E || op == 0x1F || op == 0x68 || op == 0x6A || op == 0x9C
        || op == 0x9D || op == 0xC2 || op == 0xC3 || op == 0xC8 || op == 0xC9 || op == 0xCA
        || op == 0xCB || op == 0xCF || op == 0xE8 || op == 0x9A)
        return R_SS;                                      /* the stack only */
    if (op == 0x8F || op == 0xFF)                         /* pop m; push/call m: both */
        return R_SS | data;
    if ((op >= 0xA4 && op <= 0xA7) || (op >= 0xAA && op <= 0xAF) || (op >= 0x6C && op <= 0x6F))
        return (prefix ? prefix : R_DS) | R_ES;           /* string: DS:ESI and ES:EDI */
    if ((op == 0x8E && (modrm >> 6) == 3) || op == 0xEA)  /* mov sreg, r; jmp far: tables only */
        return 0;
    return data;
}

void vmkit_limit(void *uc, int type, uint64_t address, int size, int64_t value, struct vmkit_limits *l)
{
    (void)value;
    l->calls++;
    if (l->quiet)
        return;
    uint64_t sels[8] = {0}, outside = 0;  /* CS SS DS ES FS GS, CR0, EIP, GDTR: one call */
    struct vmkit_mmr gdtr = {0};
    int ids[9];
    void *values[9];
    for (int i = 0; i < 6; i++)
        ids[i] = (int)l->regs[i];
    ids[6] = (int)l->cr0_id;
    ids[7] = (int)l->eip_id;
    ids[8] = (int)l->gdtr_id;
    for (int i = 0; i < 8; i++)
        values[i] = &sels[i];
    values[8] = &gdtr;
    l->reg_read_batch(uc, ids, values, 9);
    if (sels[6] & CR0_PG) {
        l->flat_run = 0;
        return;                           /* physical addresses: limits_paging.py checks at the #PF */
    }
    /* The table describes the GDT GDTR named when the platform last read it; a GDTR loaded
     * since (a world switch's lgdt, until the kernel says the new GDT is in) is read here. */
    int now = gdtr.base != l->gdt_base || gdtr.limit != l->gdt_limit;
    uint64_t cs = sels[0] & 0xFFFF, cs_base = 0, cs_limit, cs_code;
    if (cs_described(l, cs)) {
        cs_base = l->base[cs >> 3];       /* (after an lgdt: CS was loaded before it, from the table:
                                           * a VMM's CS, which the COS's GDT has not, until the
                                           * switch's retf loads the kernel's) */
    } else if (!now || !gdt_now(l, &gdtr, cs, &cs_base, &cs_limit, &cs_code) || cs_code == NOT_CODE
               || ((cs_code & CONFORMING) ? (cs_code & 3) > (cs & 3) : (cs_code & 3) != (cs & 3))) {
        l->flat_run = 0;
        return;                           /* CS from another table: nothing judged (cs_described) */
    }
    uint64_t flat = 0;                    /* the registers flat in the table (a null DS or ES too) */
    for (int i = 0; i < 6; i++) {
        uint64_t sel = sels[i] & 0xFFFF;
        /* After an lgdt, a selector past the new GDT's limit was loaded before it, from the
         * table (a VMM's DS, which the COS's GDT lacks, until the load's mov ds): from there. */
        uint64_t index = sel >> 3, base, limit, code;
        if (index == 0 && !(sel & 4)) {
            flat |= 1u << i;
            continue;                     /* a null selector: no access goes through it */
        }
        if (now && !(!(sel & 4) && 8 * index + 7 > gdtr.limit && index < l->nsel)) {
            if (!gdt_now(l, &gdtr, sel, &base, &limit, &code)) {
                outside |= 1u << i;       /* not judged here: Python looks */
                continue;
            }
        } else if ((sel & 4) || index >= l->nsel) {
            outside |= 1u << i;           /* not described here: Python looks */
            continue;
        } else {
            base = l->base[index];
            limit = l->limit[index];
            if (base == 0 && limit == 0xFFFFFFFFu)
                flat |= 1u << i;
        }
        uint64_t offset = (address - base) & 0xFFFFFFFFu;
        if (offset + (uint64_t)size - 1 > limit)
            outside |= 1u << i;
    }
    /* (only the table's own entries count: after an lgdt, `now`, no stretch begins) */
    if (!now && (cs & 3) == 0 && (flat & 15) == 15 && l->counter && l->counter->stretch_after) {
        if (++l->flat_run >= l->counter->stretch_after)
            l->counter->flat |= FLAT_WANT;
    } else {
        l->flat_run = 0;
    }
    if (!outside)
        return;
    l->looked++;
    if (outside & segments_used(l, cs_base, sels[7], address, size, &gdtr))
        l->slow(type, address, size);
}

/* Does the instruction at `address` (linear, `size` bytes) lie past the limit of CS? A CS
 * not described in the table (an LDT's, past the GDT copy) is not checked here. */
int fetch_past_limit(void *uc, struct vmkit_limits *l, uint64_t address, uint32_t size)
{
    uint64_t cs = 0;
    int id = (int)l->regs[0];
    void *value = &cs;
    l->reg_read_batch(uc, &id, &value, 1);
    cs &= 0xFFFF;
    uint64_t index = cs >> 3;
    if (!cs_described(l, cs))
        return 0;
    if (size == 0 || size > 15)
        size = 1;
    uint64_t offset = (address - l->base[index]) & 0xFFFFFFFFu;
    return offset + size - 1 > l->limit[index];
}
