/* The retired-instruction counter and the stub breakpoints: one Unicorn code hook in C.
 *
 * Counting: Unicorn's own `count=` stops after N instructions but does not say
 * how many ran when something else stopped the slice first (hlt, a fault, a
 * device asking for the slice to end). This hook is the same mechanism
 * (Unicorn's count is a C code hook too, measured at the same speed), with
 * the count in memory Python can read: virtual time is exact.
 *
 * Breakpoints: privileged software written in Python is entered when EIP
 * reaches an address in its stub (CPU.on_execute). Each extra UC_HOOK_CODE
 * hook, even one limited to a single address and written in C, slows every
 * instruction Unicorn runs (measured, Unicorn 2.1.4: 139 M instr/s with this
 * hook alone, 94 with one more one-address hook, 62 with two), so the
 * addresses are checked here instead, in the hook that runs anyway. A hit
 * counts the instruction (the handler runs "at" it, as a code hook would) and
 * stops the run before it executes; the CPU calls the Python handler between
 * runs, takes the count back, and resumes there, skipping the check once.
 *
 * It runs before each instruction: at the budget, stop before executing it. The same
 * hook checks an instruction fetched past CS's limit (limits.py), for one compare per
 * instruction below the lowest such limit (none where every code segment is flat), and
 * guards a flat stretch (limits.py: the limit hooks suspended while no access can be
 * past a limit), for one more test per instruction outside one. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef int (*stop_fn)(void *uc);
typedef int (*reg_read_fn)(void *uc, int regid, void *value);
#define EFLAGS_IF 0x200

#define MAX_BREAKS 8

struct vmkit_counter {
    uint64_t count;
    uint64_t budget;
    stop_fn stop;
    uint64_t spent;      /* 1 when the budget, not the guest (hlt, a fault), ended the run */
    uint64_t nbreaks;    /* how many of breaks[] are in use */
    uint64_t hit;        /* the breakpoint that ended the run, or ~0 */
    uint64_t skip;       /* the first instruction of a run at this address does not break */
    uint64_t first;      /* 1 until the run's first instruction has been seen */
    uint64_t breaks[MAX_BREAKS];
    /* Fetch past CS's limit (limits.py): an instruction at or above fetch_from (the lowest
     * linear address past the limit of a code segment that can be loaded; ~0: none) is
     * checked against the limit of the CS loaded now; past it, the run stops before it,
     * fetch_fault = its address + 1, fetch_count = the instructions retired before it. */
    uint64_t fetch_from;
    struct vmkit_limits *limits;
    uint64_t fetch_fault, fetch_count;
    /* The lowest address either check above can fire at (the lowest breakpoint, fetch_from;
     * counter.py keeps it): below it an instruction is only counted. Guest code lies below
     * the kernel's stubs and its own limit, so a VM's instructions pay one compare, not a
     * walk of breaks[] and a second compare (measured: a VM alone ran ~5-10% slower with
     * the walk once the VMM's breakpoint and the fetch check were added). */
    uint64_t low;
    /* Waking on IF (board.py): while an interrupt controller asks this CPU for an interrupt
     * and its IF is clear, the run stops before the first instruction (after the run's
     * first) at which IF is set, woke = 1: the board delivers there, at the instruction
     * boundary the INTR pin would. Unicorn has no hook for IF changing (sti, popf, iretd
     * all set it), so EFLAGS is read before each instruction, only in such a run. */
    uint64_t wait_if;
    uint64_t woke;
    reg_read_fn reg_read;
    int64_t eflags_id;
    /* A flat stretch (limits.py). stretch_after: how many filtered accesses in a row, made
     * while every segment register an instruction can use is flat, make the counter stop
     * (before the next instruction, counted as a breakpoint is) so the platform can suspend
     * the limit hooks; 0: never. flat: FLAT_WANT (the filter saw that many), FLAT_ON (the
     * hooks are suspended: each instruction is checked before it runs), FLAT_STOP (the run
     * stopped to begin a stretch), FLAT_END (the check stopped the run before an
     * instruction a stretch may not run). */
    uint64_t stretch_after;
    uint64_t flat;
};
#define FLAT_WANT 1
#define FLAT_ON 2
#define FLAT_STOP 4
#define FLAT_END 8

struct vmkit_limits;
static int fetch_past_limit(void *uc, struct vmkit_limits *l, uint64_t address, uint32_t size);
static int flat_stop(void *uc, struct vmkit_counter *c, uint64_t address, int first);

void vmkit_count(void *uc, uint64_t address, uint32_t size, struct vmkit_counter *c)
{
    (void)size;
    int first = (int)c->first;
    if (c->wait_if && !first) {
        uint64_t eflags = 0;
        c->reg_read(uc, (int)c->eflags_id, &eflags);
        if (eflags & EFLAGS_IF) {
            c->woke = 1;
            c->stop(uc);
            return;
        }
    }
    if (address >= c->low) {
        if (c->nbreaks) {
            int resumed = c->first && address == c->skip;
            c->first = 0;
            if (!resumed) {
                for (uint64_t i = 0; i < c->nbreaks; i++) {
                    if (c->breaks[i] == address) {
                        c->hit = address;
                        c->count++;
                        c->stop(uc);
                        return;
                    }
                }
            }
        }
        if (address >= c->fetch_from && c->limits && fetch_past_limit(uc, c->limits, address, size)) {
            c->fetch_fault = address + 1;
            c->fetch_count = c->count;
            c->stop(uc);
            return;
        }
    }
    c->first = 0;
    if (c->count >= c->budget) {
        c->spent = 1;
        c->stop(uc);
        return;
    }
    c->count++;
    if (c->flat && flat_stop(uc, c, address, first)) {
        c->stop(uc);                      /* counted, as a breakpoint's hit: limits.py */
        return;
    }
}

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
 *     page-faults (the #PF path).
 * Anything else goes to Python, which decodes the instruction to find the segment it used. */
typedef int (*reg_read_batch_fn)(void *uc, int *regs, void **values, int count);
typedef void (*slow_fn)(int type, uint64_t address, int size);

#define LIMIT_SELECTORS 64
#define CR0_PG 0x80000000u
enum { R_CS = 1, R_SS = 2, R_DS = 4, R_ES = 8, R_FS = 16, R_GS = 32, R_ALL = 63 };
#define CONFORMING 0x10
#define NOT_CODE 0xFF


typedef int (*hook_add_fn)(void *uc, size_t *hh, int type, void *callback, void *user_data,
                           uint64_t begin, uint64_t end, ...);
typedef int (*hook_del_fn)(void *uc, size_t hh);
#define LIMIT_TABLE (8 * LIMIT_SELECTORS)       /* the bytes of a GDT the filter copies */
#define LIMIT_RANGES (4 * LIMIT_SELECTORS)      /* two tables' ranges, two per entry at most */
#define LIMIT_PREPARED 32

/* One configuration of the filter (limits.py: SegmentLimits.refresh): the key, what a
 * refresh reads (GDTR, the GDT's bytes, the CPL and paging the software will run at, the
 * GDT a switch's load is about to lgdt and its bytes), and what limits.py's Python decoded
 * from it (the arrays, the lowest fetch checked, the ranges past the limits). */
struct vmkit_prepared {
    uint64_t stamp;                       /* its last use (the least recent is replaced); 0: empty */
    uint64_t gdt_base, gdt_limit, table_len, cpl, paging;
    uint64_t loading, load_base, load_limit, other_len;
    uint64_t nsel, fetch_from, nranges;
    uint64_t first[LIMIT_RANGES], last[LIMIT_RANGES];
    uint64_t base[LIMIT_SELECTORS], limit[LIMIT_SELECTORS], code[LIMIT_SELECTORS];
    unsigned char table[LIMIT_TABLE], other[LIMIT_TABLE];
};

struct vmkit_limits {
    slow_fn slow;
    int64_t regs[6];                      /* Unicorn's ids of CS, SS, DS, ES, FS, GS */
    uint64_t nsel;                        /* GDT entries described below */
    uint64_t base[LIMIT_SELECTORS];
    uint64_t limit[LIMIT_SELECTORS];      /* in bytes; 0xFFFFFFFF: flat or not a segment */
    uint64_t code[LIMIT_SELECTORS];       /* a code segment's DPL (| CONFORMING), or NOT_CODE */
    const unsigned char *ram;             /* the machine's memory (physical = linear: paging off) */
    uint64_t ram_size;
    int64_t eip_id, cr0_id;
    uint64_t quiet;                       /* 1 while the platform delivers (delivery.py) */
    reg_read_batch_fn reg_read_batch;     /* the selectors, CR0 and EIP in one call */
    uint64_t calls, looked;               /* accesses filtered; of those, instructions read */
    uint64_t gdt_base, gdt_limit;         /* the GDTR the table above was read under */
    int64_t gdtr_id;
    /* A flat stretch: flat_run counts filtered accesses in a row made at CPL 0 while CS, SS,
     * DS and ES are flat (base 0, limit 4 GiB); at the counter's stretch_after it asks the
     * counter to stop (FLAT_WANT). fsgs_flat: which of FS, GS were flat when it began. */
    struct vmkit_counter *counter;
    uint64_t flat_run, fsgs_flat;
    int64_t eflags_id, dr7_id;
    /* The configurations the filter has been in (vmkit_limits_refresh, below): the hooks, the
     * ranges they want, and the prepared tables a refresh installs again without Python. */
    hook_add_fn hook_add;
    hook_del_fn hook_del;
    int64_t hook_type;                    /* UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE */
    uint64_t suspended;                   /* a flat stretch: the hooks off, `first`/`last` still wanted */
    uint64_t nranges, first[LIMIT_RANGES], last[LIMIT_RANGES];   /* the ranges wanted hooked */
    uint64_t nhooks, hooks[LIMIT_RANGES];                         /* Unicorn's handles, installed */
    int64_t current;                      /* the prepared configuration installed, or -1 */
    uint64_t clock;                       /* stamps prepared[] with its last use */
    uint64_t reused, misses;              /* refreshes served from prepared[] / decoded by Python */
    struct vmkit_prepared pending;        /* a refresh's key, read here; a miss: decoded by Python */
    struct vmkit_prepared prepared[LIMIT_PREPARED];
};

/* GDTR as Unicorn's reg_read gives it (uc_x86_mmr). */
struct vmkit_mmr { uint16_t selector; uint64_t base; uint32_t limit; uint32_t flags; };

/* A selector's descriptor as the GDT loaded *now* holds it, read from memory (paging off:
 * the caller has checked): used once GDTR no longer names the table above, between a
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
static int cs_described(struct vmkit_limits *l, uint64_t cs)
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
        return;                           /* physical addresses: limits.py checks at the #PF */
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
static int fetch_past_limit(void *uc, struct vmkit_limits *l, uint64_t address, uint32_t size)
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

/* A refresh (limits.py: SegmentLimits.refresh): the software that owns the GDT says the
 * descriptors changed, or that it is about to run at another CPL, paging on or off, or to
 * lgdt another GDT (a world switch's load). A world switch makes two, and goes between the
 * same few configurations (a world's own, the load's from one world to the next), so each
 * is decoded once by limits.py's Python and kept here (prepared[]); a refresh reads GDTR,
 * CR0 and the GDT's bytes (and the loading GDT's) here, compares them with those of every
 * configuration kept, and installs the one they match: its arrays, its lowest fetch
 * checked, its hooked ranges. The bytes are compared, not only GDTR: a GDT edited in place
 * under the same GDTR is read again. Only if none matches does Python decode (a miss: the
 * key is left in `pending`, vmkit_limits_install takes it back decoded).
 *
 * The hooks are added and deleted here too. Deleting a memory hook needs no clearing of the
 * exception record, paging on or off (Unicorn 2.1.4's uc_hook_del invalidates the translated
 * code of the regions a hook instrumented, and only UC_HOOK_CODE and UC_HOOK_BLOCK hooks
 * instrument any: hooked_regions_check): nothing is translated through the page tables. */
#define REFRESH_MISS (-1)
#define HOOK_FAILED (-2)                  /* -2 - Unicorn's error */

static uint64_t table_read(struct vmkit_limits *l, uint64_t base, uint64_t limit, unsigned char *out)
{                                         /* as limits.py's _table: past GDTR's limit when it can */
    if (!limit)
        return 0;
    uint64_t length = LIMIT_TABLE;
    if (base + length > l->ram_size) {
        length = limit + 1 < LIMIT_TABLE ? limit + 1 : LIMIT_TABLE;
        if (base + length > l->ram_size)
            return 0;
    }
    memcpy(out, l->ram + base, length);
    return length;
}

static int same_key(const struct vmkit_prepared *a, const struct vmkit_prepared *b)
{
    return a->gdt_base == b->gdt_base && a->gdt_limit == b->gdt_limit && a->cpl == b->cpl
        && a->paging == b->paging && a->table_len == b->table_len && a->loading == b->loading
        && a->load_base == b->load_base && a->load_limit == b->load_limit
        && a->other_len == b->other_len && !memcmp(a->table, b->table, a->table_len)
        && !memcmp(a->other, b->other, a->other_len);
}

static void hooks_del(void *uc, struct vmkit_limits *l)
{
    for (uint64_t i = 0; i < l->nhooks; i++)
        l->hook_del(uc, (size_t)l->hooks[i]);
    l->nhooks = 0;
}

static int64_t hooks_add(void *uc, struct vmkit_limits *l)
{
    for (uint64_t i = 0; i < l->nranges; i++) {
        size_t h = 0;
        int err = l->hook_add(uc, &h, (int)l->hook_type, (void *)vmkit_limit, l, l->first[i], l->last[i]);
        if (err)
            return HOOK_FAILED - err;
        l->hooks[l->nhooks++] = h;
    }
    return 0;
}

/* The hooks back, as the ranges wanted (a flat stretch over). */
int64_t vmkit_limits_resume(void *uc, struct vmkit_limits *l)
{
    if (!l->suspended)
        return 0;
    l->counter->flat = 0;
    l->suspended = 0;
    return hooks_add(uc, l);
}

/* The hooks off, the ranges still wanted (a flat stretch begins). */
void vmkit_limits_suspend(void *uc, struct vmkit_limits *l)
{
    hooks_del(uc, l);
    l->suspended = 1;
}

/* Does every range of `p` lie inside one of the ranges wanted now? */
static int covered(const struct vmkit_limits *l, const struct vmkit_prepared *p)
{
    for (uint64_t i = 0; i < p->nranges; i++) {
        uint64_t j = 0;
        while (j < l->nranges && !(l->first[j] <= p->first[i] && p->last[i] <= l->last[j]))
            j++;
        if (j == l->nranges)
            return 0;
    }
    return 1;
}

static int64_t install(void *uc, struct vmkit_limits *l, int64_t index)
{
    struct vmkit_prepared *p = &l->prepared[index];
    struct vmkit_counter *c = l->counter;
    p->stamp = ++l->clock;
    l->current = index;
    l->nsel = p->nsel;
    l->gdt_base = p->gdt_base;
    l->gdt_limit = p->gdt_limit;
    memcpy(l->base, p->base, sizeof l->base);
    memcpy(l->limit, p->limit, sizeof l->limit);
    memcpy(l->code, p->code, sizeof l->code);
    c->fetch_from = p->fetch_from;        /* a code hook sees linear addresses, paged too */
    c->low = c->fetch_from;               /* as counter.py's _lower */
    for (uint64_t i = 0; i < c->nbreaks; i++)
        if (c->breaks[i] < c->low)
            c->low = c->breaks[i];
    /* With paging on, no hook: it would be given physical addresses. Ranges that take in a
     * loading GDT's: any hooked already that cover them serve (more hooked ranges only
     * filter more accesses; a rehook costs more). */
    uint64_t n = p->paging ? 0 : p->nranges;
    if (p->loading && !p->paging && covered(l, p))
        return index;
    if (n == l->nranges && !memcmp(l->first, p->first, n * sizeof l->first[0])
        && !memcmp(l->last, p->last, n * sizeof l->last[0]))
        return index;
    hooks_del(uc, l);
    l->nranges = n;
    memcpy(l->first, p->first, n * sizeof l->first[0]);
    memcpy(l->last, p->last, n * sizeof l->last[0]);
    int64_t err = hooks_add(uc, l);
    return err ? err : index;
}

/* cpl: the CPL the software will run at; paging: 0 or 1 as it will have it, -1: CR0's now;
 * loading: a GDT (load_base, load_limit) about to be loaded. The configuration installed
 * (its index), REFRESH_MISS (pending holds the key: Python decodes it), or HOOK_FAILED - err. */
int64_t vmkit_limits_refresh(void *uc, struct vmkit_limits *l, int64_t cpl, int64_t paging,
                             int64_t loading, uint64_t load_base, uint64_t load_limit)
{
    int64_t err = vmkit_limits_resume(uc, l);
    if (err)
        return err;
    uint64_t cr0 = 0;
    struct vmkit_mmr gdtr = {0};
    int ids[2] = {(int)l->gdtr_id, (int)l->cr0_id};
    void *values[2] = {&gdtr, &cr0};
    l->reg_read_batch(uc, ids, values, 2);
    struct vmkit_prepared *p = &l->pending;
    p->gdt_base = gdtr.base;
    p->gdt_limit = gdtr.limit;
    p->table_len = table_read(l, gdtr.base, gdtr.limit, p->table);
    p->cpl = (uint64_t)cpl;
    p->paging = paging < 0 ? !!(cr0 & CR0_PG) : !!paging;
    p->loading = loading && (load_base != gdtr.base || load_limit != gdtr.limit);
    p->load_base = p->loading ? load_base : 0;
    p->load_limit = p->loading ? load_limit : 0;
    p->other_len = p->loading ? table_read(l, load_base, load_limit, p->other) : 0;
    if (l->current >= 0 && same_key(p, &l->prepared[l->current]))
        return l->current;                /* nothing changed */
    for (int64_t i = 0; i < LIMIT_PREPARED; i++) {
        if (l->prepared[i].stamp && same_key(p, &l->prepared[i])) {
            l->reused++;
            return install(uc, l, i);
        }
    }
    l->misses++;
    return REFRESH_MISS;
}

/* After a miss: `pending`, decoded by limits.py, replaces the least recently used. */
int64_t vmkit_limits_install(void *uc, struct vmkit_limits *l)
{
    int64_t slot = 0;
    for (int64_t i = 1; i < LIMIT_PREPARED; i++)
        if (l->prepared[i].stamp < l->prepared[slot].stamp)
            slot = i;
    memcpy(&l->prepared[slot], &l->pending, sizeof l->pending);
    return install(uc, l, slot);
}

/* A flat stretch (limits.py). While CS, SS, DS and ES are flat (base 0, limit 4 GiB, from
 * the table above), no access an instruction makes through them can be past a limit, so the
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
static int flat_stop(void *uc, struct vmkit_counter *c, uint64_t address, int first)
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
