/* Unicorn's interrupt hook, the common case, in C (intr.py says what and why).
 *
 * vmkit_intr is called by Unicorn for every `int n` and exception, in the middle of a run. It
 * does what CPU._on_interrupt does, in the same order, for the cases it can finish exactly as
 * the Python would: the exception record read and, for a fault, cleared (unicorn_quirks.
 * take_exception: one context save into the context kept for this Unicorn instance, and a
 * restore), EIP read, the limit filter quieted, and delivery.c's vmkit_deliver called with the
 * arguments Delivery.deliver gives it. A delivery (1), or a refused `int` whose #GP delivery.c
 * delivered (REFUSED_THEN_DELIVERED), is noted in `records` for the Python to turn into its
 * trace events and counters (intr.py: drain) before any other Python of this CPU runs. Anything
 * else goes to the Python hook, the reference:
 *   - everything while `off` (a learner's gate decoder) or `records` is full;
 *   - a #PF (the limit may come first: limits_paging.py), a fault while the limit filter holds
 *     a violation (`violation`: the run stops, CPU.run delivers it);
 *   - a delivery delivery.c declined or refused without delivering the #GP (nothing written:
 *     its counts put back, the Python asks again and gets the same answer);
 *   - a failed register load (the frame pushed) or a failed context restore: `handed` says
 *     which, with what the Python needs to go on from there. */
#include <string.h>

#include "vmkit.h"

typedef int (*context_fn)(void *uc, void *context);
typedef void (*python_hook_fn)(void *uc, uint32_t intno, void *user_data);

/* delivery.c's; `delivery` is its struct vmkit_delivery, declared in delivery.py too */
int64_t vmkit_deliver(void *uc, void *delivery, int64_t vector, int64_t is_int,
                      int64_t has_error, int64_t error_code, int64_t eip);

#define RECORDS 16
#define RESULTS 7                 /* idt_base handler old_cpl new_cpl refused_cpl gate_dpl int_length */
#define PF 14
#define REFUSED 2
#define REFUSED_THEN_DELIVERED 3
#define HANDED_DELIVERY 1         /* vmkit_deliver's answer in handed_result: go on from it */
#define HANDED_RESTORE 2          /* uc_context_restore failed: handed_result is its uc_err */

struct vmkit_intr_record {
    uint64_t count;               /* the counter's count at the hook: the events' time */
    uint64_t vector, is_int, eip, has_error, error, result;
    uint64_t results[RESULTS];    /* delivery.c's fields after the call */
};

struct vmkit_intr {
    python_hook_fn python;        /* CPU._on_interrupt, through CPU._callback */
    context_fn context_save, context_restore;
    reg_read_fn reg_read;
    void *context;                /* the uc_context unicorn_quirks keeps for this Unicorn */
    uint32_t *is_int, *error, *old_exception;   /* its exception record's fields */
    uint64_t *count;              /* the counter's count (struct vmkit_counter's first field) */
    uint64_t *quiet;              /* the limit filter's `quiet` */
    uint64_t *violation;          /* nonzero while limits.py holds a violation */
    void *delivery;               /* delivery.c's state for this CPU */
    uint64_t *results;            /* its RESULTS fields, contiguous */
    uint64_t *counts;             /* its counts: delivered, refused, declined */
    int64_t eip_id;
    uint64_t error_vectors;       /* bit n: vector n pushes an error code (x86.ERROR_CODE_VECTORS) */
    uint64_t off;
    uint64_t handed, handed_vector, handed_is_int, handed_eip, handed_has_error, handed_error,
             handed_result;
    uint64_t in_c, to_python;     /* counts: finished here; handed to the Python hook */
    uint64_t n;
    struct vmkit_intr_record records[RECORDS];
};

static void to_python(void *uc, uint32_t intno, struct vmkit_intr *s)
{
    s->to_python++;
    s->python(uc, intno, NULL);
}

void vmkit_intr(void *uc, uint32_t intno, struct vmkit_intr *s)
{
    if (s->off || s->n >= RECORDS || intno == PF) {
        to_python(uc, intno, s);
        return;
    }
    uint64_t is_int = 1, error = 0;
    if (intno < 32 && intno != 3 && intno != 4) {   /* #BP, #OF: only int3, into, int n */
        if (s->context_save(uc, s->context)) {
            to_python(uc, intno, s);                 /* (the Python's save raises the same) */
            return;
        }
        is_int = *s->is_int == 1;
        error = *s->error;
        if (!is_int) {
            *s->old_exception = 0xFFFFFFFFu;
            int err = s->context_restore(uc, s->context);
            if (err) {
                s->handed = HANDED_RESTORE;
                s->handed_result = (uint64_t)err;
                to_python(uc, intno, s);
                return;
            }
            if (*s->violation) {                     /* the Python reads the record again (as */
                to_python(uc, intno, s);             /* cleared: the same) and stops the run */
                return;
            }
        }
    }
    uint64_t eip = 0;
    if (s->reg_read(uc, (int)s->eip_id, &eip)) {
        to_python(uc, intno, s);
        return;
    }
    eip &= 0xFFFFFFFFu;
    uint64_t has_error = !is_int && (s->error_vectors >> intno & 1);
    if (!has_error)
        error = 0;
    uint64_t counts[3];
    memcpy(counts, s->counts, sizeof counts);
    (*s->quiet)++;
    int64_t done = vmkit_deliver(uc, s->delivery, intno, is_int, has_error, error, eip);
    (*s->quiet)--;
    if (done == 1 || done == REFUSED_THEN_DELIVERED) {
        struct vmkit_intr_record *r = &s->records[s->n++];
        r->count = *s->count;
        r->vector = intno, r->is_int = is_int, r->eip = eip;
        r->has_error = has_error, r->error = error, r->result = (uint64_t)done;
        memcpy(r->results, s->results, sizeof r->results);
        s->in_c++;
        return;
    }
    if (done == 0 || done == REFUSED) {              /* nothing written: the Python asks again */
        memcpy(s->counts, counts, sizeof counts);    /* (and is counted then) */
        to_python(uc, intno, s);
        return;
    }
    s->handed = HANDED_DELIVERY;                     /* a register load failed, frame pushed */
    s->handed_vector = intno, s->handed_is_int = is_int, s->handed_eip = eip;
    s->handed_has_error = has_error, s->handed_error = error, s->handed_result = (uint64_t)done;
    to_python(uc, intno, s);
}
