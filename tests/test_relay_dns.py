"""Where relayed mail goes (smtpmail.c "relay: where to (DNS)"): -R routes
and their addresses, then the MX lookup, against a small DNS server of this
file's own inside a network and mount namespace made for the test."""
import unittest

from test_unit import UnitProgram


class RouteUnits(UnitProgram, unittest.TestCase):
    """route_find and find_targets for routed domains: the unit groups of
    tests/unit/unit_smtp.c that need no DNS."""
    source, program = "unit_smtp.c", "smtpmail"

    def test_route_find(self):
        self.run_group("route_find")

    def test_route_targets(self):
        self.run_group("route_targets")


if __name__ == "__main__":
    unittest.main()
