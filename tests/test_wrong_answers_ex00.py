"""Known-wrong answers to exercise 00 (decode an IDT gate): each must fail with a hint
that names the problem, never a traceback through the grader or the CPU, and the
machine's delivery must see what the decoder gets wrong (not only the table of samples)."""
import pytest

from vmkit.grading import ex00_idt_gate as grader

BODY = '''
import struct
from vmkit.hw.x86 import Gate


def decode_gate(raw):
    offset_low, selector, _zero, attributes, offset_high = struct.unpack("<HHBBH", raw)
    return Gate(offset=OFFSET, selector=selector, type=TYPE,
                dpl=DPL, present=bool(attributes & 0x80))
'''
RIGHT = {"OFFSET": "offset_low | (offset_high << 16)", "TYPE": "attributes & 0xF", "DPL": "(attributes >> 5) & 3"}


def decoder(tmp_path, body=None, **edits):
    source = body or BODY
    for name, text in {**RIGHT, **edits}.items():
        source = source.replace(name, text)
    path = tmp_path / "answer.py"
    path.write_text(source)
    namespace = {"__file__": str(path)}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace["decode_gate"]


def test_the_right_decoder_passes_both(tmp_path):
    decode = decoder(tmp_path)
    assert grader.check_decoding(decode) is None and grader.check_delivery(decode) is None


# (what is wrong, the answer's body or edits, which check, the hint)
WRONG = {
    # the grader's tuple(None) was a TypeError reported at the grader's own line, read as the learner's
    "returns None": ({"body": "def decode_gate(raw):\n    return None\n"}, "decoding",
                     "decode_gate returned None for the bytes"),
    "returns a str": ({"body": "def decode_gate(raw):\n    return 'x'\n"}, "delivery", "decode_gate returned 'x'"),
    "present as 0x80": ({"body": BODY.replace("bool(attributes & 0x80)", "attributes & 0x80")}, "delivery",
                        "present=128 for the bytes"),
    "a negative offset": ({"OFFSET": "-1"}, "delivery", "offset=-1 for the bytes"),
    "raises": ({"body": "def decode_gate(raw):\n    raise KeyError(raw[5])\n"}, "delivery",
               "your decode_gate raised KeyError: 143 at line 2 of answer.py (decoding the gate bytes"),
    "struct's own error": ({"body": "import struct\ndef decode_gate(raw):\n    return struct.unpack('<HHBBI', raw)\n"},
                           "decoding", "raised struct.error: unpack requires a buffer of 10 bytes"),
    # every handler sat below 64 KiB: a decoder that dropped the offset's high half passed delivery
    "offset's low half only": ({"OFFSET": "offset_low"}, "delivery", "int 0x30: handler ran 0 times"),
    # every gate was an interrupt gate: a decoder that read each as one type passed delivery
    "every gate an interrupt gate": ({"TYPE": "0xE"}, "delivery",
                                     "int 0x30: its handler ran with IF clear, yet its gate is a trap gate"),
    "every gate a trap gate": ({"TYPE": "0xF"}, "delivery",
                               "divide fault (#DE): its handler ran with IF set, yet its gate is an interrupt gate"),
    # the program ran at CPL 0 only, where every gate's DPL lets `int` through: DPL was never used
    "every DPL 0": ({"DPL": "0"}, "delivery", "int 0x32 from CPL 3 (its gate's DPL 3): handler ran 0 times"),
    "every DPL 3": ({"DPL": "3"}, "delivery", "int 0x33's own handler, from CPL 3 (its gate's DPL 0): handler ran 1"),
}


@pytest.mark.parametrize("what", WRONG)
def test_a_wrong_decoder_fails_with_its_hint(tmp_path, what):
    edits, check, hint = WRONG[what]
    message = getattr(grader, f"check_{check}")(decoder(tmp_path, **edits))
    assert message and hint in message, f"{what}: {message!r}"
