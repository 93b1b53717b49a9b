/* A stub breakpoint the counter passes by, in C, when the Python it would stop for would only
 * return (pass_by.py). One per CPU: the VMM's entry (vmm/region.py: `entered`), which every
 * interrupt taken while a VM runs reaches; for an interrupt the VMM does nothing there (the
 * kernel's dispatcher, reached next, is the one that acts), so a stop and a resume there, ~1
 * run in 11 of the teaching-tick run (two busy VMs and the COS), bought nothing.
 *
 * The counter passes only when all of these hold, read now from the CPU and from memory:
 *   - its owner armed it (pass_on: set from Python when the state the handler reads that
 *     lives in Python changes, e.g. which world the CPU runs, and dropped whenever a handler
 *     is added or removed anywhere: the handler must be the address's only one);
 *   - no flat stretch has the limit hooks off (limits_flat.c: a stop there ends it);
 *   - CS holds pass_cs (the handler's own code segment);
 *   - the u32 at physical pass_word is not 1 (the handler records its first entry);
 *   - the u32 at physical ESP + pass_vector (the frame's vector slot) is pass_below or more
 *     (an interrupt, not an exception the handler acts on).
 * Anything else, or a read outside RAM, stops as any breakpoint does. Passing, the
 * instruction is treated as the first of a run resumed past the breakpoint would be
 * (counter.c): checked against CS's limit, the budget and a flat stretch's start, and
 * counted once; the wait for IF was checked before it, as in the run that would have
 * stopped. */
#include <string.h>

#include "vmkit.h"

static int ram_u32(struct vmkit_counter *c, uint64_t at, uint32_t *value)
{
    if (at + 4 > c->ram_size || at + 4 < at)
        return 0;
    memcpy(value, c->ram + at, 4);
    return 1;
}

int pass_by(void *uc, struct vmkit_counter *c)
{
    if (!c->pass_on || (c->flat & FLAT_ON))
        return 0;
    uint64_t cs = 0, esp = 0;
    c->reg_read(uc, (int)c->cs_id, &cs);
    if ((cs & 0xFFFF) != c->pass_cs)
        return 0;
    uint32_t entries, vector;
    if (!ram_u32(c, c->pass_word, &entries) || entries == 1)
        return 0;
    c->reg_read(uc, (int)c->esp_id, &esp);
    if (!ram_u32(c, (esp & 0xFFFFFFFFu) + c->pass_vector, &vector) || vector < c->pass_below)
        return 0;
    c->passed++;
    return 1;
}
