"""The UDP bridge: a datagram from a socket of this test reaches a guest's echo driver through
nic1 and the kernel, and its reply comes back to the socket. Bounded in time."""
import socket

import pytest

from vmkit.hw.bridge import UdpBridge, replay
from vmkit.lessons import takeover
from vmkit.vmm import net_guest
from vmkit.vmm.net_device import install_vm_with_net


def echo_machine():
    board, cos, loader = takeover.takeover(nics=2)
    vm = install_vm_with_net(loader.kernel, net_guest.program("e", [("echo", 2)]),
                             net_guest.MEMORY, "e", "nic1")
    return board, vm


def test_a_host_datagram_reaches_the_guest_and_its_reply_comes_back():
    board, vm = echo_machine()
    bridge = UdpBridge(board.nics[1], vm.vmm.net.port.mac)
    assert bridge.address[0] == "127.0.0.1"
    host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host.bind(("127.0.0.1", 0))
    host.settimeout(0.05)
    try:
        host.sendto(b"hello guest", bridge.address)
        reply = None
        for _ in range(200):                                  # at most ~200 slices and 10 s
            board.run(50_000)
            try:
                reply, peer = host.recvfrom(2048)
                break
            except socket.timeout:
                pass
        assert reply == b"hello guest" and peer == bridge.address
        assert b"e echoed hello guest" in bytes(vm.vmm.console)      # the guest took it
        assert vm.vmm.net.port.counters().frames_received == 1     # through the kernel's path
        (when, frame), = bridge.log
        assert frame[14:25] == b"hello guest" and when > 0
    finally:
        host.close()
        board.close()
    assert bridge.sock.fileno() == -1 and board.nics[1].wire is None   # stopped with the machine


def test_the_log_replays_without_a_socket_at_the_same_virtual_times():
    board, vm = echo_machine()
    bridge = UdpBridge(board.nics[1], vm.vmm.net.port.mac)
    host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host.bind(("127.0.0.1", 0))
    host.sendto(b"replay me", bridge.address)
    for _ in range(40):
        board.run(50_000)
        if b"echoed" in bytes(vm.vmm.console):
            break
    host.close()
    log = list(bridge.log)
    board.close()
    first = [e for e in board.trace.of("net.rx")]
    board2, vm2 = echo_machine()
    replay(board2.nics[1], log)
    for _ in range(40):
        board2.run(50_000)
        if b"echoed" in bytes(vm2.vmm.console):
            break
    again = [e for e in board2.trace.of("net.rx")]
    assert b"e echoed replay me" in bytes(vm2.vmm.console)
    assert [(e.time, e.data) for e in again] == [(e.time, e.data) for e in first][:len(again)] and again
    board2.close()


def test_bad_arguments_are_refused_before_anything_is_bound():
    board, vm = echo_machine()
    with pytest.raises(ValueError, match="guest's MAC"):
        UdpBridge(board.nics[1], b"short")
    with pytest.raises(ValueError, match="UDP port"):
        UdpBridge(board.nics[1], vm.vmm.net.port.mac, port=70000)
    board.close()
