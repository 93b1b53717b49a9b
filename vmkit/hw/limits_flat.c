/* A flat stretch (limits_flat.py). While CS, SS, DS and ES are flat (base 0, limit 4 GiB, from
 * the filter's table), no access an instruction makes through them can be past a limit, so the
 * platform may remove the limit hooks and save Unicorn's hook path and this filter on every
 * access (the kernel's work loop: every store). What could end that is an instruction: a
 * segment register load (mov/pop sreg, lds & co., a far jump, call or return, iretd), an
 * FS or GS prefix while that register is not flat, an `int` or an instruction that can
 * fault (the platform's delivery would then run with the hooks off), a change of CR0, GDTR,
 * EFLAGS.TF or the debug registers. So while the hooks are off the counter reads each
 * instruction's prefixes and opcode (paging off and CS flat: at its linear address, in the
 * RAM buffer) before it runs, and stops the run before any instruction not in the tables
 * below, which hold only instructions that do none of those things; the platform puts the
 * hooks back after every run that had them off, whatever ended it. */
#include <stdint.h>

#include "vmkit.h"

enum { STOP = 0, RUN, MEMORY_OPERAND, REG_0, NOT_DIV, REG_0_1, FF_NEAR, NOT_6, REG_4_UP };
static unsigned char one_byte[256], two_byte[256], tables_ready;

static void opcode_tables(void)
{
    static const unsigned char one[][3] = {
        {0x00, 0x05, RUN}, {0x08, 0x0D, RUN}, {0x10, 0x15, RUN}, {0x18, 0x1D, RUN},
        {0x20, 0x25, RUN}, {0x27, 0x27, RUN}, {0x28, 0x2D, RUN}, {0x2F, 0x2F, RUN},
        {0x30, 0x35, RUN}, {0x37, 0x37, RUN}, {0x38, 0x3D, RUN}, {0x3F, 0x3F, RUN},
        {0x40, 0x61, RUN},                                  /* inc/dec/push/pop r, pushad/popad */
        {0x68, 0x6B, RUN}, {0x70, 0x7F, RUN},               /* push imm, imul, jcc */
        {0x80, 0x81, RUN}, {0x83, 0x8B, RUN},               /* group 1 (not 82), test, xchg, mov */
        {0x8D, 0x8D, MEMORY_OPERAND}, {0x8F, 0x8F, REG_0},   /* lea m; pop m */
        {0x90, 0x99, RUN}, {0x9C, 0x9C, RUN}, {0x9E, 0xBF, RUN},   /* pushfd (not popfd), string, mov */
        {0xC0, 0xC1, NOT_6}, {0xC2, 0xC3, RUN}, {0xC6, 0xC7, REG_0}, {0xC8, 0xC9, RUN},
        {0xD0, 0xD3, NOT_6}, {0xD7, 0xD7, RUN}, {0xE0, 0xE3, RUN}, {0xE8, 0xE9, RUN},
        {0xEB, 0xEB, RUN}, {0xF4, 0xF5, RUN}, {0xF6, 0xF7, NOT_DIV}, {0xF8, 0xFD, RUN},
        {0xFE, 0xFE, REG_0_1}, {0xFF, 0xFF, FF_NEAR},
    };
    static const unsigned char two[][3] = {                 /* after 0F */
        {0x1F, 0x1F, RUN}, {0x40, 0x4F, RUN}, {0x80, 0x9F, RUN},   /* nop m, cmovcc, jcc, setcc */
        {0xA3, 0xA5, RUN}, {0xAB, 0xAD, RUN}, {0xAF, 0xB1, RUN}, {0xB3, 0xB3, RUN},
        {0xB6, 0xB7, RUN}, {0xBA, 0xBA, REG_4_UP}, {0xBB, 0xBF, RUN}, {0xC0, 0xC1, RUN},
        {0xC8, 0xCF, RUN},
    };
    for (unsigned i = 0; i < sizeof one / sizeof one[0]; i++)
        for (unsigned op = one[i][0]; op <= one[i][1]; op++)
            one_byte[op] = one[i][2];
    for (unsigned i = 0; i < sizeof two / sizeof two[0]; i++)
        for (unsigned op = two[i][0]; op <= two[i][1]; op++)
            two_byte[op] = two[i][2];
    tables_ready = 1;
}

/* May the instruction at `address` (linear = physical: paging off, CS's base 0) run while
 * the hooks are off? */
static int flat_allows(struct vmkit_limits *l, uint64_t address)
{
    if (address + 16 > l->ram_size)
        return 0;
    const unsigned char *b = l->ram + address;
    unsigned i = 0;
    for (;; i++) {                        /* at most 4 prefixes: 15 bytes at most in all */
        if (i == 4)
            return 0;
        unsigned p = b[i];
        if (p == 0x26 || p == 0x2E || p == 0x36 || p == 0x3E || p == 0x66 || p == 0x67
            || p == 0xF2 || p == 0xF3 || (p == 0x64 && (l->fsgs_flat & R_FS))
            || (p == 0x65 && (l->fsgs_flat & R_GS)))
            continue;
        break;                            /* (an FS/GS prefix of a segment not flat: STOP) */
    }
    unsigned kind, modrm;
    if (b[i] == 0x0F) {
        kind = two_byte[b[i + 1]];
        modrm = b[i + 2];
    } else {
        kind = one_byte[b[i]];
        modrm = b[i + 1];
    }
    unsigned reg = (modrm >> 3) & 7;
    switch (kind) {
    case RUN: return 1;
    case MEMORY_OPERAND: return (modrm >> 6) != 3;          /* lea r, r: #UD */
    case REG_0: return reg == 0;
    case NOT_DIV: return reg < 6;                           /* div, idiv: #DE */
    case REG_0_1: return reg < 2;
    case FF_NEAR: return reg == 0 || reg == 1 || reg == 2 || reg == 4 || reg == 6;
    case NOT_6: return reg != 6;
    case REG_4_UP: return reg >= 4;
    default: return 0;
    }
}

/* Is this selector's entry in the table flat (null: `null_ok`)? */
static int flat_selector(struct vmkit_limits *l, uint64_t sel, int null_ok)
{
    sel &= 0xFFFF;
    uint64_t index = sel >> 3;
    if (index == 0 && !(sel & 4))
        return null_ok;
    if ((sel & 4) || index >= l->nsel)
        return 0;
    return l->base[index] == 0 && l->limit[index] == 0xFFFFFFFFu;
}

#define EFLAGS_TF 0x100
#define EFLAGS_VM 0x20000

/* Read now, at an instruction boundary: CPL 0, paging off, GDTR the table's, CS and SS flat,
 * DS and ES flat or null, no single-step, no hardware breakpoint enabled. */
static int flat_now(void *uc, struct vmkit_limits *l)
{
    uint64_t v[9] = {0};                  /* CS SS DS ES FS GS, CR0, EFLAGS, DR7 */
    struct vmkit_mmr gdtr = {0};
    int ids[10];
    void *values[10];
    for (int i = 0; i < 6; i++)
        ids[i] = (int)l->regs[i];
    ids[6] = (int)l->cr0_id;
    ids[7] = (int)l->eflags_id;
    ids[8] = (int)l->dr7_id;
    ids[9] = (int)l->gdtr_id;
    for (int i = 0; i < 9; i++)
        values[i] = &v[i];
    values[9] = &gdtr;
    l->reg_read_batch(uc, ids, values, 10);
    if ((v[6] & CR0_PG) || (v[7] & (EFLAGS_TF | EFLAGS_VM)) || (v[8] & 0xFF)
        || gdtr.base != l->gdt_base || gdtr.limit != l->gdt_limit)
        return 0;
    uint64_t cs = v[0] & 0xFFFF;
    if ((cs & 3) || !cs_described(l, cs) || !flat_selector(l, cs, 0) || !flat_selector(l, v[1], 0)
        || !flat_selector(l, v[2], 1) || !flat_selector(l, v[3], 1))
        return 0;
    l->fsgs_flat = (flat_selector(l, v[4], 0) ? R_FS : 0) | (flat_selector(l, v[5], 0) ? R_GS : 0);
    return 1;
}

/* The counter, before an instruction it has counted, while c->flat is set: stop here? */
int flat_stop(void *uc, struct vmkit_counter *c, uint64_t address, int first)
{
    struct vmkit_limits *l = c->limits;
    if (!tables_ready)
        opcode_tables();
    if (c->flat & FLAT_ON) {
        if (flat_allows(l, address))
            return 0;
        c->flat |= FLAT_END;
        return 1;
    }
    /* FLAT_WANT. Not at a run's first instruction: it may be a breakpoint the run resumes past. */
    if (!(c->flat & FLAT_WANT) || first || !l)
        return 0;
    c->flat &= ~(uint64_t)FLAT_WANT;
    l->flat_run = 0;
    if (!c->stretch_after || !flat_now(uc, l) || !flat_allows(l, address))
        return 0;
    c->flat |= FLAT_STOP;
    return 1;
}
