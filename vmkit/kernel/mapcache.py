"""Each CPU's memory-mapping cache (claims 17, 38).

The kernel cannot keep every physical page mapped: to touch a page of a VM
(its IDT when a virtual interrupt is injected, its stack for the frame) it
maps that page into a small window of its own address space, WINDOW, one
page per slot, and keeps the mapping while it is reused. The window's page
table belongs to the CPU (layout.WINDOW_TABLE in its per-CPU block) and is
shared, supervisor-only, into every address space that runs on that CPU
(kernel/paging.py), so the window is there whoever's CR3 is loaded.

Every access goes through the CPU: `read`/`write` name the window's linear
address and the CPU's MMU translates it (CPU.read_linear: its page walk at
CR3, its privilege, its TLB), exactly as a `mov` at that address in the
kernel would. So what the VMM reads is what the CPU's TLB says the slot
maps, stale or not; and the window is reachable only at CPL 0 with paging
on (the dispatcher, running in the stub, with a VM's or a system world's
CR3 loaded), never from a guest.

A lookup that finds the page in a slot is a hit. A miss takes an empty
slot, or evicts the least recently used one: it rewrites that slot's
page-table entry in emulated memory and has *this* CPU drop the slot's old
translation from its TLB: the kernel is Python in the dispatcher, so it has
the CPU execute `window_invlpg` (INVLPG_SOURCE, in the kernel image) through
CPU.execute before the next access; that x86 also counts the flush. Nothing
else: no other CPU can hold a translation of this window, because no other
CPU's address spaces contain it. That is why each CPU gets its own cache.

With one window shared by both CPUs (`shared_by`, lessons/smp.share_window,
for the comparison in notebook 07) the other CPU may still hold the old
translation in its TLB, and a read it makes through that slot returns the
old page's bytes. So every eviction also sends the other CPU an IPI
(SHOOTDOWN_VECTOR) through the local APICs: a TLB shootdown. The CPU that
takes it enters the kernel through its IDT like any interrupt, and the
dispatcher sends it (go-code layout.GO_SHOOTDOWN) to the x86 below, which
that CPU executes: `invlpg` on every window page, then it counts the
shootdown in its own counters. Which slot changed is not passed: two IPIs
sent before the first is taken arrive as one (one IRR bit), so the whole
window is dropped.

`choose` is the lookup-and-evict policy (exercise 07 plugs the learner's
in). The counters live in kernel memory at the CPU's layout.CACHE_COUNTERS:
hits, misses, evictions and IPIs sent (counted by the kernel), local
flushes and shootdowns taken (incremented by the x86 that executed the
`invlpg`s, on the CPU that executed them).
"""
import struct

from vmkit.hw.asm import assemble
from vmkit.hw.mmu import LinearFault
from vmkit.hw.lapic import ICR_HIGH, ICR_LOW
from . import layout
from .frame import EXIT, Frame
from .words import u32s

WINDOW = 0xFF800000             # the window's virtual address (directory slot 0x3FE)
SLOTS = 4                       # per CPU: two VMs' worth (a VM's IDT page and stack page)
WINDOW_PAGES = 2 * SLOTS        # the most slots a window may have (a shared one: both CPUs')
PRESENT, WRITABLE = 1, 2
_FRAME_PRESENT = ~0xFFF & 0xFFFFFFFF | PRESENT     # a page-table entry's frame and present bit
PAGING = 0x80000000             # CR0.PG
_U32 = struct.Struct("<I")
COUNTERS = ("hits", "misses", "evictions", "local_flushes", "ipis_sent", "shootdowns_taken")
_COUNTER = {name: 4 * i for i, name in enumerate(COUNTERS)}
_HITS = _COUNTER["hits"]        # (the counter every hit bumps)
SHOOTDOWN_VECTOR = 0xF1         # "flush your TLB": the IPI a shared window needs (smp.py)

# ---- the mapping cache's x86, included in the kernel image (kernel/image.py) ------------
# The dispatcher checks the go-code it left in the frame's vector slot:
DISPATCH_SOURCE = f"""\
        cmp eax, {layout.GO_SHOOTDOWN}
        je window_shootdown"""
# A remap on this CPU (MappingCache._flush, through CPU.execute from the dispatcher): the CPU
# drops the slot's old translation itself and counts it. eax = the slot's window address,
# ecx = &local_flushes. Position-independent, so the cache finds it in the loaded image by its bytes.
INVLPG_SOURCE = """\
window_invlpg:
        invlpg [eax]
        inc dword ptr [ecx]"""
# A shootdown IPI was taken: drop every window page from this CPU's TLB and count it. The
# dispatcher put the address of this CPU's shootdowns_taken counter in the error-code slot.
SHOOTDOWN_SOURCE = f"""\
window_shootdown:               ; executed by the CPU that took the IPI (mapcache.py)
        mov eax, {WINDOW:#x}
        mov ecx, {WINDOW_PAGES}
window_drop:
        invlpg [eax]            ; this CPU's TLB only: the other CPU's is its own business
        add eax, {layout.PAGE:#x}
        loop window_drop
        mov eax, [esp + {Frame.OFFSET['error']}]     ; error-code slot: &shootdowns_taken
        inc dword ptr [eax]
{EXIT}"""
KERNEL_SOURCE = SHOOTDOWN_SOURCE + "\n" + INVLPG_SOURCE
# ---- end of the mapping cache's x86 ------------------------------------------------------


_INVLPG_CODE = assemble(INVLPG_SOURCE, 0)


def _routine(kernel):
    """Where window_invlpg sits in the loaded kernel."""
    return kernel.routine(_INVLPG_CODE)


_PTES = {n: struct.Struct(f"<{n}I") for n in range(1, WINDOW_PAGES + 1)}   # a window's page-table entries


class MappingCacheError(RuntimeError):
    """The policy gave an answer the cache cannot use."""


def choose_slot(slots, last_used, page):
    """The cache's lookup-and-evict policy: (slot, hit).

    slots[i] is the physical page slot i maps (None: empty); last_used[i] when
    it was last used (a counter: bigger is more recent). If `page` is in a
    slot, that slot and hit=True; else the first empty slot, or the least
    recently used one, and hit=False."""
    if page in slots:
        return slots.index(page), True
    if None in slots:
        return slots.index(None), False
    return last_used.index(min(last_used)), False


class CacheState:
    """When each slot was last used (a recency clock: the page-table entries say what they map)."""
    def __init__(self, slots=SLOTS):
        self.last_used, self.clock = [0] * slots, 0


class MappingCache:
    def __init__(self, kernel, cpu, table, counters, shared_by=(), slots=SLOTS):
        """cpu: the CPU this cache belongs to; table: the window's page table
        (physical); counters: where the counters live; shared_by: the other
        CPUs whose TLBs must be shot down on an eviction (empty: per-CPU)."""
        if not 0 < slots <= WINDOW_PAGES:
            raise MappingCacheError(f"a window of {slots} slots: the kernel's shootdown drops {WINDOW_PAGES}")
        self.kernel, self.cpu, self.table, self.counters = kernel, cpu, table, counters
        self.memory, self.trace = kernel.memory, kernel.trace
        self.shared_by = list(shared_by)
        self.shootdown = True           # False: skip the IPIs (to see what a shared window needs them for)
        self.state = CacheState(slots)
        self.choose = choose_slot
        self.memory.write(table, bytes(layout.PAGE), code=False)
        self.memory.write(counters, bytes(4 * len(COUNTERS)), code=False)

    def count(self, name):
        return self.memory.read_u32(self.counter(name))

    def counter(self, name):
        """Where counter `name` lives in kernel memory."""
        return self.counters + 4 * COUNTERS.index(name)

    def _bump(self, name):
        """Count in place (the counters' bounds were checked when __init__ zeroed them)."""
        view, at = self.memory._view, self.counters + _COUNTER[name]
        _U32.pack_into(view, at, (_U32.unpack_from(view, at)[0] + 1) & 0xFFFFFFFF)

    def map(self, address):
        """The window address through which physical `address` is reached now."""
        self._reachable()
        return self._lookup(address)

    def _reachable(self):
        """The window is reachable now: CPL 0 with paging on (checked before any PTE or
        counter changes)."""
        cs, cr0 = self.cpu.read("cs", "cr0")
        if cs & 3 or not cr0 & PAGING:
            raise MappingCacheError(
                f"the mapping window is out of reach: CPU {self.cpu.index} runs at CPL {cs & 3} "
                f"with paging {'on' if cr0 & PAGING else 'off'}; the kernel maps pages at CPL 0 with paging on")

    def _lookup(self, address):
        """map's lookup (and remap on a miss), the window's reach already checked."""
        page, s = address & ~0xFFF, self.state
        s.clock += 1
        if self.choose is choose_slot:          # its hit, found in the entries as it finds it (the
            view, want = self.memory._view, page | PRESENT      # first slot mapping the page)
            for slot, pte in enumerate(_PTES[len(s.last_used)].unpack_from(view, self.table)):
                if pte & _FRAME_PRESENT == want:
                    at = self.counters + _HITS
                    _U32.pack_into(view, at, (_U32.unpack_from(view, at)[0] + 1) & 0xFFFFFFFF)
                    s.last_used[slot] = s.clock
                    return WINDOW + slot * layout.PAGE + (address & 0xFFF)
        slots = self.slots
        answer = self.choose(slots, list(s.last_used), page)
        try:
            slot, hit = answer
        except (TypeError, ValueError):
            raise MappingCacheError(f"the policy returned {answer!r:.60}: it answers (slot, hit), "
                                    "a slot index and True or False") from None
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(slots):
            raise MappingCacheError(f"the policy chose slot {slot!r}: the window has slots 0..{len(slots) - 1}")
        if hit is not True and hit is not False and hit not in (0, 1):
            raise MappingCacheError(f"the policy answered hit={hit!r} for slot {slot}: hit is True or False")
        if hit:
            self._bump("hits")
        else:
            self._bump("misses")
            if slots[slot] is not None:
                self._bump("evictions")
            self._remap(slot, slots[slot], page)
        s.last_used[slot] = s.clock
        return WINDOW + slot * layout.PAGE + (address & 0xFFF)

    def _run(self, addresses, i):
        """(n, step): how many of addresses[i:] one lookup maps, and 4 or -4, the way they
        go. The cache's own policy (choose_slot) finds a page where it has just put it: the
        words that follow addresses[i] one way, 4 bytes apart, in its page, are hits on its
        slot, nothing remapped. Any other policy is asked for every word: (1, 4)."""
        first = addresses[i]
        if self.choose is not choose_slot or i + 1 == len(addresses):
            return 1, 4
        step = addresses[i + 1] - first
        if step == 4:
            most = ((first | 0xFFF) - 3 - first) // 4 + 1      # words from `first` to its page's last
        elif step == -4:
            most = (first & 0xFFF) // 4 + 1                    # ... down to its page's first
        else:
            return 1, 4
        run, n = addresses[i:i + most], 1
        while n < len(run) and run[n] == first + n * step:
            n += 1
        return n, step

    def _hits_again(self, window, n):
        """n lookups more of the page choose_slot has just found at `window`: n hits on its
        slot, counted and dated as _lookup counts and dates them."""
        if n:
            slot, s = (window - WINDOW) // layout.PAGE, self.state
            s.clock += n
            view, at = self.memory._view, self.counters + _HITS
            _U32.pack_into(view, at, (_U32.unpack_from(view, at)[0] + n) & 0xFFFFFFFF)
            s.last_used[slot] = s.clock

    @property
    def slots(self):
        """The page each slot maps (None: empty), read from the window's page table
        (in place: the VMM looks its pages up several times per injected interrupt)."""
        ptes = _PTES[len(self.state.last_used)].unpack_from(self.memory._view, self.table)
        return [pte & ~0xFFF if pte & PRESENT else None for pte in ptes]   # (bounds: as _bump's)

    def _remap(self, slot, old, page):
        self.memory.write(self.table + 4 * slot, struct.pack("<I", page | PRESENT | WRITABLE), code=False)
        self._flush(WINDOW + slot * layout.PAGE)
        self.trace.emit("mapcache.remap", self.cpu.index, slot=slot, page=page,
                        old="-" if old is None else old)
        for other in self.shared_by if self.shootdown else ():   # a shared window: shoot the
            self.cpu.lapic.write(ICR_HIGH, other.index << 24)      # old entry down
            self.cpu.lapic.write(ICR_LOW, SHOOTDOWN_VECTOR)
            self._bump("ipis_sent")

    def _flush(self, window_address):
        """This CPU executes `invlpg` on the slot (INVLPG_SOURCE in the kernel image)
        and counts it in local_flushes: only this CPU's TLB."""
        begin = _routine(self.kernel)
        self.cpu.execute(begin, begin + len(_INVLPG_CODE), eax=window_address,
                         ecx=self.counter("local_flushes"))

    def take_shootdown(self, frame):
        """On the CPU that took the shootdown IPI (its local APIC already EOIed):
        leave the dispatcher for the x86 that invlpgs the window (KERNEL_SOURCE)."""
        frame.vector = layout.GO_SHOOTDOWN
        frame.error = self.counter("shootdowns_taken")
        self.trace.emit("mapcache.shootdown", self.cpu.index)

    def translate(self, virtual):
        """Physical address of a window address, from the page-table entry in memory
        (what the slot maps now; the CPU's TLB may still say otherwise: `through_cpu`)."""
        slot = (virtual - WINDOW) // layout.PAGE
        if not 0 <= slot < len(self.state.last_used):
            raise MappingCacheError(f"{virtual:#x} is outside the mapping window")
        pte = self.memory.read_u32(self.table + 4 * slot)
        if not pte & PRESENT:
            raise MappingCacheError(f"window slot {slot} is not mapped")
        return (pte & ~0xFFF) | (virtual & 0xFFF)

    def _pieces(self, address, length):
        while length > 0:
            n = min(length, layout.PAGE - (address & 0xFFF))
            yield address, n
            address, length = address + n, length - n

    def through_cpu(self, virtual):
        """Physical address of a window address as this CPU's MMU translates it (TLB first)."""
        return self._cpu_access(self.cpu.translate_linear, virtual)

    def _cpu_access(self, access, virtual, *args):
        try:
            return access(virtual, *args)
        except LinearFault as e:
            raise MappingCacheError(f"the mapping window is out of reach: {e}") from None

    def read(self, address, length, reach_checked=False):
        """Read physical memory through the window: the CPU loads from the window
        address (one mapping per page touched). `reach_checked`: the caller saw the
        window reachable (CPL 0, paging on) with nothing run on the CPU since."""
        if (address & 0xFFF) + length <= layout.PAGE:         # one page (a gate, a table pointer)
            if not reach_checked:
                self._reachable()
            try:
                return self.cpu.read_linear(self._lookup(address), length)
            except LinearFault as e:
                raise MappingCacheError(f"the mapping window is out of reach: {e}") from None
        return b"".join(self._cpu_access(self.cpu.read_linear, self.map(a), n)
                        for a, n in self._pieces(address, length))

    def write(self, address, data):
        """Write physical memory through the window: the CPU stores to the window address."""
        data, at = bytes(data), 0
        for a, n in self._pieces(address, len(data)):
            self._cpu_access(self.cpu.write_linear, self.map(a), data[at:at + n])
            at += n

    def read_u32(self, address):
        if address & 0xFFF <= 0xFFC:             # one page: one mapping, one load (the VMM's stack words)
            try:
                return _U32.unpack(self.cpu.read_linear(self.map(address), 4))[0]
            except LinearFault as e:
                raise MappingCacheError(f"the mapping window is out of reach: {e}") from None
        return _U32.unpack(self.read(address, 4))[0]

    def load_words(self, *addresses):
        """The u32 at each physical address, in this order: one lookup and one load
        through the window per word, as the CPU's pops make them (the window's reach
        checked once: nothing runs between them). Words the cache's own policy maps
        with one lookup (`_run`) are loaded by the CPU in one access (uc_vmem_read: ~1-2
        µs a call), their further lookups counted after it: what the first word's load
        would fault on, the longer one faults on, before anything else is counted."""
        self._reachable()
        return self._load_words(addresses)

    def _load_words(self, addresses):
        """load_words', the window's reach checked."""
        words, i = [], 0
        while i < len(addresses):
            address = addresses[i]
            if address & 0xFFF > 0xFFC:          # across a page: two lookups (read_u32)
                words.append(self.read_u32(address))
                i += 1
                continue
            n, step = self._run(addresses, i)
            window = self._lookup(address)
            low = window if step > 0 else window + (n - 1) * step
            got = u32s(n).unpack(self._cpu_access(self.cpu.read_linear, low, 4 * n))
            words.extend(got if step > 0 else reversed(got))
            self._hits_again(window, n - 1)
            i += n
        return words

    def store_words(self, *pairs, reach_checked=False):
        """Store each (physical address, u32) in this order: one lookup and one store
        through the window per word, as the CPU's pushes make them (reach checked once;
        `reach_checked`: by the caller's access through the window just before, with
        nothing run on the CPU since). Words the cache's own policy maps with one lookup
        (`_run`) are stored by the CPU in one access (uc_vmem_write), their further
        lookups counted after it, as load_words does."""
        if not reach_checked:
            self._reachable()
        addresses, i = [a for a, _ in pairs], 0
        while i < len(pairs):
            address, value = pairs[i]
            if address & 0xFFF > 0xFFC:          # across a page: two lookups (write_u32)
                self.write_u32(address, value)
                i += 1
                continue
            n, step = self._run(addresses, i)
            window = self._lookup(address)
            values = [v & 0xFFFFFFFF for _, v in pairs[i:i + n]]
            if step < 0:
                values.reverse()
            low = window if step > 0 else window + (n - 1) * step
            self._cpu_access(self.cpu.write_linear, low, u32s(n).pack(*values))
            self._hits_again(window, n - 1)
            i += n

    def push(self, top, *values, reach_checked=False):
        """The CPU's pushes of `values`, in this order, ending with ESP = `top`: values[0] at
        top + 4·(n-1) down to values[-1] at `top`. What store_words((top + 4·(n-1),
        values[0]), ..., (top, values[-1])) does, counted and stored the same way; when
        the cache's own policy maps the run with one lookup (one page), without building
        the pairs: one lookup (the first push's word), one store by the CPU, n-1 hits."""
        n = len(values)
        if self.choose is not choose_slot or (top & 0xFFF) > layout.PAGE - 4 * n:
            return self.store_words(*((top + 4 * (n - 1 - i), v) for i, v in enumerate(values)),
                                    reach_checked=reach_checked)
        if not reach_checked:
            self._reachable()
        window = self._lookup(top + 4 * (n - 1))
        run = u32s(n)
        try:
            data = run.pack(*values[::-1])
        except struct.error:                    # a value past 32 bits: stored mod 2**32, as pushed
            data = run.pack(*[v & 0xFFFFFFFF for v in values[::-1]])
        try:                                    # (_cpu_access's, inline: one call fewer per push)
            self.cpu.write_linear(window - 4 * (n - 1), data)
        except LinearFault as e:
            raise MappingCacheError(f"the mapping window is out of reach: {e}") from None
        self._hits_again(window, n - 1)

    def pop(self, top, n, reach_checked=False):
        """The CPU's n pops from ESP = `top`: the words at top, top + 4, ... top + 4·(n-1), in
        that order. What load_words(top, top + 4, ...) gives, counted and loaded the same
        way; when the cache's own policy maps the run with one lookup (one page), without
        building the addresses: one lookup (the first pop's word), one load by the CPU,
        n-1 hits. `reach_checked`: as store_words'."""
        if self.choose is not choose_slot or (top & 0xFFF) > layout.PAGE - 4 * n:
            if reach_checked:
                return self._load_words([top + 4 * i for i in range(n)])
            return self.load_words(*(top + 4 * i for i in range(n)))
        if not reach_checked:
            self._reachable()
        window = self._lookup(top)
        try:                                    # (_cpu_access's, inline: one call fewer per pop)
            words = u32s(n).unpack(self.cpu.read_linear(window, 4 * n))
        except LinearFault as e:
            raise MappingCacheError(f"the mapping window is out of reach: {e}") from None
        self._hits_again(window, n - 1)
        return list(words)

    def write_u32(self, address, value):
        data = _U32.pack(value & 0xFFFFFFFF)
        if address & 0xFFF <= 0xFFC:
            try:
                self.cpu.write_linear(self.map(address), data)
            except LinearFault as e:
                raise MappingCacheError(f"the mapping window is out of reach: {e}") from None
            return
        self.write(address, data)
