/* The retired-instruction counter: a Unicorn code hook in C.
 *
 * Unicorn's own `count=` stops after N instructions but does not say how
 * many ran when something else stopped the slice first (hlt, a fault, a
 * device asking for the slice to end). This hook is the same mechanism
 * (Unicorn's count is a C code hook too, measured at the same speed), with
 * the count in memory Python can read: virtual time is exact.
 * It runs before each instruction: at the budget, stop before executing it. */
#include <stdint.h>

typedef int (*stop_fn)(void *uc);

struct vmkit_counter {
    uint64_t count;
    uint64_t budget;
    stop_fn stop;
    uint64_t spent;      /* 1 when the budget, not the guest (hlt, a fault), ended the run */
};

void vmkit_count(void *uc, uint64_t address, uint32_t size, struct vmkit_counter *c)
{
    (void)address; (void)size;
    if (c->count >= c->budget) {
        c->spent = 1;
        c->stop(uc);
        return;
    }
    c->count++;
}
