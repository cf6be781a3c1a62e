# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import hashlib
import json

import josepy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.fleetcert.meteor.plugins.module_utils import crypto
from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError

UTC = datetime.timezone.utc


@pytest.fixture(scope='module')
def ec_key():
    return crypto.generate_private_key('ec256')


@pytest.fixture(scope='module')
def rsa_key():
    return crypto.generate_private_key('rsa2048')


def _issue(key, serial=1234, aki=None, names=('a.example.com',), issuer_key=None):
    issuer_key = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'Test CA')]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime.datetime(2026, 4, 1, tzinfo=UTC))
    )
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class TestKeys:
    @pytest.mark.parametrize('key_type', ['ec256', 'ec384', 'rsa2048'])
    def test_generate_roundtrip_and_type(self, key_type):
        key = crypto.generate_private_key(key_type)
        assert crypto.key_type_of(key) == key_type
        pem = crypto.private_key_to_pem(key)
        assert pem.startswith(b'-----BEGIN PRIVATE KEY-----\n')
        loaded = crypto.load_private_key(pem, 'private_key')
        assert crypto.private_key_to_pem(loaded) == pem
        assert crypto.load_private_key(pem.decode('ascii'), 'private_key').key_size == key.key_size

    def test_generate_rsa_sizes(self):
        assert crypto.key_type_of(crypto.generate_private_key('rsa3072')) == 'rsa3072'
        assert crypto.KEY_TYPES == ('ec256', 'ec384', 'rsa2048', 'rsa3072', 'rsa4096')

    def test_generate_refuses_unknown_type(self):
        with pytest.raises(FleetcertError, match=r"^key_type: 'ec521' is not one of ec256, ec384"):
            crypto.generate_private_key('ec521')

    def test_loads_traditional_openssl_format(self, ec_key):
        pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption())
        assert pem.startswith(b'-----BEGIN EC PRIVATE KEY-----')
        assert crypto.key_matches_certificate(crypto.load_private_key(pem, 'k'), _issue(ec_key))

    def test_refuses_encrypted_key(self, ec_key):
        pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b'secret'))
        with pytest.raises(FleetcertError, match=r'^account_key_content: the private key is encrypted'):
            crypto.load_private_key(pem, 'account_key_content')

    @pytest.mark.parametrize('data', [b'', b'garbage', b'-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'])
    def test_refuses_unreadable_key_without_echoing_it(self, data):
        with pytest.raises(FleetcertError) as exc:
            crypto.load_private_key(data, 'private_key_content')
        assert exc.value.msg == 'private_key_content: not a readable PEM private key'

    def test_refuses_a_certificate_as_key(self, ec_key):
        with pytest.raises(FleetcertError, match='^private_key_path: not a readable PEM private key'):
            crypto.load_private_key(crypto.certificate_to_pem(_issue(ec_key)), 'private_key_path')

    def test_refuses_unsupported_algorithms(self):
        ed = ed25519.Ed25519PrivateKey.generate()
        pem = ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
        with pytest.raises(FleetcertError, match=r'^private_key: unsupported key algorithm'):
            crypto.load_private_key(pem, 'private_key')
        p521 = ec.generate_private_key(ec.SECP521R1())
        pem = p521.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        with pytest.raises(FleetcertError, match=r'^private_key: unsupported EC curve secp521r1'):
            crypto.load_private_key(pem, 'private_key')

    def test_refuses_small_rsa(self):
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        with pytest.raises(FleetcertError, match='unsupported RSA key size 1024'):
            crypto.key_type_of(small)

    def test_refuses_non_text_input(self):
        with pytest.raises(FleetcertError, match='^private_key: expected PEM text, got int'):
            crypto.load_private_key(5, 'private_key')


class TestCsr:
    def test_csr_has_all_names_in_san_and_first_as_cn(self, ec_key):
        names = ['www.example.com', 'example.com']
        csr = x509.load_pem_x509_csr(crypto.build_csr(ec_key, names))
        assert csr.is_signature_valid
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == names
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == 'www.example.com'
        assert csr.public_key().public_numbers() == ec_key.public_key().public_numbers()

    def test_csr_omits_cn_when_first_name_is_too_long(self, rsa_key):
        long_name = '.'.join(['a' * 30, 'b' * 30, 'example.com'])
        assert len(long_name) > 64
        csr = x509.load_pem_x509_csr(crypto.build_csr(rsa_key, [long_name]))
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
        assert csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [long_name]

    def test_csr_needs_names(self, ec_key):
        with pytest.raises(FleetcertError, match='^names: at least one'):
            crypto.build_csr(ec_key, [])


class TestChain:
    def test_split_keeps_order_and_ignores_text_and_keys(self, ec_key, rsa_key):
        leaf = _issue(ec_key, serial=1)
        inter = _issue(rsa_key, serial=2)
        pem = (b'subject=CN = leaf\n' + crypto.certificate_to_pem(leaf) + b'\n'
               + crypto.private_key_to_pem(ec_key) + crypto.certificate_to_pem(inter))
        certs = crypto.split_pem_chain(pem)
        assert [c.serial_number for c in certs] == [1, 2]
        assert crypto.load_certificate(pem.decode('ascii'), 'path').serial_number == 1

    def test_split_accepts_crlf(self, ec_key):
        pem = crypto.certificate_to_pem(_issue(ec_key)).replace(b'\n', b'\r\n')
        assert len(crypto.split_pem_chain(pem)) == 1

    def test_refuses_truncated_last_certificate(self, ec_key):
        pem = crypto.certificate_to_pem(_issue(ec_key, serial=1))
        truncated = pem + pem[:len(pem) // 2]
        with pytest.raises(FleetcertError, match=r'^fullchain: a PEM certificate is truncated \(2 BEGIN'):
            crypto.split_pem_chain(truncated, 'fullchain')

    @pytest.mark.parametrize('cut', [3, 8, 11, 20, 26])
    def test_refuses_chain_cut_inside_the_next_begin_line(self, ec_key, rsa_key, cut):
        leaf = crypto.certificate_to_pem(_issue(ec_key, serial=1))
        inter = crypto.certificate_to_pem(_issue(rsa_key, serial=2))
        truncated = leaf + inter[:cut]
        assert b'-----BEGIN CERTIFICATE-----' not in truncated[len(leaf):]
        with pytest.raises(FleetcertError, match=r'^fullchain: the PEM data is truncated'):
            crypto.split_pem_chain(truncated, 'fullchain')

    def test_refuses_garbage_after_the_last_block(self, ec_key):
        pem = crypto.certificate_to_pem(_issue(ec_key))
        with pytest.raises(FleetcertError, match=r'^certificate: the PEM data is truncated') as exc:
            crypto.split_pem_chain(pem + b'MIIBsecret')
        assert b'MIIBsecret'.decode() not in str(exc.value)

    def test_refuses_truncated_key_after_the_chain(self, ec_key):
        pem = crypto.certificate_to_pem(_issue(ec_key))
        key = crypto.private_key_to_pem(ec_key)
        with pytest.raises(FleetcertError, match=r'^certificate: the PEM data is truncated'):
            crypto.split_pem_chain(pem + key[:len(key) // 2])

    def test_accepts_trailing_whitespace_and_a_complete_key(self, ec_key):
        pem = crypto.certificate_to_pem(_issue(ec_key))
        key = crypto.private_key_to_pem(ec_key)
        assert len(crypto.split_pem_chain(pem + b'\n\r\n \t\n')) == 1
        assert len(crypto.split_pem_chain(pem + key + b'\n')) == 1

    def test_refuses_a_single_truncated_certificate(self, ec_key):
        pem = crypto.certificate_to_pem(_issue(ec_key))
        with pytest.raises(FleetcertError, match='no END CERTIFICATE line'):
            crypto.split_pem_chain(pem[:-30])

    def test_refuses_corrupt_body(self, ec_key):
        lines = crypto.certificate_to_pem(_issue(ec_key)).split(b'\n')
        lines[3] = b'A' * len(lines[3])
        with pytest.raises(FleetcertError, match=r'^certificate: certificate #1 in the PEM data is corrupt'):
            crypto.split_pem_chain(b'\n'.join(lines))

    @pytest.mark.parametrize('data', [b'', b'hello', b'-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n'])
    def test_refuses_data_without_certificate(self, data):
        with pytest.raises(FleetcertError, match='^content: no PEM certificate found'):
            crypto.load_certificate(data, 'content')


class TestCertificateFacts:
    def test_key_matches_certificate(self, ec_key, rsa_key):
        cert = _issue(ec_key, issuer_key=rsa_key)
        assert crypto.key_matches_certificate(ec_key, cert) is True
        assert crypto.key_matches_certificate(crypto.generate_private_key('ec256'), cert) is False
        assert crypto.key_matches_certificate(rsa_key, cert) is False

    def test_certificate_names_dns_then_ip(self, ec_key):
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'ca')]))
            .public_key(ec_key.public_key())
            .serial_number(7)
            .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime.datetime(2026, 2, 1, tzinfo=UTC))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(__import__('ipaddress').ip_address('192.0.2.7')),
                x509.DNSName('B.example.com'),
                x509.DNSName('a.example.com'),
            ]), critical=False)
            .sign(ec_key, hashes.SHA256())
        )
        assert crypto.certificate_names(cert) == ['b.example.com', 'a.example.com', '192.0.2.7']

    def test_validity_is_aware_utc(self, ec_key):
        cert = _issue(ec_key)
        assert crypto.not_valid_before(cert) == datetime.datetime(2026, 1, 1, tzinfo=UTC)
        assert crypto.not_valid_after(cert) == datetime.datetime(2026, 4, 1, tzinfo=UTC)

    def test_fingerprint_is_sha256_of_der(self, ec_key):
        cert = _issue(ec_key)
        der = cert.public_bytes(serialization.Encoding.DER)
        assert crypto.fingerprint_sha256(cert) == hashlib.sha256(der).hexdigest()

    def test_certificate_without_san_has_no_names(self, ec_key):
        assert crypto.certificate_names(_issue(ec_key)) == []


class TestAriCertId:
    def test_rfc9773_example(self, ec_key):
        # RFC 9773 section 4.1: AKI keyIdentifier 69:88:5B:...:D4 and serial
        # 0x87654321 (DER 00:87:65:43:21, the leading zero keeps it positive).
        aki = bytes.fromhex('69885B6B87464041E1B37B847BA0AE2CDE01C8D4')
        cert = _issue(ec_key, serial=0x87654321, aki=aki)
        assert crypto.ari_cert_id(cert) == 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE'

    @pytest.mark.parametrize('serial, der_hex', [
        (1, '01'), (0x7f, '7f'), (0x80, '0080'), (0xff, '00ff'), (0x100, '0100'),
        (0x7fff, '7fff'), (0x8000, '008000'), (2 ** 159 - 1, '7f' + 'ff' * 19),
    ])
    def test_serial_is_minimal_twos_complement(self, serial, der_hex, ec_key):
        cert = _issue(ec_key, serial=serial, aki=b'\x01\x02')
        assert crypto.serial_bytes(cert).hex() == der_hex
        encoded = base64.urlsafe_b64encode(bytes.fromhex(der_hex)).rstrip(b'=').decode()
        assert crypto.ari_cert_id(cert) == 'AQI.' + encoded

    def test_needs_authority_key_identifier(self, ec_key):
        with pytest.raises(FleetcertError, match='no Authority Key Identifier'):
            crypto.ari_cert_id(_issue(ec_key))


class TestJose:
    def test_thumbprint_matches_rfc7638_computed_by_hand_for_ec(self, ec_key):
        numbers = ec_key.public_key().public_numbers()

        def b64(n):
            return base64.urlsafe_b64encode(n.to_bytes(32, 'big')).rstrip(b'=').decode()

        canonical = json.dumps({'crv': 'P-256', 'kty': 'EC', 'x': b64(numbers.x), 'y': b64(numbers.y)},
                               separators=(',', ':'), sort_keys=True)
        expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b'=').decode()
        assert crypto.jwk_thumbprint(ec_key) == expected
        assert len(expected) == 43

    def test_thumbprint_rfc7638_example_key(self):
        # RFC 7638 section 3.1: this RSA key has thumbprint NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
        n = int.from_bytes(base64.urlsafe_b64decode(
            '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs'
            'tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n'
            '91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw'
            + '==='), 'big')
        public_key = rsa.RSAPublicNumbers(65537, n).public_key()
        assert crypto.jwk_thumbprint(public_key) == 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs'

    def test_jwk_and_algorithm_per_key_type(self, ec_key, rsa_key):
        assert crypto.jws_algorithm(ec_key) is josepy.ES256
        assert crypto.jws_algorithm(crypto.generate_private_key('ec384')) is josepy.ES384
        assert crypto.jws_algorithm(rsa_key) is josepy.RS256
        assert isinstance(crypto.jwk_for_key(ec_key), josepy.JWKEC)
        assert isinstance(crypto.jwk_for_key(rsa_key), josepy.JWKRSA)

    def test_jws_signed_with_the_algorithm_verifies(self, ec_key):
        jwk = crypto.jwk_for_key(ec_key)
        jws = josepy.JWS.sign(b'payload', key=jwk, alg=crypto.jws_algorithm(ec_key))
        assert jws.verify(jwk.public_key())


class TestSelfSigned:
    def test_placeholder_certificate(self, ec_key):
        before = datetime.datetime.now(UTC)
        cert = crypto.make_self_signed(ec_key, ['www.example.com', 'example.com'], days=7)
        assert crypto.certificate_names(cert) == ['www.example.com', 'example.com']
        assert crypto.key_matches_certificate(ec_key, cert)
        assert cert.issuer == cert.subject
        assert crypto.not_valid_before(cert) <= before - datetime.timedelta(minutes=59)
        lifetime = crypto.not_valid_after(cert) - before
        assert datetime.timedelta(days=6, hours=23) < lifetime <= datetime.timedelta(days=7, seconds=5)
        cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                 ec.ECDSA(cert.signature_hash_algorithm))
        assert crypto.ari_cert_id(cert).count('.') == 1
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
