"""Claims 6-7, 32: the SCSI controller shared by the COS and the kernel."""
from vmkit.hw.disk import DiskImage
from vmkit.lessons import takeover
from vmkit.lessons.devices import BLOCK, kernel_request_block, scsi_driver


def test_cos_and_kernel_requests_interleaved_all_complete_with_the_right_data(tmp_path):
    board, cos, loader = takeover.takeover(disk=DiskImage.create(tmp_path / "d.img", 64))
    kernel = loader.kernel
    scsi = kernel.shared["scsi0"]
    # the COS will write block 5 from 0x7000 (a pattern), then read it back into 0x7400
    board.memory.write(0x7000, bytes(range(256)) * 2)
    done = []
    for i, lba in enumerate((10, 11, 12)):                    # the kernel's own writes, queued first
        buf, rb = 0x60000 + i * BLOCK, 0x61000 + i * 64
        board.memory.write(buf, bytes([0xA0 + i]) * BLOCK)
        kernel_request_block(board, rb, 0x2A, lba, buf)
        scsi.submit(rb, done.append)
    takeover.run_module(board, cos, "init:\n" + scsi_driver(0x2A, 5, 1, 0x7000))
    takeover.run_module(board, cos, "init:\n" + scsi_driver(0x28, 5, 1, 0x7400))
    for i, lba in enumerate((10, 11, 12)):                    # and the kernel reads them back
        kernel_request_block(board, 0x62000 + i * 64, 0x28, lba, 0x63000 + i * BLOCK)
        scsi.submit(0x62000 + i * 64, done.append)
    board.run(300_000)
    assert len(done) == 6 and scsi.completed == {"cos": 2, "kernel": 6}
    assert board.memory.read(0x7400, BLOCK) == bytes(range(256)) * 2
    for i in range(3):
        assert board.memory.read(0x63000 + i * BLOCK, BLOCK) == bytes([0xA0 + i]) * BLOCK
    assert board.scsi.ignored_doorbells == 0                   # never rung while busy: no interleaving
    starts = [e["owner"] for e in board.trace.of("scsi.share_start")]
    assert starts[:3] == ["kernel"] * 3 and "cos" in starts
    requests = [e.kind for e in board.trace.of("scsi.request", "scsi.complete")]
    assert requests == ["scsi.request", "scsi.complete"] * (len(requests) // 2)
    board.close()
    with DiskImage.open(tmp_path / "d.img") as disk:
        assert disk.read(5, 1) == bytes(range(256)) * 2


def test_the_cos_reaches_the_shared_controller_only_through_the_kernel(tmp_path):
    board, cos, loader = takeover.takeover(disk=DiskImage.create(tmp_path / "d.img", 64))
    mark = takeover.run_module(board, cos, "init:\n" + scsi_driver(0x28, 1, 1, 0x7400))
    shared = [e for e in board.trace.since(mark, "kernel.emulate") if e.data.get("what") == "shared device"]
    assert len(shared) >= 3                                   # RB_ADDR, DOORBELL, STATUS polls...
    assert all(e["owner"] == "cos" for e in board.trace.since(mark, "scsi.share_start"))
    board.close()


def test_the_cos_cannot_have_the_shared_controller_read_a_block_into_the_kernels_idt(tmp_path):
    """A bus master checks no segment limit: the kernel checks the COS's buffer for it."""
    from vmkit.kernel import layout
    from vmkit.hw.scsi import CHECK_CONDITION, FLAG_DMA_ERROR
    disk = DiskImage.create(tmp_path / "d.img", 64)
    with disk:
        disk.write(1, b"\xAB" * BLOCK)
    board, cos, loader = takeover.takeover(disk=DiskImage.open(tmp_path / "d.img"))
    kernel = loader.kernel
    idt = kernel.base + layout.IDT
    before = board.memory.read(idt, 256 * 8)
    from vmkit.lessons.devices import COS_RB, COS_STATUS
    mark = takeover.run_module(board, cos, "init:\n" + scsi_driver(0x28, 1, 1, idt))
    board.run(100_000)
    assert board.memory.read(idt, 256 * 8) == before                # not a byte of the IDT changed
    refused = board.trace.since(mark, "kernel.cos_dma")
    assert refused and refused[0]["address"] == idt and refused[0]["into"] == "the kernel's IDT"
    assert not board.trace.since(mark, "scsi.request")              # never reached the controller
    assert board.memory.read_u32(COS_STATUS) & 2                     # the COS was told: DONE ...
    assert board.memory.read(COS_RB + 2, 1)[0] == CHECK_CONDITION    # ... CHECK CONDITION in its block
    assert board.memory.read(COS_RB + 6, 1)[0] & FLAG_DMA_ERROR
    ticks = cos.ticks()
    board.run(300_000)
    assert cos.ticks() > ticks                                      # and runs on
    # its own memory still works through the same path
    mark = takeover.run_module(board, cos, "init:\n" + scsi_driver(0x28, 1, 1, 0x7400))
    board.run(100_000)
    assert board.memory.read(0x7400, BLOCK) == b"\xAB" * BLOCK
    assert not board.trace.since(mark, "kernel.cos_dma")
    board.close()


def test_a_cos_request_block_outside_its_memory_is_rberr(tmp_path):
    from vmkit.kernel import layout
    board, cos, loader = takeover.takeover(disk=DiskImage.create(tmp_path / "d.img", 64))
    rb = loader.kernel.base + layout.IDT + 0x100
    before = board.memory.read(rb, 64)
    mark = takeover.run_module(board, cos, f"""init:
        mov dx, 0xc100
        mov eax, {rb:#x}
        out dx, eax                          ; RB_ADDR: a block inside the kernel
        add dx, 4
        out dx, eax                          ; DOORBELL
        add dx, 4
        in eax, dx                           ; STATUS
        mov [0x5004], eax
        ret""")
    assert board.memory.read_u32(0x5004) & 6 == 6                   # DONE | RBERR
    assert board.memory.read(rb, 64) == before
    assert board.trace.since(mark, "scsi.cos_refused") and not board.trace.since(mark, "scsi.request")
    board.close()
