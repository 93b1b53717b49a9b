"""A bridge from the emulated wire to the host: a UDP socket on the loopback interface.

It takes the place of a wire's far end at one NIC (nic.wire is the bridge),
so a program on the host (a notebook cell, `nc -u 127.0.0.1 PORT`, a test)
can send a datagram to a guest and get its reply:

  host -> guest  a datagram's payload P becomes the Ethernet frame
                 dst = `to` (a guest's MAC) | src = the sender's host MAC | 0x88B5 | P,
                 padded to 60 bytes. The host MAC is made from the sender's UDP
                 port (02:68:6f:00:pp:pp), so replies can find their way back.
  guest -> host  a frame the NIC sends to such a host MAC goes to that host port as
                 one datagram: the frame's payload, its trailing NULs (the padding)
                 stripped.

Determinism. The machine never waits for the host: every POLL retired
instructions (a board event in virtual time) the bridge takes the datagrams
already there and each enters the NIC `latency` instructions later, like a
frame from a wire. When that is depends on the host, so the bridge records
(virtual time of arrival at the NIC, frame) in `log`: a replay (replay(), below)
puts the same frames in at the same virtual times, without a socket. A board
without a bridge has no such event: its runs stay exactly reproducible.

Only 127.0.0.1 is ever bound (nothing off this host can reach the machine),
and the socket is closed when the board is (board.close()).
"""
import socket

from .nic import NIC, MIN_FRAME, mac_str

ETHERTYPE = b"\x88\xb5"
POLL = 20_000               # retired instructions between looks at the socket
MAX_PAYLOAD = 1500
LOOPBACK = "127.0.0.1"


def host_mac(port):
    return bytes([0x02, 0x68, 0x6F, 0x00]) + port.to_bytes(2, "big")


class UdpBridge:
    def __init__(self, nic, to, port=0, latency=100):
        if not isinstance(nic, NIC):
            raise TypeError(f"a bridge joins a NIC (board.nics[i]), not {nic!r:.40}")
        if nic.wire is not None:
            raise ValueError(f"{nic.name} is already connected to a wire")
        if not isinstance(to, (bytes, bytearray)) or len(to) != 6:
            raise ValueError(f"`to` is the guest's MAC, 6 bytes, not {to!r:.40}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ValueError(f"a UDP port is 0..65535 (0: any free one), not {port!r}")
        self.nic, self.board, self.to, self.latency = nic, nic.board, bytes(to), latency
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, port))            # loopback only, never 0.0.0.0
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.peers = {}                             # host MAC -> (host, port)
        self.tap, self.log = [], []                 # as Wire.tap; (virtual time, frame) of host frames
        self.closed = False
        nic.wire = self
        self.board.closing.append(self.close)
        self.board.trace.emit("bridge.open", nic=nic.name, address=f"{self.address[0]}:{self.address[1]}",
                              to=mac_str(self.to))
        self.board.schedule(POLL, self._poll)

    # ---- host -> guest ------------------------------------------------------------------
    def _poll(self):
        if self.closed:
            return
        while True:
            try:
                data, peer = self.sock.recvfrom(MAX_PAYLOAD + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:                         # e.g. an ICMP error from an earlier reply
                continue
            if peer[0] != LOOPBACK or len(data) > MAX_PAYLOAD:
                self.board.trace.emit("bridge.drop", nic=self.nic.name, length=len(data),
                                      why="not from 127.0.0.1" if peer[0] != LOOPBACK
                                      else f"more than {MAX_PAYLOAD} bytes")
                continue
            src = host_mac(peer[1])
            self.peers[src] = peer
            frame = (self.to + src + ETHERTYPE + data).ljust(60, b"\0")
            self.tap.append((self.board.clock, "host", frame))
            self.log.append((self.board.now() + self.latency, frame))
            self.board.trace.emit("bridge.in", nic=self.nic.name, length=len(frame),
                                  src=f"{peer[0]}:{peer[1]}")
            self.board.schedule(self.latency, lambda f=frame: self.nic.receive(f))
        self.board.schedule(POLL, self._poll)

    # ---- guest -> host (the NIC calls this as it would a wire's) -------------------------------
    def transmit(self, src, frame):
        self.tap.append((self.board.clock, src.name, bytes(frame)))
        peer = self.peers.get(bytes(frame[:6]))
        if peer is None or self.closed or len(frame) < MIN_FRAME:
            return                                  # for no host we heard from: lost, as on a wire
        self.sock.sendto(bytes(frame[14:]).rstrip(b"\0"), peer)
        self.board.trace.emit("bridge.out", nic=self.nic.name, length=len(frame),
                              dst=f"{peer[0]}:{peer[1]}")

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()
            if self.nic.wire is self:
                self.nic.wire = None


def replay(nic, log):
    """Put the frames a bridge logged into `nic` at the same virtual times (no socket).
    Call before the board's clock passes the first of them."""
    board = nic.board
    for time, frame in log:
        if time <= board.now():
            raise ValueError(f"a frame logged for virtual time {time} cannot enter at {board.now()}")
        board.schedule(time - board.now(), lambda f=bytes(frame): nic.receive(f))
