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
 * runs, takes the count back, and resumes there, skipping the check once. One
 * handler's step can be done here instead, without the stop (switch_seal.c), and one
 * breakpoint may be passed by when its handler would only return (pass_by.c).
 *
 * It runs before each instruction: at the budget, stop before executing it. The same
 * hook checks an instruction fetched past CS's limit (limits.c: fetch_past_limit), for one compare per
 * instruction below the lowest such limit (none where every code segment is flat), and
 * guards a flat stretch (limits_flat.c: the limit hooks suspended while no access can be
 * past a limit), for one more test per instruction outside one. */
#include "vmkit.h"

#define EFLAGS_IF 0x200

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
                        /* a world switch's sealing step done here (switch_seal.c): the
                         * instruction then runs as in the run resumed past the handler,
                         * whose first it would be; not at the budget (the resumed run
                         * would be the next slice's). (The instruction before it, the
                         * save's `jmp dispatch`, cannot have asked the run to stop.) */
                        if (c->seal && c->count < c->budget && seal_step(uc, c, address, c->count + 1)) {
                            first = 1;
                            break;
                        }
                        if (address == c->pass_at && pass_by(uc, c)) {
                            first = 1;    /* its handler would only return: on, as if resumed */
                            break;
                        }
                        c->hit = address;
                        c->count++;
                        c->stop(uc);
                        return;
                    }
                }
            }
        }
        /* (Not in a flat stretch: CS was flat when it began and nothing that loads CS runs in
         * one, limits_flat.c; the check reads CS from Unicorn, ~30% of the work loop's time.) */
        if (address >= c->fetch_from && !(c->flat & FLAT_ON) && c->limits
            && fetch_past_limit(uc, c->limits, address, size)) {
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
        c->stop(uc);                      /* counted, as a breakpoint's hit: limits_flat.py */
        return;
    }
}
