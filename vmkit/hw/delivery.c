/* Interrupt and exception delivery, the common case, in C (delivery.py says what and why).
 *
 * vmkit_deliver does what Delivery._deliver does in Python, step for step and in the same
 * order: read the registers (one uc_reg_read_batch), the gate from the IDT that IDTR names,
 * its checks, the target code segment's descriptor from the GDT, the gate's offset against
 * that segment's limit, the TSS's ring-0 stack when the privilege changes, the frame pushed
 * into RAM, then the registers loaded (one uc_reg_write_batch: the CR0.PE toggle of
 * Delivery.PRIVILEGED_LOAD, or the plain writes).
 *
 * It delivers only what it can deliver *exactly* as the Python does, and declines (returns
 * 0) before it has written a register or a byte when anything else is the case: a check
 * that fails (the Python then raises the DeliveryFault with its message, and the cascade to
 * #DF and the triple fault stays there), virtual-8086 mode, an LDT selector, a conforming
 * target segment (the CPL stays: the Python's), a table, TSS
 * or stack outside RAM or (paging on) on a page that does not map to itself, a value Python's
 * struct.pack would refuse, a vector past a byte (the
 * Python's `int` length check takes only a byte). So a declined delivery
 * is the Python's, byte for byte.
 *
 * Memory is the machine's one RAM buffer, physical = linear, as delivery.py reads it (the
 * IDT, GDT and TSS bases are used as physical addresses there too). The frame is data:
 * PhysicalMemory.write(code=False) flushes no translated code, so a plain copy is the same. */
#include <string.h>

#include "vmkit.h"

typedef int (*vmem_read_fn)(void *uc, uint64_t address, int prot, void *bytes, size_t size);

/* Unicorn's ids, in this order (delivery.py fills them). */
enum { I_CS, I_EFLAGS, I_SS, I_ESP, I_CR0, I_CR3, I_IDTR, I_GDTR, I_TR, I_EIP, I_COUNT };
#define PLAIN 6                           /* CS .. CR3: the plain registers of the read */

#define EFLAGS_TF 0x100u
#define EFLAGS_IF 0x200u
#define EFLAGS_NT 0x4000u
#define EFLAGS_RF 0x10000u
#define EFLAGS_VM 0x20000u
#define GATE_INT32 0xE
#define GATE_TRAP32 0xF
#define TSS_ESP0 4
#define TSS_SS0 8
#define REFUSED 2                         /* a software `int` through a gate of lower DPL */
#define REFUSED_THEN_DELIVERED 3          /* ... and its #GP delivered */
#define REFUSED_THEN_FAILED (-2)          /* ... and its #GP's register load failed */
#define GP 13

struct vmkit_delivery {
    reg_read_batch_fn reg_read_batch;
    reg_read_batch_fn reg_write_batch;   /* (uc_reg_write_batch: the same signature) */
    vmem_read_fn vmem_read;               /* uc_vmem_read: EIP's bytes through this CPU's MMU */
    unsigned char *ram;
    uint64_t ram_size;
    int64_t ids[I_COUNT];
    /* What Python needs for its trace event, after a delivery done here. */
    uint64_t idt_base, handler, old_cpl, new_cpl;
    uint64_t refused_cpl, gate_dpl;       /* after REFUSED: the CPL and the refusing gate's DPL, */
    uint64_t int_length;                  /* and the length of the `int` (Delivery._int_length) */
    int64_t error;                        /* the uc_err of a failed register load */
    uint64_t delivered, refused, declined;   /* counts: done here; REFUSED; left to Python */
};


static uint32_t u32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* Are [addr, addr + n) bytes of RAM? (PhysicalMemory.check; no wrap: bases are 32-bit) */
static int in_ram(const struct vmkit_delivery *d, uint64_t addr, uint64_t n)
{
    return addr <= d->ram_size && n <= d->ram_size - addr;
}

/* With paging on (cr0), do [addr, addr + n) lie on pages that map to themselves? The
 * platform reads the tables and writes the frame at their linear addresses as physical ones;
 * where a page is not present the Python raises the #PF (Delivery._reach), and where it maps
 * elsewhere the Python reads what it reads: both are declined here. */
static int reach(const struct vmkit_delivery *d, uint64_t cr0, uint64_t cr3, uint64_t addr, uint64_t n)
{
    return !(cr0 & CR0_PG) || (identity_mapped(d->ram, d->ram_size, cr3, addr)
                               && identity_mapped(d->ram, d->ram_size, cr3, addr + n - 1));
}

/* Delivery._descriptor for a GDT selector: 0 where the Python would raise (null, past the
 * limit, outside RAM, a page not present) or read another table (an LDT selector). */
static int descriptor(const struct vmkit_delivery *d, const struct vmkit_mmr *gdtr, uint64_t sel,
                      uint64_t cr0, uint64_t cr3, uint32_t *lo, uint32_t *hi)
{
    uint64_t index = sel & ~7ull;
    if ((sel & 4) || (sel & ~3ull) == 0 || index + 7 > gdtr->limit)
        return 0;
    uint64_t at = gdtr->base + index;
    if (!in_ram(d, at, 8) || !reach(d, cr0, cr3, at, 8))
        return 0;
    *lo = u32(d->ram + at);
    *hi = u32(d->ram + at + 4);
    return 1;
}

static uint64_t seg_base(uint32_t lo, uint32_t hi) { return (lo >> 16) | (hi & 0xFFu) << 16 | (hi & 0xFF000000u); }

static uint64_t seg_limit(uint32_t lo, uint32_t hi)
{
    uint64_t limit = (lo & 0xFFFF) | (hi & 0xF0000u);
    return (hi >> 23) & 1 ? limit << 12 | 0xFFF : limit;
}

/* One delivery: 1: delivered; 0: declined, nothing written; REFUSED: an `int` from a CPL
 * above the gate's DPL (every check before it passed, nothing written); -1: the register load
 * failed (d->error), after the frame was pushed, as the Python's would (it raises UcError
 * there). has_error 0: no error code (an exception without one, an `int`, an IRQ). */
static int64_t deliver(void *uc, struct vmkit_delivery *d, int64_t vector, int64_t is_int,
                       int64_t has_error, int64_t error_code, int64_t eip)
{
    uint64_t plain[PLAIN] = {0};          /* CS EFLAGS SS ESP CR0 CR3, zeroed as Python's read */
    struct vmkit_mmr tables[3];           /* IDTR GDTR TR */
    memset(tables, 0, sizeof tables);
    int ids[I_COUNT];
    void *values[PLAIN + 3];
    for (int i = 0; i < I_COUNT; i++)
        ids[i] = (int)d->ids[i];
    for (int i = 0; i < PLAIN; i++)
        values[i] = &plain[i];
    for (int i = 0; i < 3; i++)
        values[PLAIN + i] = &tables[i];
    if (vector < 0 || vector > 0xFF || eip < 0 || eip > 0xFFFFFFFFll
        || (has_error && (error_code < 0 || error_code > 0xFFFFFFFFll)))
        goto decline;
    d->reg_read_batch(uc, ids, values, PLAIN + 3);
    uint64_t old_cs = plain[0], old_eflags = plain[1], old_ss = plain[2], old_esp = plain[3], cr0 = plain[4];
    uint64_t cr3 = plain[5];
    const struct vmkit_mmr *idtr = &tables[0], *gdtr = &tables[1], *tr = &tables[2];
    if (old_eflags & EFLAGS_VM)
        goto decline;                     /* virtual-8086 mode: the Python's */
    if ((uint64_t)vector * 8 + 7 > idtr->limit)
        goto decline;
    uint64_t at = idtr->base + (uint64_t)vector * 8;
    if (!in_ram(d, at, 8) || !reach(d, cr0, cr3, at, 8))
        goto decline;
    const unsigned char *g = d->ram + at;  /* x86.decode_gate */
    uint64_t offset = (g[0] | g[1] << 8) | (uint64_t)(g[6] | g[7] << 8) << 16;
    uint64_t gsel = g[2] | g[3] << 8;
    unsigned attr = g[5], gtype = attr & 0xF, gdpl = (attr >> 5) & 3, present = attr & 0x80;
    if (gtype != GATE_INT32 && gtype != GATE_TRAP32)
        goto decline;
    if (is_int && gdpl < (old_cs & 3)) {  /* refused: the Python raises its #GP (REFUSED) */
        /* The fault is the `int` instruction's own: its EIP is the `int`'s, 2 bytes back for
         * `CD n`, else 1 (int3, into, int1), as Delivery._int_length reads them: the linear
         * bytes before EIP through this CPU's MMU, 1 if it cannot read them. */
        unsigned char code[2];
        int unread = d->vmem_read(uc, (uint64_t)eip - 2, 1 /* UC_PROT_READ */, code, 2);
        d->int_length = !unread && code[0] == 0xCD && code[1] == vector ? 2 : 1;
        d->refused_cpl = old_cs & 3, d->gate_dpl = gdpl;
        d->refused++;
        return REFUSED;
    }
    if (!present)
        goto decline;
    uint32_t lo, hi;
    if (!descriptor(d, gdtr, gsel, cr0, cr3, &lo, &hi))
        goto decline;
    if (!((hi >> 12) & 1 && (hi >> 8) & 8 && hi & 0x8000))
        goto decline;                     /* not a present code segment */
    if ((hi >> 8) & 4)
        goto decline;                     /* conforming: the CPL stays (the Python's) */
    uint64_t old_cpl = old_cs & 3, new_cpl = (hi >> 13) & 3;
    if (new_cpl > old_cpl || offset > seg_limit(lo, hi))
        goto decline;
    uint64_t new_cs = (gsel & ~3ull) | new_cpl;   /* the gate's RPL ignored: CS.RPL is the CPL */
    uint32_t frame[6];
    int n = 0;
    if (has_error)
        frame[n++] = (uint32_t)error_code;
    frame[n++] = (uint32_t)eip;
    frame[n++] = (uint32_t)old_cs;
    frame[n++] = (uint32_t)old_eflags;
    uint64_t esp, ss;
    if (new_cpl < old_cpl) {              /* stack switch through the TSS */
        if (tr->limit < TSS_SS0 + 3 || !in_ram(d, tr->base + TSS_ESP0, 4) || !in_ram(d, tr->base + TSS_SS0, 2)
            || !reach(d, cr0, cr3, tr->base + TSS_ESP0, TSS_SS0 + 2 - TSS_ESP0))
            goto decline;
        esp = u32(d->ram + tr->base + TSS_ESP0);
        ss = d->ram[tr->base + TSS_SS0] | d->ram[tr->base + TSS_SS0 + 1] << 8;
        if (old_esp > 0xFFFFFFFFu || old_ss > 0xFFFFFFFFu)
            goto decline;
        frame[n++] = (uint32_t)old_esp;
        frame[n++] = (uint32_t)old_ss;
    } else {
        esp = old_esp, ss = old_ss;
    }
    if (!descriptor(d, gdtr, ss, cr0, cr3, &lo, &hi))
        goto decline;
    unsigned stype = (hi >> 8) & 0xF;
    if (!((hi >> 12) & 1) || (stype & 8) || !(stype & 2) || (stype & 4) || !(hi & 0x8000))
        goto decline;                     /* not a present writable expand-up data segment */
    if (new_cpl < old_cpl && ((ss & 3) || ((hi >> 13) & 3)))
        goto decline;                     /* the TSS's SS0 not of DPL 0: #TS (delivery.py) */
    for (int i = 1; i <= n; i++)          /* each word inside SS's limit, else #SS */
        if (((esp - 4 * (uint64_t)i) & 0xFFFFFFFFu) + 3 > seg_limit(lo, hi))
            goto decline;
    esp = (esp - 4 * (uint64_t)n) & 0xFFFFFFFFu;
    uint64_t push = seg_base(lo, hi) + esp;
    if (!in_ram(d, push, 4 * (uint64_t)n) || !reach(d, cr0, cr3, push, 4 * (uint64_t)n))
        goto decline;
    /* Everything checked: from here on the machine changes. */
    for (int i = 0; i < n; i++) {         /* little-endian, as struct.pack("<I") */
        unsigned char *p = d->ram + push + 4 * i;
        p[0] = frame[i], p[1] = frame[i] >> 8, p[2] = frame[i] >> 16, p[3] = frame[i] >> 24;
    }
    uint64_t flags = old_eflags & ~(uint64_t)(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM);
    if (gtype == GATE_INT32)
        flags &= ~(uint64_t)EFLAGS_IF;
    uint64_t vals[9];
    int wids[9], count;
    if (new_cpl < old_cpl) {              /* Delivery.PRIVILEGED_LOAD, in its order */
        int order[9] = {I_CR0, I_CS, I_SS, I_CR0, I_CS, I_SS, I_ESP, I_EFLAGS, I_EIP};
        uint64_t v[9] = {cr0 & ~1ull, new_cs, ss, cr0, new_cs, ss, esp, flags, offset};
        for (int i = 0; i < 9; i++)
            wids[i] = (int)d->ids[order[i]], vals[i] = v[i] & 0xFFFFFFFFu;
        count = 9;
    } else if (new_cs != old_cs) {
        int order[4] = {I_CS, I_ESP, I_EFLAGS, I_EIP};
        uint64_t v[4] = {new_cs, esp, flags, offset};
        for (int i = 0; i < 4; i++)
            wids[i] = (int)d->ids[order[i]], vals[i] = v[i];
        count = 4;
    } else {
        int order[3] = {I_ESP, I_EFLAGS, I_EIP};
        uint64_t v[3] = {esp, flags, offset};
        for (int i = 0; i < 3; i++)
            wids[i] = (int)d->ids[order[i]], vals[i] = v[i];
        count = 3;
    }
    void *wvals[9];
    for (int i = 0; i < count; i++)
        wvals[i] = &vals[i];
    d->idt_base = idtr->base, d->handler = offset, d->old_cpl = old_cpl, d->new_cpl = new_cpl;
    int err = d->reg_write_batch(uc, wids, wvals, count);
    if (err) {
        d->error = err;
        return -1;
    }
    d->delivered++;
    return 1;
decline:
    d->declined++;
    return 0;
}

/* A delivery as Delivery._deliver_or_fail asks for one; its return value as deliver()'s, and
 * for an `int` refused by its gate's DPL (a VM's int3 through its monitor's DPL 1 gate: the
 * commonest refusal, at every patched instruction) the next step of the cascade too, in the
 * same call: the #GP(vector*8+2) of the `int` instruction, at the `int`'s own EIP, through the
 * same IDT. REFUSED_THEN_DELIVERED: delivered (d's fields are the #GP's; the refusal's stay in
 * refused_cpl, gate_dpl, int_length); REFUSED_THEN_FAILED: its register load failed after the
 * push; REFUSED: that #GP declined, nothing of it written (the Python goes on from the
 * refusal, as it does with every fault). */
int64_t vmkit_deliver(void *uc, struct vmkit_delivery *d, int64_t vector, int64_t is_int,
                      int64_t has_error, int64_t error_code, int64_t eip)
{
    int64_t done = deliver(uc, d, vector, is_int, has_error, error_code, eip);
    if (done != REFUSED || eip < (int64_t)d->int_length)
        return done;
    switch (deliver(uc, d, GP, 0, 1, vector * 8 + 2, eip - (int64_t)d->int_length)) {
    case 1:
        return REFUSED_THEN_DELIVERED;
    case -1:
        return REFUSED_THEN_FAILED;
    default:
        return REFUSED;
    }
}
