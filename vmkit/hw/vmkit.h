/* What the platform's C files share (as xv6's defs.h): the instruction counter's state
 * (counter.c) and the segment-limit filter's (limits.c, limits_prepared.c, limits_flat.c),
 * each declared once here, and the functions one file calls in another, grouped by the
 * file they live in. Python declares the same structures field for field (counter.py:
 * _State; limits.py: _State; limits_prepared.py: _Prepared). counter.py hashes this file
 * with the sources it names the library by, so an edit here builds the library again. */
#ifndef VMKIT_H
#define VMKIT_H

#include <stddef.h>
#include <stdint.h>

typedef int (*stop_fn)(void *uc);
typedef int (*reg_read_fn)(void *uc, int regid, void *value);
typedef int (*reg_read_batch_fn)(void *uc, int *regs, void **values, int count);
typedef void (*slow_fn)(int type, uint64_t address, int size);
typedef int (*hook_add_fn)(void *uc, size_t *hh, int type, void *callback, void *user_data,
                           uint64_t begin, uint64_t end, ...);
typedef int (*hook_del_fn)(void *uc, size_t hh);

struct vmkit_limits;
struct vmkit_seal;

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
    /* Fetch past CS's limit (limits.c: fetch_past_limit): an instruction at or above fetch_from (the lowest
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
    /* A flat stretch (limits_flat.c). stretch_after: how many filtered accesses in a row, made
     * while every segment register an instruction can use is flat, make the counter stop
     * (before the next instruction, counted as a breakpoint is) so the platform can suspend
     * the limit hooks; 0: never. flat: FLAT_WANT (the filter saw that many), FLAT_ON (the
     * hooks are suspended: each instruction is checked before it runs), FLAT_STOP (the run
     * stopped to begin a stretch), FLAT_END (the check stopped the run before an
     * instruction a stretch may not run). */
    uint64_t stretch_after;
    uint64_t flat;
    /* A world switch's sealing step done at the breakpoint, not stopped for (switch_seal.c):
     * NULL, or this CPU's arming. */
    struct vmkit_seal *seal;
    /* A breakpoint passed by when its handler would only return (pass_by.c): at pass_at,
     * while pass_on, with CS pass_cs, the u32 at pass_word not 1 and the one at ESP +
     * pass_vector pass_below or more; `passed` counts the passes. Physical memory is `ram`. */
    uint64_t pass_at, pass_on, pass_cs, pass_word, pass_vector, pass_below, passed;
    const unsigned char *ram;
    uint64_t ram_size;
    int64_t cs_id, esp_id;
};
#define FLAT_WANT 1
#define FLAT_ON 2
#define FLAT_STOP 4
#define FLAT_END 8

/* The segment-limit filter (limits.c). */
#define LIMIT_SELECTORS 64
#define CR0_PG 0x80000000u
enum { R_CS = 1, R_SS = 2, R_DS = 4, R_ES = 8, R_FS = 16, R_GS = 32, R_ALL = 63 };
#define CONFORMING 0x10
#define NOT_CODE 0xFF
#define LIMIT_TABLE (8 * LIMIT_SELECTORS)       /* the bytes of a GDT the filter copies */
#define LIMIT_RANGES (4 * LIMIT_SELECTORS)      /* two tables' ranges, two per entry at most */
#define LIMIT_PREPARED 32

/* One configuration of the filter (limits_prepared.py: SegmentLimits.refresh): the key, what a
 * refresh reads (GDTR, the GDT's bytes, the CPL and paging the software will run at, the
 * GDT a switch's load is about to lgdt and its bytes), and what limits_prepared.py decoded
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
    uint64_t nsel;                        /* GDT entries described here */
    uint64_t base[LIMIT_SELECTORS];
    uint64_t limit[LIMIT_SELECTORS];      /* in bytes; 0xFFFFFFFF: flat or not a segment */
    uint64_t code[LIMIT_SELECTORS];       /* a code segment's DPL (| CONFORMING), or NOT_CODE */
    const unsigned char *ram;             /* the machine's memory (physical = linear: paging off) */
    uint64_t ram_size;
    int64_t eip_id, cr0_id;
    uint64_t quiet;                       /* 1 while the platform delivers (delivery.py) */
    reg_read_batch_fn reg_read_batch;     /* the selectors, CR0 and EIP in one call */
    uint64_t calls, looked;               /* accesses filtered; of those, instructions read */
    uint64_t gdt_base, gdt_limit;         /* the GDTR the table was read under */
    int64_t gdtr_id;
    /* A flat stretch: flat_run counts filtered accesses in a row made at CPL 0 while CS, SS,
     * DS and ES are flat (base 0, limit 4 GiB); at the counter's stretch_after it asks the
     * counter to stop (FLAT_WANT). fsgs_flat: which of FS, GS were flat when it began. */
    struct vmkit_counter *counter;
    uint64_t flat_run, fsgs_flat;
    int64_t eflags_id, dr7_id;
    /* The configurations the filter has been in (limits_prepared.c: vmkit_limits_refresh): the
     * hooks, the ranges they want, and the prepared tables a refresh installs again without
     * Python. */
    hook_add_fn hook_add;
    hook_del_fn hook_del;
    int64_t hook_type;                    /* UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE */
    uint64_t suspended;                   /* a flat stretch: the hooks off, `first`/`last` still wanted */
    uint64_t nranges, first[LIMIT_RANGES], last[LIMIT_RANGES];   /* the ranges wanted hooked */
    uint64_t nhooks, hooks[LIMIT_RANGES];                         /* Unicorn's handles, installed */
    int64_t current;                      /* the prepared configuration installed, or -1 */
    uint64_t clock;                       /* stamps prepared[] with its last use */
    uint64_t reused, misses;              /* refreshes served from prepared[] / decoded by Python */
    struct vmkit_prepared pending;        /* a refresh's key, read in C; a miss: decoded by Python */
    struct vmkit_prepared prepared[LIMIT_PREPARED];
};

/* GDTR, IDTR, LDTR and TR as Unicorn's reg_read gives them (uc_x86_mmr). */
struct vmkit_mmr { uint16_t selector; uint64_t base; uint32_t limit; uint32_t flags; };

/* A little-endian u32 in RAM (memcpy: any alignment), and whether [address, address + length)
 * lies in a RAM of ram_size bytes (no wrap): what the C files that read the machine's RAM
 * buffer share. */
static inline uint32_t u32_at(const unsigned char *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

static inline int ram_holds(uint64_t ram_size, uint64_t address, uint64_t length)
{
    return address + length <= ram_size && address + length >= address;
}

/* The functions below without the vmkit_ prefix are called only from another of these files:
 * not exported from the library (ctypes looks up only vmkit_*). */
#define INTERNAL __attribute__((visibility("hidden")))

/* counter.c */
void vmkit_count(void *uc, uint64_t address, uint32_t size, struct vmkit_counter *c);

/* pass_by.c */
INTERNAL int pass_by(void *uc, struct vmkit_counter *c);

/* limits.c */
void vmkit_limit(void *uc, int type, uint64_t address, int size, int64_t value, struct vmkit_limits *l);
INTERNAL int cs_described(struct vmkit_limits *l, uint64_t cs);
INTERNAL int fetch_past_limit(void *uc, struct vmkit_limits *l, uint64_t address, uint32_t size);

/* limits_prepared.c */
int64_t vmkit_limits_refresh(void *uc, struct vmkit_limits *l, int64_t cpl, int64_t paging,
                             int64_t loading, uint64_t load_base, uint64_t load_limit);
int64_t vmkit_limits_install(void *uc, struct vmkit_limits *l);
int64_t vmkit_limits_resume(void *uc, struct vmkit_limits *l);
void vmkit_limits_suspend(void *uc, struct vmkit_limits *l);

/* switch_seal.c */
INTERNAL int seal_step(void *uc, struct vmkit_counter *c, uint64_t address, uint64_t count);
INTERNAL int identity_mapped(const unsigned char *ram, uint64_t ram_size, uint64_t cr3, uint64_t address);

/* limits_flat.c */
INTERNAL int flat_stop(void *uc, struct vmkit_counter *c, uint64_t address, int first);

#endif
