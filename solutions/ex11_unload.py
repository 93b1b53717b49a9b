"""Exercise 11 — the unload's reinstatement order (claims 24-25).

The COS's `rmmod` asks the kernel to unload. The kernel halts (it waits for
a SCSI request in flight and injects what the COS may take now), then
performs the reinstatement steps you list, in your order:

    "park"     CPU 1 gets the park IPI through the kernel's IDT and halts
               as the firmware left it (IF clear, the firmware's GDT);
    "unpatch"  every byte the kernel patched in the COS's code (pushfd,
               popfd, iretd made int3) is put back, from the patch list the
               kernel keeps in its own memory;
    "tables"   the kernel's x86 loads the COS's own GDT, IDT and TR and
               returns to it at CPL 0 (iretd) with its own IF: interrupt
               and fault handling are the COS's again;
    "devices"  the real 8259A gets the masks the COS programmed into its
               virtual PIC, lines still pending for it latched in the real
               PIC; the SCSI controller and the NIC handed back;
    "free"     the kernel's block cleared and given back to the COS's
               allocator.

Steps before "tables" run in the kernel, the COS still displaced; the steps
after it run with the COS at CPL 0 and the kernel no longer entered. A step
you leave out is a state the COS does not get back; a step in the wrong
place may no longer be possible, or may read memory that is already gone.
Claim 25 C says what comes first. The grader runs a real load, some activity
(a key pressed while the COS masked its keyboard line, a SCSI read in
flight, two CPUs) and your unload, and reads what the COS got back.
"""


def reinstatement_order():
    """The reinstatement steps, in order: a list of the names above."""
    ### BEGIN SOLUTION
    return ["park", "unpatch", "tables", "devices", "free"]
    ### END SOLUTION
