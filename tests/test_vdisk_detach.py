"""detach_vdisk (notebook 10) given something that is not one of the kernel's VM worlds:
a clear error naming what it takes, nothing changed."""
import pytest

from vmkit.kernel.worlds import VMError
from vmkit.vmm.vdisk_device import detach_vdisk
from test_vdisk import boot, fresh, vm


def test_detach_vdisk_names_what_it_takes_when_given_something_else(tmp_path):
    board, kernel = boot(fresh(tmp_path))
    vm1 = vm(kernel, "vm1", [], "a.vdisk", 8192)
    for wrong in (None, "nope", 5):
        with pytest.raises(VMError, match="detach_vdisk takes one of this kernel's VM worlds"):
            detach_vdisk(kernel, wrong)
    assert vm1.vmm.disk is not None                      # nothing changed
    detach_vdisk(kernel, "vm1")                          # by name
    assert vm1.vmm.disk is None
