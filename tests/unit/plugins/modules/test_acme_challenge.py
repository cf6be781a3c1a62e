# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input validation of acme_challenge (pure). Writing files is covered end to end
in tests/integration/test_acme_challenge.py against nginx in a container."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.modules.acme_challenge import validate_challenges

TOKEN = 'LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0'
TOKEN2 = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA'
THUMB = '9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI'


def ch(token=TOKEN, thumb=THUMB, **extra):
    item = {'token': token, 'key_authorization': '%s.%s' % (token, thumb)}
    item.update(extra)
    return item


def test_acme_order_output_is_accepted_extra_keys_ignored():
    items = [ch(name='a.example.com', path='/.well-known/acme-challenge/' + TOKEN, url='https://ca/chal/1',
                status='pending'),
             ch(TOKEN2, name='b.example.com')]
    assert validate_challenges(items, True) == [
        (TOKEN, '%s.%s' % (TOKEN, THUMB)), (TOKEN2, '%s.%s' % (TOKEN2, THUMB))]


def test_duplicates_are_collapsed():
    assert len(validate_challenges([ch(), ch()], True)) == 1


@pytest.mark.parametrize('token', ['../x' + 'a' * 20, 'a/b' + 'a' * 20, '.', '', TOKEN + '/', u'\u00e9' * 43, None])
def test_bad_token_names_the_item(token):
    items = [ch(), {'token': token, 'key_authorization': '%s.%s' % (token, THUMB)}]
    with pytest.raises(FleetcertError) as exc:
        validate_challenges(items, True)
    assert exc.value.msg.startswith('challenges[1].token: ')


@pytest.mark.parametrize('key_authorization, fragment', [
    (None, 'required'),
    ('', 'must start with'),
    (TOKEN + '.' + THUMB, 'must start with'),
    (TOKEN2 + THUMB, 'must start with'),
    (TOKEN2 + '.', 'thumbprint'),
    (TOKEN2 + '.' + THUMB[:-1], 'thumbprint'),
    (TOKEN2 + '.' + THUMB + 'A', 'thumbprint'),
    (TOKEN2 + '.' + THUMB[:-1] + '/', 'thumbprint'),
    (TOKEN2 + '.' + THUMB + '\n', 'thumbprint'),
    (TOKEN2 + '.' + THUMB[:-1] + '=', 'thumbprint'),
])
def test_bad_key_authorization_names_the_item(key_authorization, fragment):
    items = [ch(), {'token': TOKEN2, 'key_authorization': key_authorization}]
    with pytest.raises(FleetcertError) as exc:
        validate_challenges(items, True)
    assert exc.value.msg.startswith('challenges[1].key_authorization: ')
    assert fragment in exc.value.msg


def test_conflicting_key_authorizations_for_one_token():
    other = '%s.%s' % (TOKEN, 'A' * 43)
    with pytest.raises(FleetcertError, match=r'^challenges\[1\].token: .* appears twice'):
        validate_challenges([ch(), {'token': TOKEN, 'key_authorization': other}], True)


def test_removal_needs_only_the_token():
    assert validate_challenges([{'token': TOKEN}], False) == [(TOKEN, None)]
    with pytest.raises(FleetcertError, match=r'^challenges\[0\].key_authorization: '):
        validate_challenges([{'token': TOKEN, 'key_authorization': 'nonsense'}], False)


def test_item_must_be_a_dict():
    with pytest.raises(FleetcertError, match=r'^challenges\[0\]: must be a dictionary'):
        validate_challenges([TOKEN], True)
