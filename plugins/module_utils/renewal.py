# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""When to renew a certificate. Pure: the caller supplies the clock and the ARI window."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import datetime
import hashlib

from ansible_collections.fleetcert.meteor.plugins.module_utils.crypto import (
    certificate_names,
    not_valid_after,
    not_valid_before,
    serial_bytes,
)
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError

RenewalDecision = collections.namedtuple('RenewalDecision', 'should_renew reason renew_at')

REASONS = ('names_changed', 'expired', 'ari_window', 'lifetime', 'valid')

DEFAULT_REMAINING_FRACTION = 1.0 / 3


def _utc(value, option):
    if not isinstance(value, datetime.datetime):
        raise FleetcertError('%s: expected a datetime, got %s' % (option, type(value).__name__))
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)


def ari_renewal_point(cert, start, end):
    """The instant inside [start, end] at which this certificate is renewed.

    RFC 9773 asks for a random time in the window so a CA's clients spread out.
    Derived from the serial instead of drawn at random so every node of a fleet,
    and every run, picks the same instant: the fleet renews once, not once per
    node, and a rerun does not keep moving the target.
    """
    if end <= start:
        return start
    digest = hashlib.sha256(serial_bytes(cert)).digest()
    fraction = int.from_bytes(digest[:8], 'big') / float(1 << 64)
    return start + (end - start) * fraction


def lifetime_renewal_point(cert, remaining_fraction):
    """The instant when only ``remaining_fraction`` of the validity period is left."""
    not_before = not_valid_before(cert)
    not_after = not_valid_after(cert)
    return not_after - (not_after - not_before) * remaining_fraction


def validate_remaining_fraction(value, option='remaining_fraction'):
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise FleetcertError('%s: %r is not a number' % (option, value))
    if not 0.0 < fraction <= 1.0:
        raise FleetcertError(
            '%s: must be greater than 0 and at most 1 (the share of the lifetime left '
            'when renewal starts), got %r' % (option, value))
    return fraction


def decide_renewal(cert, now, wanted_names=None, remaining_fraction=DEFAULT_REMAINING_FRACTION,
                   renewal_window=None):
    """Decide whether ``cert`` should be renewed at ``now``.

    ``wanted_names``: normalized names the certificate must carry exactly (any
    order); ``None`` skips the check. ``renewal_window``: the CA's ARI window
    as ``acme_client.fetch_renewal_window`` returns it (``start`` and ``end``
    datetimes); when given it replaces the lifetime rule. ``renew_at`` is when renewal is (or
    became) due; for ``names_changed`` that is ``now``.
    """
    now = _utc(now, 'now')
    fraction = validate_remaining_fraction(remaining_fraction)
    if wanted_names is not None:
        have = set(name.lower() for name in certificate_names(cert))
        if set(name.lower() for name in wanted_names) != have:
            return RenewalDecision(True, 'names_changed', now)
    if renewal_window is not None:
        start = _utc(renewal_window.get('start'), 'renewal_window.start')
        end = _utc(renewal_window.get('end'), 'renewal_window.end')
        due_at = ari_renewal_point(cert, start, end)
        due_reason = 'ari_window'
    else:
        due_at = lifetime_renewal_point(cert, fraction)
        due_reason = 'lifetime'
    if now >= not_valid_after(cert):
        return RenewalDecision(True, 'expired', min(due_at, not_valid_after(cert)))
    if now >= due_at:
        return RenewalDecision(True, due_reason, due_at)
    return RenewalDecision(False, 'valid', due_at)
