"""Exercise 07 — the mapping cache's lookup and eviction (claims 17, 38).

Each CPU's kernel reaches a VM's memory (the guest's IDT when it injects a
virtual timer tick, the guest's stack for the interrupt frame) through a
small window of its own address space: SLOTS pages, each slot a page-table
entry the kernel points at the physical page it needs. Every time the kernel
needs a page it asks this function which slot to use:

    slots       slots[i] is the physical page slot i maps now, or None (empty)
    last_used   last_used[i] is when slot i was last used: a counter, bigger
                is more recent (0 for a slot never used)
    page        the physical page (4 KiB aligned) the kernel needs

Return (slot, hit):
  - the page is in a slot: that slot, hit=True (nothing to remap: a hit);
  - else the first empty slot, hit=False;
  - else the least recently used slot (smallest last_used), hit=False: the
    kernel rewrites its page-table entry and flushes this CPU's TLB (an
    eviction). Only this CPU's: the window is this CPU's alone.

The kernel reads through the slot you name, so a wrong answer reads the
wrong page: a "hit" on a slot that maps another page hands the guest's VMM
someone else's memory.
"""


def choose_slot(slots, last_used, page):
    """(slot, hit) for `page`."""
    ### BEGIN SOLUTION
    if page in slots:
        return slots.index(page), True
    if None in slots:
        return slots.index(None), False
    return last_used.index(min(last_used)), False
    ### END SOLUTION
