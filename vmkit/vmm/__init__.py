"""Virtual machine monitors: one per VM, entered through the kernel's dispatcher (vmm.py)."""
