"""Every error of the VMFS code: one base class, VmfsError, like dissect.vmfs's exception.py.

A message names the structure and, where there is one, the field:
"file descriptor 3 (addresses[7]): ...". The tools print it on one line; a
caller that wants to know which structure is bad reads `.structure` and
`.field` rather than parsing the text.
"""


class VmfsError(Exception):
    """Base of every VMFS error (a bad disk, a bad request, no space)."""
    def __init__(self, structure, message, field=None):
        self.structure, self.field, self.reason = structure, field, message
        where = f"{structure} ({field})" if field else structure
        super().__init__(f"{where}: {message}")


class NotVmfs(VmfsError):
    """The disk or partition does not hold this kit's VMFS; the message says why."""


class Corrupt(VmfsError):
    """An on-disk structure fails a check (checksum, range, type): fsck can say more."""


class NoSpace(VmfsError):
    """No free descriptor, pointer block or file block is left."""


class BadRequest(VmfsError):
    """The caller asked for something impossible (no such file, a bad name or range)."""
