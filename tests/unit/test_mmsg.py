"""recvmmsg/sendmmsg batches over loopback UDP sockets."""
from __future__ import annotations

import socket

from vpclab.engines.io.mmsg import MessageBatch, sockaddr_in


def udp(bind: tuple[str, int] = ("127.0.0.1", 0)) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(bind)
    sock.settimeout(2)
    return sock


def test_a_batch_receives_what_is_waiting_with_lengths_and_senders_and_zero_when_nothing_is():
    server, client = udp(), udp()
    batch = MessageBatch(8, 2048, names=True)
    assert batch.recv(server.fileno()) == 0
    for i in range(5):
        client.sendto(bytes([i]) * (10 + i), server.getsockname())
    assert batch.recv(server.fileno()) == 5
    assert [bytes(batch.buffers[i].raw[:batch.lengths[i].msg_len]) for i in range(5)] == [
        bytes([i]) * (10 + i) for i in range(5)]
    assert sockaddr_in(batch.names[0].raw) == client.getsockname()


def test_echo_sends_slots_back_to_their_senders_or_on_a_connected_socket():
    server, client = udp(), udp()
    batch = MessageBatch(8, 2048, names=True)
    for i in range(3):
        client.sendto(bytes([i]) * 100, server.getsockname())
    assert batch.recv(server.fileno()) == 3
    assert batch.echo(server.fileno(), 1, 3, to_senders=True) == 2
    assert [client.recv(4096) for _ in range(2)] == [bytes([1]) * 100, bytes([2]) * 100]
    connected = udp()
    connected.connect(client.getsockname())
    assert batch.echo(connected.fileno(), 0, 1) == 1
    assert client.recv(4096) == bytes([0]) * 100
    # the next receive has whole slots again, not the lengths the echo used
    client.sendto(b"x" * 1500, server.getsockname())
    assert batch.recv(server.fileno()) == 1 and batch.lengths[0].msg_len == 1500


def test_send_sends_the_payload_of_the_first_slots():
    server, client = udp(), udp()
    client.connect(server.getsockname())
    assert MessageBatch(4, 7, b"payload").send(client.fileno(), 3) == 3
    assert [server.recv(100) for _ in range(3)] == [b"payload"] * 3
