"""The lab's slow DNS server answers as a DNS server does (read back with dpkt): the
query's id and question, its A or AAAA record, nothing for another type, no answer to what
is not one query; and it answers late, over a real socket."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import dpkt
import pytest

from netobserv_tui.lab._proc import worker_argv
from netobserv_tui.lab._worker import dns_answer

ANSWERS = {"4": "198.18.0.12", "6": "fd00:198:18::12"}


def query(name: str, qtype: int, ident: int = 4242) -> bytes:
    dns = dpkt.dns.DNS(id=ident, rd=1)
    dns.qd = [dpkt.dns.DNS.Q(name=name, type=qtype, cls=dpkt.dns.DNS_IN)]
    return bytes(dns)


@pytest.mark.parametrize(("qtype", "rdata"), [
    (dpkt.dns.DNS_A, socket.inet_pton(socket.AF_INET, "198.18.0.12")),
    (dpkt.dns.DNS_AAAA, socket.inet_pton(socket.AF_INET6, "fd00:198:18::12")),
])
def test_an_a_or_aaaa_question_gets_its_record(qtype: int, rdata: bytes) -> None:
    response = dns_answer(query("slow.lab.test", qtype), ANSWERS)
    assert response is not None
    dns = dpkt.dns.DNS(response)
    assert (dns.id, dns.qr, dns.rcode, dns.rd) == (
        4242, dpkt.dns.DNS_R, dpkt.dns.DNS_RCODE_NOERR, 1)
    assert [(q.name, q.type) for q in dns.qd] == [("slow.lab.test", qtype)]
    assert [(a.name, a.type, a.ttl, a.rdata) for a in dns.an] == [
        ("slow.lab.test", qtype, 60, rdata)]


def test_another_type_gets_no_record_and_garbage_no_answer() -> None:
    dns = dpkt.dns.DNS(dns_answer(query("slow.lab.test", dpkt.dns.DNS_MX), ANSWERS))
    assert (dns.id, dns.qr, len(dns.an)) == (4242, dpkt.dns.DNS_R, 0)
    assert dns_answer(b"\x00" * 5, ANSWERS) is None
    answered = dpkt.dns.DNS(dns_answer(query("x.test", dpkt.dns.DNS_A), ANSWERS))
    answered.qr = dpkt.dns.DNS_R
    assert dns_answer(bytes(answered), ANSWERS) is None  # a response is not a query
    assert dns_answer(query("x.test", dpkt.dns.DNS_A)[:-3], ANSWERS) is None  # cut short


def test_the_server_answers_late() -> None:
    """The worker as the lab runs it (here on this host's loopback, a free port)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    argv = worker_argv("slow-dns", port=port, delay_ms=80, answers=ANSWERS)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert json.loads(proc.stdout.readline()) == {"event": "ready", "port": port}
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        took = []
        for ident in (1, 2):
            began = time.monotonic()
            client.sendto(query("slow.lab.test", dpkt.dns.DNS_A, ident), ("127.0.0.1", port))
            dns = dpkt.dns.DNS(client.recv(4096))
            took.append(time.monotonic() - began)
            assert dns.id == ident and dns.an[0].rdata == socket.inet_aton("198.18.0.12")
        client.close()
        assert all(0.08 <= t < 2.0 for t in took), took
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
    assert json.loads(proc.stdout.readline()) == {"event": "done", "answered": 2}
