"""Where relayed mail goes (smtpmail.c "relay: where to (DNS)"): -R routes
and their addresses, then the MX lookup (RFC 5321 5.1, RFC 7505) against a
small DNS server of this file's own.

The DNS tests run inside a user, mount and network namespace that this file
makes (as `unshare -rmn` would, through libc): loopback up, and its own
/etc/resolv.conf (naming 127.0.0.1, where ZONE is served on port 53),
/etc/hosts and /etc/nsswitch.conf bind-mounted over the system's. Nothing
leaves the namespace. Where namespaces are not allowed the tests are
skipped, and say so.

    python3 tests/test_relay_dns.py --inside DIR COMMAND...

runs COMMAND in such a namespace with the DNS server up (DIR: a scratch
directory for the files mounted), and exits with its status.
"""
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

from harness import SANITIZER_ENV
from test_unit import UnitProgram

# The zone: name -> {type: [data]}; a name not in it is NXDOMAIN, one in
# SERVFAIL gets SERVFAIL, a type a name lacks is NODATA. The MX data are
# (preference, host); "." is the null MX (RFC 7505). The unit group "dns"
# of tests/unit/unit_smtp.c expects exactly this, with "relay.test" as its
# own host name.
ZONE = {
    "pref.test": {"MX": [(20, "mx-b1.pref.test"), (30, "mx-c.pref.test"),
                         (10, "mx-a.pref.test"), (20, "mx-b2.pref.test")]},
    "mx-a.pref.test": {"AAAA": ["::1"], "A": ["127.0.0.2"]},
    "mx-b1.pref.test": {"A": ["127.0.0.3"]},
    "mx-b2.pref.test": {"A": ["127.0.0.4"]},
    "mx-c.pref.test": {"A": ["127.0.0.5"]},
    "implicit.test": {"A": ["127.0.0.6"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "self.test": {"MX": [(10, "mx1.self.test"), (20, "relay.test"), (30, "mx3.self.test")]},
    "mx1.self.test": {"A": ["127.0.0.8"]},
    "mx3.self.test": {"A": ["127.0.0.9"]},
    "relay.test": {"A": ["127.0.0.10"]},
    "selfbest.test": {"MX": [(10, "RELAY.test."), (20, "mx3.self.test")]},
    "hostnx.test": {"MX": [(10, "gone.test")]},
    "hosttemp.test": {"MX": [(10, "servfail.test")]},
    "partial.test": {"MX": [(10, "servfail.test"), (20, "mx-c.pref.test")]},
    "many.test": {"MX": [(i, "h%d.x" % i) for i in range(20)]},
    # End to end: nothing listens on [::1]:25, the scripted server on
    # 127.0.0.1:25.
    "e2e.test": {"MX": [(10, "mail.e2e.test")]},
    "mail.e2e.test": {"AAAA": ["::1"], "A": ["127.0.0.1"]},
}
ZONE.update({"h%d.x" % i: {"A": ["127.0.1.%d" % i]} for i in range(20)})
SERVFAIL = {"servfail.test"}
TYPES = {1: "A", 15: "MX", 28: "AAAA"}


def encode_name(name):
    """A domain name in DNS wire form (RFC 1035 3.1), uncompressed."""
    labels = [l for l in name.rstrip(".").split(".") if l]
    return b"".join(bytes([len(l)]) + l.encode() for l in labels) + b"\0"


def rdata(rtype, value):
    if rtype == "A":
        return socket.inet_pton(socket.AF_INET, value)
    if rtype == "AAAA":
        return socket.inet_pton(socket.AF_INET6, value)
    return struct.pack("!H", value[0]) + encode_name(value[1])


def answer(query, zone, servfail):
    """The reply to one query datagram (RFC 1035 4.1), or None to ignore it."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, at = [], 12
    while at < len(query) and query[at]:
        labels.append(query[at + 1:at + 1 + query[at]].decode("ascii", "replace"))
        at += 1 + query[at]
    question = query[12:at + 5]
    if len(question) != at + 5 - 12:
        return None
    qtype = struct.unpack("!H", query[at + 1:at + 3])[0]
    name = ".".join(labels).lower()
    rcode, records = 0, []
    if name in servfail:
        rcode = 2
    elif name not in zone:
        rcode = 3
    else:
        records = zone[name].get(TYPES.get(qtype, "?"), [])
    # The owner of every answer is a pointer to the question's name (0xc00c).
    body = b"".join(struct.pack("!HHHIH", 0xc00c, qtype, 1, 60, len(rdata(TYPES[qtype], r)))
                    + rdata(TYPES[qtype], r) for r in records)
    head = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x0080 | rcode, 1,
                       len(records), 0, 0)
    return head + question + body


class DnsServer:
    """ZONE served over UDP on 127.0.0.1:53, in a thread; queries are
    kept as (name, type) in .asked."""

    def __init__(self, zone=ZONE, servfail=SERVFAIL):
        self.zone = {k.lower(): v for k, v in zone.items()}
        self.servfail = servfail
        self.asked = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            reply = answer(query, self.zone, self.servfail)
            if reply:
                self.sock.sendto(reply, peer)

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


# Linux's constants (sched.h, sys/mount.h, linux/sockios.h, net/if.h).
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 1
ETC_FILES = {
    "resolv.conf": "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "nsswitch.conf": "hosts: files dns\n",
}


def enter_namespace(scratch):
    """Make this (single-threaded) process the root of new user, mount and
    network namespaces, as `unshare -rmn` does; bring loopback up and mount
    ETC_FILES (written into scratch) over /etc's. OSError if not allowed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    uid, gid = os.getuid(), os.getgid()

    def check(result, what):
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, "%s: %s" % (what, os.strerror(err)))

    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) == 0:
        for name, text in (("setgroups", "deny"), ("uid_map", "0 %d 1" % uid),
                           ("gid_map", "0 %d 1" % gid)):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
    else:  # no user namespaces: root can still make the other two
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for name, text in ETC_FILES.items():
        path = os.path.join(scratch, name)
        with open(path, "w") as f:
            f.write(text)
        if not os.path.exists("/etc/" + name):
            raise OSError(0, "no /etc/%s to mount over" % name)
        check(libc.mount(path.encode(), ("/etc/" + name).encode(), None, MS_BIND, None),
              "mount --bind %s /etc/%s" % (path, name))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifreq)[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def inside_main(argv):
    """--inside DIR COMMAND...: COMMAND's exit status, in the namespace
    with the DNS server up; 77 if the namespace cannot be made."""
    try:
        enter_namespace(argv[0])
    except OSError as e:
        print("no namespace: %s" % e, file=sys.stderr)
        return 77
    server = DnsServer()
    try:
        return subprocess.run(argv[1:], timeout=200).returncode
    finally:
        server.stop()


NAMESPACE_SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))


def in_namespace(command, env=None, timeout=240):
    """Run command (a list) inside a namespace of ours with ZONE served, in
    tests/: the CompletedProcess (text); its returncode is NAMESPACE_SKIP if
    there could be none."""
    with tempfile.TemporaryDirectory(prefix="dnsns-") as scratch:
        return subprocess.run([sys.executable, os.path.abspath(__file__), "--inside",
                               scratch] + list(command), capture_output=True, text=True,
                              errors="replace", timeout=timeout, cwd=HERE,
                              env=dict(os.environ, **(env or {})))


class WhereUnits(UnitProgram, unittest.TestCase):
    """route_find and find_targets: the unit groups of tests/unit/unit_smtp.c.
    Routes and address literals need no DNS; the group "dns" runs inside
    the namespace, against ZONE, through the resolver (res_nquery)."""
    source, program = "unit_smtp.c", "smtpmail"

    def test_route_find(self):
        self.run_group("route_find")

    def test_route_targets(self):
        self.run_group("route_targets")

    def test_mx_order(self):
        self.run_group("mx_order")

    def test_find_targets_dns(self):
        self.assertEqual(self.build.returncode, 0, self.build.stderr[-4000:])
        run = in_namespace([self.exe, "dns"], env=dict(SANITIZER_ENV, UNIT_DNS_ZONE="1"))
        if run.returncode == NAMESPACE_SKIP:
            self.skipTest("no namespaces here: " + run.stderr.strip()[-300:])
        report = run.stdout[-6000:] + run.stderr[-3000:]
        self.assertEqual(run.returncode, 0, report)
        self.assertRegex(run.stdout, r"(?m)^dns: ([1-9]\d*) cases, 0 failed$", report)


class Delivery(unittest.TestCase):
    """End to end (issue test 11): smtpmail -q delivering queued messages by
    MX, inside the namespace (each test runs its twin in InsideDelivery
    there, where root may listen on port 25)."""

    def inside(self, name):
        run = in_namespace([sys.executable, "-m", "unittest", "-v",
                            "test_relay_dns.InsideDelivery." + name],
                           env={"RELAY_DNS_INSIDE": "1"})
        if run.returncode == NAMESPACE_SKIP:
            self.skipTest("no namespaces here: " + run.stderr.strip()[-300:])
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-6000:])
        self.assertIn("OK", run.stderr[-200:], run.stderr[-6000:])

    def test_refused_ipv6_then_ipv4(self):
        self.inside("test_refused_ipv6_then_ipv4")

    def test_null_mx(self):
        self.inside("test_null_mx")

    def test_nxdomain(self):
        self.inside("test_nxdomain")

    def test_servfail(self):
        self.inside("test_servfail")


if os.environ.get("RELAY_DNS_INSIDE"):
    # Defined only inside the namespace, where Delivery runs it: anywhere
    # else there is no port 25 of ours and no DNS server to ask.
    import threading as _threading

    import relay
    from relay import RelayTest, ScriptedSMTP, message, queue_job, read_env, wait_for

    class Port25(ScriptedSMTP):
        """A ScriptedSMTP on 127.0.0.1:25, as an MX host listens."""

        def __init__(self, **script):
            self.script = dict(self.DEFAULT, **script)
            self.used, self.transactions = {}, []
            self.stopping = _threading.Event()
            self.server = relay._Listener(("127.0.0.1", 25), relay._ScriptedHandler)
            self.server.owner = self
            self.port = 25
            self.lock = _threading.Lock()
            self.connections = 0
            self.thread = _threading.Thread(target=self.server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self.thread.start()

    class InsideDelivery(RelayTest):
        """Queued messages from alice@a.example to the domains of ZONE,
        delivered by smtpmail -q with no route: by MX."""

        def queue_one(self, rcpt, subject):
            queue_job(self.spool, "dns-" + subject, "alice@a.example", [rcpt],
                      message(subject=subject))
            self.mx = self.fake(Port25)
            self.run = self.runner()

        def report(self):
            """alice's mailbox once a report is in it (b"" if none comes)."""
            return wait_for(lambda: self.mailbox("alice"), 30) or b""

        def test_refused_ipv6_then_ipv4(self):
            # Nothing listens on [::1]:25: the first target, mail.e2e.test's
            # AAAA, refuses; its A, 127.0.0.1, takes the message.
            with socket.socket(socket.AF_INET6) as probe:
                self.assertNotEqual(probe.connect_ex(("::1", 25)), 0)
            self.queue_one("bob@e2e.test", "by-mx")
            got = wait_for(self.mx.delivered, 30)
            self.assertTrue(got, self.run.log())
            self.assertEqual([a for a, _ in got], ["bob@e2e.test"])
            self.assertIn(b"Subject: by-mx", got[0][1])
            self.assertTrue(wait_for(lambda: not self.queue(), 10), self.run.log())
            self.assertIn("where: e2e.test: MX 10 mail.e2e.test ::1 127.0.0.1", self.run.log())

        def test_null_mx(self):
            self.queue_one("bob@nullmx.test", "null-mx")
            text = self.report()
            self.assertTrue(text, self.run.log())
            self.assertIn(b"Status: 5.1.10", text)
            self.assertIn(b"bob@nullmx.test", text)
            self.assertTrue(wait_for(lambda: not self.queue(), 10), self.run.log())
            self.assertEqual(self.mx.connections, 0)

        def test_nxdomain(self):
            self.queue_one("bob@nx.test", "nxdomain")
            text = self.report()
            self.assertTrue(text, self.run.log())
            self.assertIn(b"Status: 5.4.4", text)
            self.assertIn(b"bob@nx.test", text)
            self.assertTrue(wait_for(lambda: not self.queue(), 10), self.run.log())
            self.assertEqual(self.mx.connections, 0)

        def test_servfail(self):
            self.queue_one("bob@servfail.test", "servfail")

            def deferred():
                env = read_env(self.spool, "dns-servfail")
                r = env and env["rcpt"][0]
                return r if r and r["state"] == "deferred" else None
            r = wait_for(deferred, 30)
            self.assertTrue(r, self.run.log())
            self.assertIn("4.4.3", r["reply"])
            self.assertGreaterEqual(r["attempts"], 1)
            self.assertEqual(self.mailbox("alice"), b"")  # no report
            self.assertEqual(self.mx.connections, 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--inside"]:
        sys.exit(inside_main(sys.argv[2:]))
    unittest.main()
