# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.module_utils.renewal import (
    RenewalDecision,
    decide_renewal,
)

UTC = datetime.timezone.utc
NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime.datetime(2026, 4, 1, tzinfo=UTC)  # 90 days
LIFETIME = NOT_AFTER - NOT_BEFORE
SECOND = datetime.timedelta(seconds=1)
KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(serial=0x1234, names=('www.example.com', 'example.com'),
              not_before=NOT_BEFORE, not_after=NOT_AFTER):
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'Test CA')]))
        .public_key(KEY.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(KEY, hashes.SHA256())
    )


CERT = make_cert()


class TestLifetime:
    def test_fresh_certificate_is_valid_until_a_third_is_left(self):
        due = NOT_AFTER - LIFETIME / 3
        decision = decide_renewal(CERT, NOT_BEFORE + datetime.timedelta(days=1))
        assert decision == RenewalDecision(False, 'valid', due)

    def test_boundary_of_lifetime_rule(self):
        due = NOT_AFTER - LIFETIME / 3
        assert decide_renewal(CERT, due - SECOND) == (False, 'valid', due)
        assert decide_renewal(CERT, due) == (True, 'lifetime', due)
        assert decide_renewal(CERT, due + SECOND) == (True, 'lifetime', due)

    def test_remaining_fraction_is_configurable(self):
        due = NOT_AFTER - LIFETIME / 2
        assert decide_renewal(CERT, due - SECOND, remaining_fraction=0.5).should_renew is False
        assert decide_renewal(CERT, due, remaining_fraction=0.5) == (True, 'lifetime', due)

    def test_fraction_one_renews_from_the_first_second(self):
        assert decide_renewal(CERT, NOT_BEFORE, remaining_fraction=1.0) == (True, 'lifetime', NOT_BEFORE)

    def test_short_lived_certificate_uses_its_own_lifetime(self):
        # A fixed "30 days before expiry" rule would renew a 6-day certificate
        # at once; a third of its lifetime leaves it two days.
        cert = make_cert(not_after=NOT_BEFORE + datetime.timedelta(days=6))
        due = NOT_BEFORE + datetime.timedelta(days=4)
        assert decide_renewal(cert, due - SECOND) == (False, 'valid', due)
        assert decide_renewal(cert, due) == (True, 'lifetime', due)

    @pytest.mark.parametrize('bad', [0, -0.1, 1.01, 'abc', None])
    def test_refuses_bad_fraction(self, bad):
        with pytest.raises(FleetcertError, match='^remaining_fraction: '):
            decide_renewal(CERT, NOT_BEFORE, remaining_fraction=bad)


class TestExpired:
    def test_boundary_of_expiry(self):
        due = NOT_AFTER - LIFETIME / 3
        assert decide_renewal(CERT, NOT_AFTER - SECOND).reason == 'lifetime'
        assert decide_renewal(CERT, NOT_AFTER) == (True, 'expired', due)
        assert decide_renewal(CERT, NOT_AFTER + datetime.timedelta(days=400)) == (True, 'expired', due)

    def test_expired_wins_over_a_future_ari_window(self):
        window = {'start': NOT_AFTER + datetime.timedelta(days=1), 'end': NOT_AFTER + datetime.timedelta(days=2)}
        assert decide_renewal(CERT, NOT_AFTER, renewal_window=window) == (True, 'expired', NOT_AFTER)


class TestNames:
    def test_same_names_in_any_order_and_case(self):
        decision = decide_renewal(CERT, NOT_BEFORE, wanted_names=['EXAMPLE.com', 'www.example.com'])
        assert decision.should_renew is False

    @pytest.mark.parametrize('wanted', [
        ['example.com'], ['www.example.com', 'example.com', 'api.example.com'], ['other.example.com', 'example.com'],
    ])
    def test_changed_names_renew_now(self, wanted):
        now = NOT_BEFORE + datetime.timedelta(days=1)
        assert decide_renewal(CERT, now, wanted_names=wanted) == (True, 'names_changed', now)

    def test_names_changed_wins_over_expired(self):
        assert decide_renewal(CERT, NOT_AFTER, wanted_names=['x.example.com']).reason == 'names_changed'

    def test_none_skips_the_check(self):
        assert decide_renewal(CERT, NOT_BEFORE, wanted_names=None).reason == 'valid'


class TestAriWindow:
    START = datetime.datetime(2026, 3, 1, tzinfo=UTC)
    END = datetime.datetime(2026, 3, 3, tzinfo=UTC)

    def window(self):
        return {'start': self.START, 'end': self.END, 'explanation_url': None, 'retry_after': None}

    def test_point_is_inside_the_window_and_boundary_holds(self):
        decision = decide_renewal(CERT, self.START, renewal_window=self.window())
        point = decision.renew_at
        assert self.START <= point <= self.END
        assert decide_renewal(CERT, point - SECOND, renewal_window=self.window()) == (False, 'valid', point)
        assert decide_renewal(CERT, point, renewal_window=self.window()) == (True, 'ari_window', point)

    def test_point_is_deterministic_per_certificate(self):
        first = decide_renewal(CERT, self.START, renewal_window=self.window()).renew_at
        again = decide_renewal(make_cert(), NOT_BEFORE, renewal_window=self.window()).renew_at
        assert first == again

    def test_points_spread_across_the_window_for_different_serials(self):
        points = set()
        for serial in range(1, 41):
            point = decide_renewal(make_cert(serial=serial), NOT_BEFORE, renewal_window=self.window()).renew_at
            assert self.START <= point <= self.END
            points.add(point)
        assert len(points) == 40
        width = self.END - self.START
        assert min(points) < self.START + width / 4
        assert max(points) > self.END - width / 4

    def test_window_overrides_lifetime_rule_both_ways(self):
        lifetime_due = NOT_AFTER - LIFETIME / 3
        # Earlier than the lifetime rule: the CA asks for early renewal (e.g. revocation planned).
        early = {'start': NOT_BEFORE + datetime.timedelta(days=2), 'end': NOT_BEFORE + datetime.timedelta(days=2)}
        assert decide_renewal(CERT, NOT_BEFORE + datetime.timedelta(days=2), renewal_window=early).reason == 'ari_window'
        # Later than the lifetime rule: not yet due although a third is left.
        late = {'start': NOT_AFTER - datetime.timedelta(days=5), 'end': NOT_AFTER - datetime.timedelta(days=4)}
        assert decide_renewal(CERT, lifetime_due, renewal_window=late).should_renew is False

    def test_window_in_the_past_is_due_now(self):
        past = {'start': NOT_BEFORE, 'end': NOT_BEFORE + datetime.timedelta(hours=1)}
        decision = decide_renewal(CERT, NOT_BEFORE + datetime.timedelta(days=1), renewal_window=past)
        assert decision.should_renew is True and decision.reason == 'ari_window'

    def test_empty_or_inverted_window_uses_its_start(self):
        inverted = {'start': self.END, 'end': self.START}
        assert decide_renewal(CERT, NOT_BEFORE, renewal_window=inverted).renew_at == self.END

    def test_window_in_another_timezone_is_converted(self):
        plus2 = datetime.timezone(datetime.timedelta(hours=2))
        shifted = {'start': self.START.astimezone(plus2), 'end': self.END.astimezone(plus2)}
        assert decide_renewal(CERT, NOT_BEFORE, renewal_window=shifted).renew_at == \
            decide_renewal(CERT, NOT_BEFORE, renewal_window=self.window()).renew_at

    def test_refuses_unparseable_window(self):
        with pytest.raises(FleetcertError, match=r"^renewal_window.start: expected a datetime, got str"):
            decide_renewal(CERT, NOT_BEFORE, renewal_window={'start': 'soon', 'end': self.END})
        with pytest.raises(FleetcertError, match='^renewal_window.end: expected a datetime'):
            decide_renewal(CERT, NOT_BEFORE, renewal_window={'start': self.START})


def test_naive_now_is_utc():
    due = NOT_AFTER - LIFETIME / 3
    naive = due.replace(tzinfo=None)
    assert decide_renewal(CERT, naive) == (True, 'lifetime', due)
    assert decide_renewal(CERT, naive - SECOND).should_renew is False


def test_other_timezone_now_is_converted():
    due = NOT_AFTER - LIFETIME / 3
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    assert decide_renewal(CERT, (due - SECOND).astimezone(plus2)).should_renew is False
    assert decide_renewal(CERT, due.astimezone(plus2)).should_renew is True
