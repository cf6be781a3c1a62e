# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError
from ansible_collections.fleetcert.meteor.plugins.module_utils.validation import (
    normalize_contacts,
    normalize_names,
    parse_host_port,
    validate_directory_url,
    validate_eab,
    validate_token,
)

TOKEN = 'LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0'


class TestNormalizeNames:
    def test_lowercases_strips_trailing_dot_and_dedupes_in_order(self):
        names = ['WWW.Example.COM.', 'example.com', 'www.example.com', ' example.com ']
        assert normalize_names(names) == ['www.example.com', 'example.com']

    def test_idn_is_encoded_to_a_labels(self):
        assert normalize_names(['Bücher.Example', 'xn--bcher-kva.example']) == ['xn--bcher-kva.example']

    def test_ideographic_full_stop_is_a_dot(self):
        assert normalize_names(['a.example\u3002com']) == ['a.example.com']

    def test_accepts_max_label_and_name_length(self):
        label = 'a' * 63
        name = '.'.join([label, label, label, 'b' * 61])
        assert len(name) == 253
        assert normalize_names([name]) == [name]

    @pytest.mark.parametrize('bad, fragment', [
        ('*.example.com', 'wildcard; HTTP-01 cannot validate wildcards'),
        ('www.*.example.com', 'wildcard'),
        ('192.0.2.1', 'IP address'),
        ('2001:db8::1', 'IP address'),
        ('[2001:db8::1]', 'IP address'),
        ('', 'must not be empty'),
        ('   ', 'must not be empty'),
        ('.', 'not a valid DNS name'),
        ('a..example.com', 'not a valid DNS name'),
        ('.example.com', 'not a valid DNS name'),
        ('example.com..', 'not a valid DNS name'),
        ('under_score.example.com', "label 'under_score'"),
        ('-lead.example.com', "label '-lead'"),
        ('trail-.example.com', "label 'trail-'"),
        ('sp ace.example.com', "label 'sp ace'"),
        ('a/b.example.com', "label 'a/b'"),
        ('new\n.example.com', "label 'new\\n'"),
        ('x' * 64 + '.example.com', 'longer than 63'),
        ('.'.join(['a' * 63] * 4), 'longer than 253'),
        ('xn--zz.example.com', 'not valid punycode'),
        ('1.2.3', 'last label is all digits'),
    ])
    def test_refuses_bad_names_naming_the_index(self, bad, fragment):
        with pytest.raises(FleetcertError) as exc:
            normalize_names(['ok.example.com', bad])
        assert exc.value.msg.startswith('names[1]: ')
        assert fragment in exc.value.msg

    def test_option_name_is_used_in_messages(self):
        with pytest.raises(FleetcertError, match=r'^certificate_names\[0\]: '):
            normalize_names(['*.example.com'], option='certificate_names')

    def test_refuses_non_string_entry(self):
        with pytest.raises(FleetcertError, match=r'^names\[0\]: must be a string, got int'):
            normalize_names([42])

    def test_refuses_empty_list(self):
        with pytest.raises(FleetcertError, match=r'^names: at least one DNS name is required'):
            normalize_names([])

    def test_refuses_a_bare_string(self):
        with pytest.raises(FleetcertError, match=r'^names: must be a list'):
            normalize_names('example.com')


class TestValidateToken:
    def test_accepts_a_real_token(self):
        assert validate_token(TOKEN) == TOKEN

    def test_accepts_all_base64url_characters(self):
        token = 'AZaz09_-' * 3
        assert validate_token(token) == token

    @pytest.mark.parametrize('bad', [
        '../x', 'a/b', '.', '..', '', TOKEN + '/', '/' + TOKEN, TOKEN + '.x', TOKEN + '=',
        TOKEN + ' ', TOKEN + '\n', TOKEN[:-1] + '\x00', 'é' * 43, '..\\' + TOKEN, TOKEN + '%2f',
    ])
    def test_refuses_anything_outside_base64url(self, bad):
        with pytest.raises(FleetcertError) as exc:
            validate_token(bad, option='challenges[3].token')
        assert exc.value.msg.startswith('challenges[3].token: ')

    def test_refuses_too_short_and_too_long(self):
        with pytest.raises(FleetcertError, match='22 to 255 characters, got 21'):
            validate_token('a' * 21)
        with pytest.raises(FleetcertError, match='got 256'):
            validate_token('a' * 256)
        assert validate_token('a' * 255) == 'a' * 255

    def test_refuses_non_string(self):
        with pytest.raises(FleetcertError, match=r'^token: must be a string'):
            validate_token(None)


class TestValidateDirectoryUrl:
    def test_accepts_https(self):
        url = 'https://localhost:14000/dir'
        assert validate_directory_url(url) == url

    def test_strips_surrounding_whitespace(self):
        assert validate_directory_url(' https://ca.example/dir\n') == 'https://ca.example/dir'

    def test_http_only_when_insecure_is_allowed(self):
        with pytest.raises(FleetcertError, match=r"^directory_url: 'http://ca.example/dir' must be an https:// URL"):
            validate_directory_url('http://ca.example/dir')
        assert validate_directory_url('http://ca.example/dir', allow_insecure=True) == 'http://ca.example/dir'

    @pytest.mark.parametrize('bad, fragment', [
        ('https:///dir', 'has no host'),
        ('ftp://ca.example/dir', 'must be an https:// URL'),
        ('ca.example/dir', 'must be an https:// URL'),
        ('https://ca.example:99999/dir', 'not a valid URL'),
        ('https://ca example/dir', 'whitespace'),
        ('', 'non-empty URL'),
        (None, 'non-empty URL'),
    ])
    def test_refuses_bad_urls(self, bad, fragment):
        with pytest.raises(FleetcertError) as exc:
            validate_directory_url(bad, option='acme_directory_url')
        assert exc.value.msg.startswith('acme_directory_url: ')
        assert fragment in exc.value.msg


class TestNormalizeContacts:
    def test_returns_mailto_uris_deduplicated(self):
        emails = ['ops@example.com', 'mailto:ops@example.com', 'MAILTO:Admin@Example.COM', 'x+y@bücher.example']
        assert normalize_contacts(emails) == [
            'mailto:ops@example.com', 'mailto:Admin@example.com', 'mailto:x+y@xn--bcher-kva.example']

    def test_none_and_empty_mean_no_contact(self):
        assert normalize_contacts(None) == []
        assert normalize_contacts([]) == []

    @pytest.mark.parametrize('bad, fragment', [
        ('garbage', 'not an e-mail address'),
        ('@example.com', 'not an e-mail address'),
        ('ops@', 'not an e-mail address'),
        ('a b@example.com', 'not an e-mail address'),
        ('a,b@example.com', 'not an e-mail address'),
        ('ops@localhost', 'the domain has no dot'),
        ('ops@192.0.2.1', 'IP address'),
        ('ops@exa_mple.com', 'not a valid DNS name'),
        ('mailto:', 'not an e-mail address'),
        ('ops\n@example.com', 'not an e-mail address'),
    ])
    def test_refuses_garbage(self, bad, fragment):
        with pytest.raises(FleetcertError) as exc:
            normalize_contacts(['ok@example.com', bad])
        assert exc.value.msg.startswith('contact[1]: ')
        assert fragment in exc.value.msg

    def test_refuses_a_bare_string(self):
        with pytest.raises(FleetcertError, match='^account_email: must be a list'):
            normalize_contacts('ops@example.com', option='account_email')


class TestValidateEab:
    KEY = 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W'

    def test_no_binding_is_allowed(self):
        assert validate_eab(None, None) == (None, None)

    def test_strips_and_accepts_padding(self):
        assert validate_eab(' kid-1 ', self.KEY[:42] + '==\n') == ('kid-1', self.KEY[:42] + '==')

    @pytest.mark.parametrize('kid', ['', '   ', 'kid 1', 42])
    def test_bad_kid_names_the_option(self, kid):
        with pytest.raises(FleetcertError, match=r'^eab_kid: must be the non-empty key identifier'):
            validate_eab(kid, self.KEY)

    @pytest.mark.parametrize('key', ['not base64 at all!', 'abc+def/', 'abcde', '', '=abc', None])
    def test_bad_mac_key_names_the_option_and_hides_the_value(self, key):
        with pytest.raises(FleetcertError) as info:
            validate_eab('kid-1', key)
        assert info.value.msg.startswith('eab_hmac_key: not a base64url-encoded key')
        if key:
            assert key not in info.value.msg


class TestParseHostPort:
    @pytest.mark.parametrize('value, expected', [
        ('127.0.0.1:443', ('127.0.0.1', 443)),
        (' localhost:8443 ', ('localhost', 8443)),
        ('[::1]:443', ('::1', 443)),
        ('node-1.example.test:1', ('node-1.example.test', 1)),
    ])
    def test_accepted(self, value, expected):
        assert parse_host_port(value, 'served_at') == expected

    @pytest.mark.parametrize('value, says', [
        ('', 'must be host:port'),
        (None, 'must be host:port'),
        ('127.0.0.1', 'is not host:port'),
        (':443', 'is not host:port'),
        ('127.0.0.1:', 'port must be a number from 1 to 65535'),
        ('127.0.0.1:0', 'port must be a number from 1 to 65535'),
        ('127.0.0.1:65536', 'port must be a number from 1 to 65535'),
        ('127.0.0.1:https', 'port must be a number from 1 to 65535'),
        ('::1:443', 'write an IPv6 address in brackets'),
        ('[not-v6]:443', 'is not an IPv6 address'),
        ('a b:443', 'is not host:port'),
        ('https://example.com:443', 'is not host:port'),
    ])
    def test_refused_naming_the_option(self, value, says):
        with pytest.raises(FleetcertError) as info:
            parse_host_port(value, 'served_at')
        assert info.value.msg.startswith('served_at: ')
        assert says in info.value.msg
