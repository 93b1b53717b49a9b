"""The VMM's pushes and pops through the mapping window (kernel/mapcache.py): each word
one lookup, counted; words the cache's own policy maps with one lookup loaded or stored
by the CPU in one access, through that mapping."""
import pytest

from vmkit.kernel import layout, mapcache, switch
from vmkit.lessons import smp as lesson
from vmkit.lessons.takeover import takeover


@pytest.fixture(scope="module")
def machine():
    """CPU 1 idle in its system world, in the kernel (CPL 0, paging on): its window reachable."""
    board, cos, loader = takeover(timer_period=2000, cpus=2)
    lesson.in_kernel(board, 1)
    return board, loader.kernel


def _spied(monkeypatch, cpu):
    """The CPU's accesses at linear addresses: [("r"|"w", address, length)]."""
    seen, read, write = [], cpu.read_linear, cpu.write_linear
    monkeypatch.setattr(cpu, "read_linear", lambda a, n: seen.append(("r", a, n)) or read(a, n))
    monkeypatch.setattr(cpu, "write_linear", lambda a, d: seen.append(("w", a, len(d))) or write(a, d))
    return seen


def _cache(kernel, slots):
    p = kernel.worlds.cpus[1]
    return mapcache.MappingCache(kernel, kernel.board.cpus[1], p.cache.table, p.cache.counters, slots=slots)


def test_three_pops_from_one_page_are_three_lookups_and_one_load(machine, monkeypatch):
    board, kernel = machine
    cache = _cache(kernel, 2)
    page = kernel.base + 0x3000
    board.memory.write(page + 0x20, bytes.fromhex("01000000 02000000 03000000".replace(" ", "")), code=False)
    seen = _spied(monkeypatch, board.cpus[1])
    assert cache.load_words(page + 0x20, page + 0x24, page + 0x28) == [1, 2, 3]
    assert [cache.count(n) for n in ("hits", "misses")] == [2, 1]
    assert seen == [("r", mapcache.WINDOW + 0x20, 12)]
    # a word across a page, and words apart: each its own lookups and load
    board.memory.write(page + 0xFFE, bytes.fromhex("aabbccdd"), code=False)
    seen.clear()
    assert cache.load_words(page + 0x20, page + 0xFFE, page + 0x28) == [1, 0xDDCCBBAA, 3]
    assert cache.count("hits") + cache.count("misses") == 3 + 4
    assert [n for _, _, n in seen] == [4, 2, 2, 4]


def test_pops_load_what_load_words_loads_counted_the_same_in_one_load_per_page(machine, monkeypatch):
    """The VMM's iretd pops three words: one lookup, one load by the CPU, two hits; across
    a page end (or with another policy) word by word, as load_words."""
    board, kernel = machine
    page = kernel.base + 0x3000
    board.memory.write(page + 0x20, bytes.fromhex("01000000 02000000 03000000".replace(" ", "")), code=False)
    board.memory.write(page + 0xFF8, bytes(range(0x40, 0x50)), code=False)
    counted = []
    for pop in (True, False):
        cache = _cache(kernel, 2)
        seen = _spied(monkeypatch, board.cpus[1])
        words = [cache.pop(page + 0x20, 3), cache.pop(page + 0xFF8, 3)] if pop else \
            [cache.load_words(page + 0x20, page + 0x24, page + 0x28),
             cache.load_words(page + 0xFF8, page + 0xFFC, page + 0x1000)]
        counted.append((words, [cache.count(n) for n in mapcache.COUNTERS], list(cache.state.last_used),
                        cache.slots, list(seen)))
        monkeypatch.undo()
    assert counted[0] == counted[1]
    assert counted[0][0][0] == [1, 2, 3]
    assert counted[0][-1][0] == ("r", mapcache.WINDOW + 0x20, 12)


def test_a_pop_out_of_the_windows_reach_is_refused_before_anything_is_counted(machine):
    board, kernel = machine
    cache = mapcache.MappingCache(kernel, board.cpus[0], kernel.worlds.cpus[1].cache.table,
                                  kernel.worlds.cpus[1].cache.counters, slots=2)   # CPU 0: the COS's,
    before = [cache.count(n) for n in mapcache.COUNTERS]                         # paging off
    with pytest.raises(mapcache.MappingCacheError, match="out of reach"):
        cache.pop(kernel.base + 0x3020, 3)
    assert [cache.count(n) for n in mapcache.COUNTERS] == before


def test_three_pushes_into_one_page_are_three_lookups_and_one_store(machine, monkeypatch):
    board, kernel = machine
    cache = _cache(kernel, 2)
    page = kernel.base + 0x3000
    seen = _spied(monkeypatch, board.cpus[1])
    cache.store_words((page + 0x48, 0x11111111), (page + 0x44, 0x22222222), (page + 0x40, -1))
    assert board.memory.read(page + 0x40, 12) == bytes.fromhex("ffffffff" "22222222" "11111111")
    assert [cache.count(n) for n in ("hits", "misses")] == [2, 1]
    assert seen == [("w", mapcache.WINDOW + 0x40, 12)]


def test_pushes_stored_together_go_out_before_a_remap_takes_their_slot(machine, monkeypatch):
    """One slot: the third push's page evicts the first two's, which are stored through
    their own mapping first."""
    board, kernel = machine
    cache = _cache(kernel, 1)
    a, b = kernel.base + 0x3000, kernel.base + 0x4000
    board.memory.write(b + 0x40, bytes(16), code=False)
    seen = _spied(monkeypatch, board.cpus[1])
    cache.store_words((a + 0x68, 7), (a + 0x64, 8), (b + 0x40, 9))
    assert [board.memory.read_u32(x) for x in (a + 0x68, a + 0x64, b + 0x40, b + 0x44)] == [7, 8, 9, 0]
    assert [cache.count(n) for n in ("hits", "misses", "evictions")] == [1, 2, 1]
    assert seen == [("w", mapcache.WINDOW + 0x64, 8), ("w", mapcache.WINDOW + 0x40, 4)]


def test_another_policy_is_asked_for_every_word_and_a_refusal_leaves_the_words_before_it_stored(
        machine, monkeypatch):
    board, kernel = machine
    cache = _cache(kernel, 2)
    page = kernel.base + 0x3000
    calls = []

    def refuse_the_third(slots, last_used, page):
        calls.append(page)
        return (9, False) if len(calls) == 3 else mapcache.choose_slot(slots, last_used, page)
    cache.choose = refuse_the_third
    seen = _spied(monkeypatch, board.cpus[1])
    with pytest.raises(mapcache.MappingCacheError, match="slot 9"):
        cache.store_words((page + 0x88, 5), (page + 0x84, 6), (page + 0x80, 7))
    assert [board.memory.read_u32(page + x) for x in (0x88, 0x84)] == [5, 6] and len(calls) == 3
    assert seen == [("w", mapcache.WINDOW + 0x88, 4), ("w", mapcache.WINDOW + 0x84, 4)]


def test_the_caches_own_policy_counts_a_page_looked_up_again_as_any_policy_would(machine):
    """The same batches with choose_slot, and with a copy of it that is asked for every
    word: the same counters, slots, recency and words, batch by batch."""
    board, kernel = machine
    pages = [kernel.base + 0x3000 + 0x1000 * i for i in range(3)]
    for i, page in enumerate(pages):
        board.memory.write(page + 0xF0, bytes(range(16 * i, 16 * i + 16)), code=False)
    batches = [[pages[0] + 0xF0, pages[0] + 0xF4, pages[0] + 0xF8], [pages[1] + 0xF4, pages[0] + 0xFC],
               [pages[2] + 0xF0, pages[2] + 0xF8, pages[1] + 0xF0, pages[1] + 0xF4], [pages[0] + 0xF0] * 3]
    seen = []
    for policy in (mapcache.choose_slot, lambda *a: mapcache.choose_slot(*a)):
        cache = _cache(kernel, 2)
        cache.choose, runs = policy, []
        for batch in batches:
            words = cache.load_words(*batch)
            cache.store_words(*[(a, w) for a, w in zip(batch, words)])
            runs.append((words, cache.slots, list(cache.state.last_used), cache.state.clock,
                         [cache.count(n) for n in mapcache.COUNTERS]))
        seen.append(runs)
    assert seen[0] == seen[1]
    assert seen[0][-1][-1][:3] == [19, 5, 3]         # hits, misses, evictions of 24 lookups


def test_a_run_of_words_stops_at_its_page_end_either_way(machine, monkeypatch):
    board, kernel = machine
    cache = _cache(kernel, 2)
    a = kernel.base + 0x3000
    board.memory.write(a + 0xFF0, bytes(range(0x10, 0x30)), code=False)     # to a + 0x100F
    word = lambda at: board.memory.read_u32(at)
    seen = _spied(monkeypatch, board.cpus[1])
    up = [a + 0xFF8, a + 0xFFC, a + 0x1000, a + 0x1004]
    assert cache.load_words(*up) == [word(x) for x in up]
    assert [(n, at & 0xFFF) for _, at, n in seen] == [(8, 0xFF8), (8, 0)]
    seen.clear()
    down = [a + 0x1008, a + 0x1004, a + 0x1000, a + 0xFFC]
    cache.store_words(*[(x, i) for i, x in enumerate(down)])
    assert [word(x) for x in down] == [0, 1, 2, 3]
    assert [(n, at & 0xFFF) for _, at, n in seen] == [(12, 0), (4, 0xFFC)]
    assert cache.count("hits") + cache.count("misses") == 8


def test_pushes_are_the_pairs_store_words_takes_counted_and_stored_alike(machine, monkeypatch):
    """cache.push(top, a, b, c): a at top + 8, b at top + 4, c at top, as store_words of those
    pairs: the same words, counters, slots, recency and CPU accesses, with the cache's own
    policy (one page: one store), with another, and for pushes across a page end."""
    board, kernel = machine
    page = kernel.base + 0x3000
    tops = [page + 0x40, page + 0xFFC, page + 0x1FF4, page + 0x2FF8]   # inside; across (twice); ending a page
    seen = []
    for use_push in (True, False):
        for policy in (mapcache.choose_slot, lambda *a: mapcache.choose_slot(*a)):
            cache = _cache(kernel, 2)
            cache.choose, runs = policy, []
            board.memory.write(page, bytes(0x3000), code=False)
            accesses = _spied(monkeypatch, board.cpus[1])
            for i, top in enumerate(tops):
                values = (0x202 + i, 0x1B, -1 - i)
                if use_push:
                    cache.push(top, *values)
                else:
                    cache.store_words((top + 8, values[0]), (top + 4, values[1]), (top, values[2]))
                runs.append((board.memory.read(top, 12), cache.slots, list(cache.state.last_used),
                             cache.state.clock, [cache.count(n) for n in mapcache.COUNTERS]))
            seen.append((runs, accesses if policy is mapcache.choose_slot else None))
            monkeypatch.undo()
    assert seen[0] == seen[2] and seen[1] == seen[3]
    assert seen[0][0] == [(r[0], r[1], r[2], r[3], r[4]) for r in seen[1][0]]   # policies agree
    assert seen[0][0][0][0] == bytes.fromhex("ffffffff" "1b000000" "02020000")
    assert [n for _, _, n in seen[0][1]][:1] == [12]            # one page: one store


def test_a_read_whose_reach_the_caller_saw_reads_no_register_and_counts_as_any(machine, monkeypatch):
    """The VMM's gate read after its pops (or after a switch's verify, which read CS and
    CR0): the window's reach is not read from the CPU again; the lookup, its count and
    the CPU's load through the window are the same."""
    board, kernel = machine
    page = kernel.base + 0x3000
    board.memory.write(page + 0x100, bytes(range(8)), code=False)
    counts = []
    for checked in (False, True):
        cache, cpu = _cache(kernel, 2), board.cpus[1]
        registers, read = [], cpu.read
        monkeypatch.setattr(cpu, "read", lambda *names: registers.append(names) or read(*names))
        seen = _spied(monkeypatch, cpu)
        assert cache.read(page + 0x100, 8, reach_checked=checked) == bytes(range(8))
        counts.append(([cache.count(n) for n in ("hits", "misses")], seen, cache.slots))
        assert [r for r in registers if "cs" in r] == ([] if checked else [("cs", "cr0")])
        monkeypatch.undo()
    assert counts[0] == counts[1]


def test_a_switchs_verify_gives_the_cpus_own_cs_and_cr0(monkeypatch):
    """What the injection after a switch relies on: CPL 0 (the kernel's CS, which the load's
    retf loaded) and paging on for a VM's world, as the CPU holds them."""
    board, cos, loader = takeover(timer_period=2000, vm_tick=None)     # every world on the PIT's tick
    kernel = loader.kernel
    kernel.install_vm(lambda base: "l: jmp l", 4096, "vm")
    got, real = [], switch.loaded
    def loaded(k, frame, cpu, nxt):
        cr0, cs = real(k, frame, cpu, nxt)
        got.append((nxt.name, cr0, cs, cpu["cr0"], cpu["cs"]))
        return cr0, cs
    monkeypatch.setattr(switch, "loaded", loaded)
    board.run(60_000)
    assert {name for name, *_ in got} == {"vm", "cos"}
    for name, cr0, cs, cpu_cr0, cpu_cs in got:
        assert (cr0, cs) == (cpu_cr0, cpu_cs) and cs == layout.KERNEL_CODE_SEL
        assert bool(cr0 & 0x80000000) == (name == "vm")
