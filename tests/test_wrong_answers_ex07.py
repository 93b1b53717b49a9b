"""Known-wrong answers to exercise 07 (choose_slot) that the grader must fail, each with the
hint it must give. The grader runs them as every CPU's mapping-cache policy on the machine:
the VMMs read the guests' IDTs and stacks through the window, so a wrong slot is a wrong read."""
import pytest

from vmkit.grading import ex07_mapping_cache as grader


def _lru(slots, used):
    return (slots.index(None), False) if None in slots else (used.index(min(used)), False)


def always_slot_0(slots, last_used, page):
    return 0, slots[0] == page


def lying_hit(slots, last_used, page):                 # "found" even when it is not there
    return (slots.index(page), True) if page in slots else (_lru(slots, last_used)[0], True)


def most_recently_used(slots, last_used, page):
    if page in slots:
        return slots.index(page), True
    return (slots.index(None), False) if None in slots else (last_used.index(max(last_used)), False)


def out_of_range(slots, last_used, page):
    return len(slots), False


def never_a_hit(slots, last_used, page):
    return (slots.index(page), False) if page in slots else _lru(slots, last_used)


def hit_false_for_the_evicted_slot_only(slots, last_used, page):   # hit=True for an eviction
    if page in slots:
        return slots.index(page), True
    slot, _ = _lru(slots, last_used)
    return slot, slots[slot] is not None


class FirstInFirstOut:
    """Evicts the slot mapped longest ago, whatever was used since (its own note of the order)."""
    def __init__(self):
        self.order = []

    def __call__(self, slots, last_used, page):
        if page in slots:
            return slots.index(page), True
        slot = slots.index(None) if None in slots else self.order.pop(0)
        self.order.append(slot)
        return slot, False


def returns_nothing_when_full(slots, last_used, page):  # the eviction line left out
    if page in slots:
        return slots.index(page), True
    if None in slots:
        return slots.index(None), False


def hit_as_a_word(slots, last_used, page):
    slot, hit = _lru(slots, last_used) if page not in slots else (slots.index(page), True)
    return slot, "yes" if hit else "no"


def slot_only(slots, last_used, page):
    return _lru(slots, last_used)[0] if page not in slots else slots.index(page)


def slot_as_a_bool(slots, last_used, page):             # False is 0 to Python, not a slot index
    return (slots.index(page), True) if page in slots else (bool(_lru(slots, last_used)[0]), False)


WRONG = [
    (always_slot_0, grader.check_room, "pages already mapped were mapped again"),
    (always_slot_0, grader.check_eviction, "evict the least recently used slot"),
    (lying_hit, grader.check_room, "hit=True for a slot whose page-table entry maps nothing"),
    (most_recently_used, grader.check_eviction, "smallest last_used"),
    (out_of_range, grader.check_room, "the policy chose slot 4: the window has slots 0..3"),
    (never_a_hit, grader.check_room, "no lookup was a hit"),
    (hit_false_for_the_evicted_slot_only, grader.check_eviction, "did a slot you called a hit map another page"),
    # turns that each use their own VM's pages evict in the order the pages came in: FIFO had
    # least-recently-used's counters until a VM's stack moved between two pages
    (FirstInFirstOut(), grader.check_eviction, "a page used again while others came in"),
    # answers that are no (slot, hit): said so, not "cannot unpack non-iterable NoneType object (mapcache.py)"
    (returns_nothing_when_full, grader.check_eviction,
     "the policy returned None: it answers (slot, hit), a slot index and True or False"),
    (slot_only, grader.check_room, "the policy returned 0: it answers (slot, hit)"),
    (hit_as_a_word, grader.check_room, "the policy answered hit='no' for slot 0: hit is True or False"),
    (slot_as_a_bool, grader.check_room, "the policy chose slot False: the window has slots 0..3"),
]


@pytest.mark.parametrize("answer, check, hint", WRONG,
                         ids=[f"{getattr(a, '__name__', type(a).__name__)}-{c.__name__}" for a, c, _ in WRONG])
def test_a_known_wrong_answer_fails_with_its_hint(answer, check, hint):
    problem = check(answer)
    assert problem and hint in problem, problem


def test_the_reference_passes_both_checks():
    from vmkit.kernel.mapcache import choose_slot
    assert grader.check_room(choose_slot) is None and grader.check_eviction(choose_slot) is None
