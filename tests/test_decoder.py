"""The kernel's decode cache keeps decodings, never memory: a changed instruction is decoded again."""
from vmkit.hw.memory import PhysicalMemory
from vmkit.kernel import decoder


def test_an_instruction_changed_in_memory_is_decoded_again():
    memory = PhysicalMemory(0x2000)
    memory.write(0x1000, bytes([0xFA]))                  # cli
    assert decoder.decode(memory, 0x1000).mnemonic == "cli"
    memory.write(0x1000, bytes([0xFB]))                  # sti, at the same address
    assert decoder.decode(memory, 0x1000).mnemonic == "sti"
    memory.write(0x1000, bytes([0xE6, 0x20]))            # out 0x20, al: longer, operands kept
    insn = decoder.decode(memory, 0x1000)
    assert (insn.mnemonic, insn.size, insn.operands[0].imm) == ("out", 2, 0x20)


def test_an_instruction_at_the_end_of_memory_decodes():
    memory = PhysicalMemory(0x1000)
    memory.write(0xFFF, bytes([0xF4]))                   # hlt, the last byte there is
    assert decoder.decode(memory, 0xFFF).mnemonic == "hlt"


def test_an_in_or_out_gives_its_port_and_size_from_the_bytes_there_now():
    memory = PhysicalMemory(0x2000)
    memory.write(0x1000, bytes([0xE6, 0x20]))            # out 0x20, al
    assert decoder.decode(memory, 0x1000).io == (0x20, 1)
    memory.write(0x1000, bytes([0xED]))                  # in eax, dx: the port is DX's
    assert decoder.decode(memory, 0x1000).io == (None, 4)
    memory.write(0x1000, bytes([0x66, 0xE5, 0x71]))      # in ax, 0x71
    assert decoder.decode(memory, 0x1000).io == (0x71, 2)
    memory.write(0x1000, bytes([0xFA]))                  # cli: no port at all
    assert decoder.decode(memory, 0x1000).io is None
