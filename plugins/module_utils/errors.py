# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Expected failures of fleetcert.meteor, and how CA problem documents map onto them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class FleetcertError(Exception):
    """An expected failure: bad input, a CA problem, a network failure.

    Modules report it as ``module.fail_json(msg=e.msg, **e.details)``, so
    ``details`` must only hold JSON-serialisable values and never a secret.
    """

    def __init__(self, msg, **details):
        super(FleetcertError, self).__init__(msg)
        self.msg = msg
        self.details = details

    def __str__(self):
        return self.msg


def problem_to_dict(problem, status=None, url=None):
    """Turn an ``acme.messages.Error`` (RFC 7807 problem document) into a plain dict.

    Duck-typed on purpose: importing acme here would make every importer of
    this module pay for it. ``status`` and ``url`` override what the problem
    carries; ``url`` is the address the CA fetched during validation, when known.
    """
    subproblems = []
    for sub in getattr(problem, 'subproblems', None) or ():
        entry = problem_to_dict(sub)
        identifier = getattr(sub, 'identifier', None)
        if identifier is not None:
            entry['identifier'] = getattr(identifier, 'value', None)
        subproblems.append(entry)
    if status is None:
        status = getattr(problem, 'status', None)
    return {
        'type': getattr(problem, 'typ', None),
        'detail': getattr(problem, 'detail', None),
        'status': status,
        'subproblems': subproblems,
        'url': url,
        # Seconds from the response's Retry-After (429/503), when the client saw one.
        'retry_after': getattr(problem, 'retry_after', None),
    }


def problem_error(problem, context, status=None, url=None, **details):
    """Build a FleetcertError from an ACME problem document.

    ``context`` says what was being attempted (``'new-order for example.com'``);
    the message then carries the CA's problem type and detail so a user sees the
    cause without reading ``problem``.
    """
    info = problem_to_dict(problem, status=status, url=url)
    msg = '%s failed: %s' % (context, info['type'])
    if info['detail']:
        msg += ': %s' % info['detail']
    if url:
        msg += ' (the CA fetched %s)' % url
    if info['retry_after'] is not None:
        msg += ' (the CA asks to retry after %d s)' % info['retry_after']
    for sub in info['subproblems']:
        who = sub.get('identifier')
        msg += '; %s%s: %s' % ('%s: ' % who if who else '', sub['type'], sub['detail'])
    details['problem'] = info
    return FleetcertError(msg, **details)
