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
 * It runs before each instruction: at the budget, stop before executing it. */
#include <stdint.h>

typedef int (*stop_fn)(void *uc);

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
};

void vmkit_count(void *uc, uint64_t address, uint32_t size, struct vmkit_counter *c)
{
    (void)size;
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
    if (c->count >= c->budget) {
        c->spent = 1;
        c->stop(uc);
        return;
    }
    c->count++;
}

/* Segment limits (limits.py): Unicorn checks none, so the platform hooks the linear
 * ranges that lie past the limit of a segment CPL > 0 may load. This filter runs on
 * every access in those ranges and lets through, without Python, the two cases that
 * cannot be past a limit: CPL 0 (the kernel, whose segments here are flat) and an
 * access inside the limit of every segment register loaded now (a VM at CPL 3 with
 * flat segments whose memory lies past the COS's limit). Anything else goes to
 * Python, which decodes the instruction to find the segment it used. */
typedef int (*reg_read_fn)(void *uc, int regid, void *value);
typedef void (*slow_fn)(int type, uint64_t address, int size);

#define LIMIT_SELECTORS 64

struct vmkit_limits {
    reg_read_fn reg_read;
    slow_fn slow;
    int64_t regs[6];                      /* Unicorn's ids of CS, SS, DS, ES, FS, GS */
    uint64_t nsel;                        /* GDT entries described below */
    uint64_t base[LIMIT_SELECTORS];
    uint64_t limit[LIMIT_SELECTORS];      /* in bytes; 0xFFFFFFFF: flat or not a segment */
};

void vmkit_limit(void *uc, int type, uint64_t address, int size, int64_t value, struct vmkit_limits *l)
{
    (void)value;
    uint64_t sel = 0;
    l->reg_read(uc, (int)l->regs[0], &sel);
    if ((sel & 3) == 0)
        return;
    for (int i = 0; i < 6; i++) {
        if (i) {
            sel = 0;
            l->reg_read(uc, (int)l->regs[i], &sel);
        }
        sel &= 0xFFFF;
        uint64_t index = sel >> 3;
        if (index == 0 && !(sel & 4))
            continue;                     /* a null selector: no access goes through it */
        if ((sel & 4) || index >= l->nsel) {
            l->slow(type, address, size);
            return;
        }
        uint64_t offset = (address - l->base[index]) & 0xFFFFFFFFu;
        if (offset + (uint64_t)size - 1 > l->limit[index]) {
            l->slow(type, address, size);
            return;
        }
    }
}
