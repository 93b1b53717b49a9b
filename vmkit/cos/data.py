"""The COS's x86 source: what follows `cos_code_end`: the vector tables the
boot code builds the IDT from, the drivers table, and the strings."""
from .constants import IRQ_HANDLERS, string as _string


def _driver(name, probe):
    return f".byte {', '.join(f'{b:#x}' for b in name.encode().ljust(8, bytes(1)))}\n.long {probe}"


DATA = "\n".join([
    ".align 4",
    "exc_table: .long " + ", ".join(f"exc_{v}" for v in range(32)),
    "irq_table: .long " + ", ".join(IRQ_HANDLERS.get(n, f"irq_{n}") for n in range(16)),
    "drivers:",
    *(_driver(n, f"probe_{n}") for n in ("pic", "pit", "serial", "kbd", "sensor", "nic", "scsi")),
    ".long 0, 0, 0",
    _string("s_booting", "COS: booting\n"), _string("s_ready", "COS: ready\n"),
    _string("s_cos", "COS: "), _string("s_cos_lower", "cos: "), _string("s_nl", "\n"),
    _string("s_ports", " ports 0x"), _string("s_dash", "-0x"), _string("s_irq", " irq "),
    _string("s_none", "none"), _string("s_nodriver", " (no driver)\n"),
    _string("s_claimed", " claimed\n"), _string("s_unclaimed", " (no driver)\n"),
    _string("s_tick", "cos: tick "), _string("s_ticks", "cos: ticks "),
    _string("s_help", "cos: commands: help ticks devices insmod rmmod mem\n"),
    _string("s_unknown", "cos: unknown command\n"),
    _string("s_mem", "cos: next free page 0x"), _string("s_ramtop", " ram top 0x"),
    _string("s_insmod_init", "insmod: init\n"), _string("s_insmod_ok", "insmod: ok\n"),
    _string("s_insmod_bad", "insmod: bad module\n"), _string("s_insmod_failed", "insmod: init failed\n"),
    _string("s_rmmod_exit", "rmmod: exit\n"), _string("s_rmmod_ok", "rmmod: ok\n"),
    _string("s_rmmod_none", "rmmod: no module with an exit\n"), _string("s_rmmod_failed", "rmmod: exit failed\n"),
    _string("s_fault", "COS: fault "), _string("s_at", " at 0x"),
    *(_string(f"c_{c}", c) for c in ("help", "ticks", "devices", "insmod", "rmmod", "mem")),
])
