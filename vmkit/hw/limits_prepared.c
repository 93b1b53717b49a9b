/* A refresh (limits_prepared.py: SegmentLimits.refresh): the software that owns the GDT says the
 * descriptors changed, or that it is about to run at another CPL, paging on or off, or to
 * lgdt another GDT (a world switch's load). A world switch makes two, and goes between the
 * same few configurations (a world's own, the load's from one world to the next), so each
 * is decoded once by limits_prepared.py and kept here (prepared[]); a refresh reads GDTR,
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
#include <string.h>

#include "vmkit.h"

#define REFRESH_MISS (-1)
#define HOOK_FAILED (-2)                  /* -2 - Unicorn's error */

static uint64_t table_read(struct vmkit_limits *l, uint64_t base, uint64_t limit, unsigned char *out)
{                                         /* past GDTR's limit when it can */
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

/* After a miss: `pending`, decoded by limits_prepared.py, replaces the least recently used. */
int64_t vmkit_limits_install(void *uc, struct vmkit_limits *l)
{
    int64_t slot = 0;
    for (int64_t i = 1; i < LIMIT_PREPARED; i++)
        if (l->prepared[i].stamp < l->prepared[slot].stamp)
            slot = i;
    memcpy(&l->prepared[slot], &l->pending, sizeof l->pending);
    return install(uc, l, slot);
}
