# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keys, CSRs and certificates, on ``cryptography``; JOSE helpers on ``josepy``.

josepy is imported only by the JOSE helpers: hosts that merely inspect or
deploy certificates (cert_info, cert_deploy) need nothing but cryptography.
Modules check ``HAS_CRYPTOGRAPHY`` and report ``CRYPTOGRAPHY_IMPORT_ERROR``
through ``missing_required_lib`` before calling anything here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import datetime
import ipaddress
import re
import traceback

from ansible.module_utils.six import binary_type, text_type

from ansible_collections.fleetcert.meteor.plugins.module_utils.errors import FleetcertError

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

KEY_TYPES = ('ec256', 'ec384', 'rsa2048', 'rsa3072', 'rsa4096')

_CURVES = {'ec256': 'secp256r1', 'ec384': 'secp384r1'}
_RSA_BITS = {'rsa2048': 2048, 'rsa3072': 3072, 'rsa4096': 4096}

_PEM_CERT_RE = re.compile(
    br'-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----', re.DOTALL)
_PEM_BEGIN_CERT = b'-----BEGIN CERTIFICATE-----'
# Any complete PEM block (certificate, key, ...): what follows the last one must
# be whitespace, else the data was cut (e.g. inside the next block's BEGIN line).
_PEM_ANY_BLOCK_RE = re.compile(
    br'-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----', re.DOTALL)

# A CN longer than this is invalid (RFC 5280 ub-common-name); the names still
# go into the SAN, which is what clients check.
_MAX_CN_LENGTH = 64


def _to_bytes(data, option):
    if isinstance(data, text_type):
        return data.encode('utf-8')
    if isinstance(data, (binary_type, bytearray)):
        return bytes(data)
    raise FleetcertError('%s: expected PEM text, got %s' % (option, type(data).__name__))


def b64url(data):
    """base64url without padding (RFC 7515 section 2), as text."""
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def generate_private_key(key_type, option='key_type'):
    """Return a new private key of one of ``KEY_TYPES``."""
    if key_type in _CURVES:
        curve = ec.SECP256R1() if key_type == 'ec256' else ec.SECP384R1()
        return ec.generate_private_key(curve)
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    raise FleetcertError('%s: %r is not one of %s' % (option, key_type, ', '.join(KEY_TYPES)))


def key_type_of(key):
    """Return the ``KEY_TYPES`` name of a private or public key, or raise."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        for key_type, curve_name in _CURVES.items():
            if key.curve.name == curve_name:
                return key_type
        raise FleetcertError(
            'unsupported EC curve %s; supported key types: %s' % (key.curve.name, ', '.join(KEY_TYPES)))
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        for key_type, bits in _RSA_BITS.items():
            if key.key_size == bits:
                return key_type
        raise FleetcertError(
            'unsupported RSA key size %d; supported key types: %s' % (key.key_size, ', '.join(KEY_TYPES)))
    raise FleetcertError(
        'unsupported key algorithm %s; supported key types: %s'
        % (type(key).__name__, ', '.join(KEY_TYPES)))


def load_private_key(pem, option='private_key'):
    """Load an unencrypted PEM private key of one of ``KEY_TYPES``."""
    data = _to_bytes(pem, option)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError when a password is needed.
        raise FleetcertError('%s: the private key is encrypted; provide an unencrypted key' % option)
    except UnsupportedAlgorithm:
        raise FleetcertError(
            '%s: unsupported private key algorithm; supported key types: %s'
            % (option, ', '.join(KEY_TYPES)))
    except ValueError:
        # The parser's message is not included: it may quote the input.
        raise FleetcertError('%s: not a readable PEM private key' % option)
    try:
        key_type_of(key)
    except FleetcertError as exc:
        raise FleetcertError('%s: %s' % (option, exc.msg))
    return key


def private_key_to_pem(key):
    """PKCS#8 PEM, unencrypted (the file holding it is written 0600)."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _general_name(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _subject_for(names):
    if names and len(names[0]) <= _MAX_CN_LENGTH:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    return x509.Name([])


def build_csr(key, names):
    """PEM CSR with every name in the SAN and the first as CN when it fits.

    ``names`` must already be normalized (validation.normalize_names).
    """
    if not names:
        raise FleetcertError('names: at least one DNS name is required')
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject_for(names))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def split_pem_chain(pem, option='certificate'):
    """Return every certificate of a PEM bundle, leaf first (file order).

    Other PEM blocks (a private key in a combined file) and text between blocks
    (openssl's ``subject=`` lines) are ignored; a truncated or corrupt
    certificate block is an error, so a half-written file is never trusted.
    Anything but whitespace after the last complete PEM block (a block cut
    inside its BEGIN line leaves e.g. ``-----BEG``) is a truncation too.
    """
    data = _to_bytes(pem, option)
    blocks = _PEM_CERT_RE.findall(data)
    begins = data.count(_PEM_BEGIN_CERT)
    if not blocks:
        if begins:
            raise FleetcertError('%s: the PEM certificate is truncated (no END CERTIFICATE line)' % option)
        raise FleetcertError('%s: no PEM certificate found' % option)
    if begins != len(blocks):
        raise FleetcertError(
            '%s: a PEM certificate is truncated (%d BEGIN CERTIFICATE lines, %d complete blocks)'
            % (option, begins, len(blocks)))
    last_end = max(match.end() for match in _PEM_ANY_BLOCK_RE.finditer(data))
    if data[last_end:].strip():
        # The leftover is not quoted: it may be the start of a private key.
        raise FleetcertError(
            '%s: the PEM data is truncated (%d bytes of incomplete or unexpected text after '
            'the last complete PEM block)' % (option, len(data[last_end:].strip())))
    certs = []
    for index, block in enumerate(blocks):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise FleetcertError(
                '%s: certificate #%d in the PEM data is corrupt (%s)' % (option, index + 1, exc))
    return certs


def load_certificate(pem, option='certificate'):
    """The first (leaf) certificate of PEM data."""
    return split_pem_chain(pem, option)[0]


def certificate_to_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def not_valid_before(cert):
    """notBefore as an aware UTC datetime.

    Debian 12 hosts run cryptography 38, which lacks the ``*_utc`` attributes
    (added in 42); the naive attributes are UTC by definition.
    """
    value = getattr(cert, 'not_valid_before_utc', None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def not_valid_after(cert):
    """notAfter as an aware UTC datetime (see not_valid_before)."""
    value = getattr(cert, 'not_valid_after_utc', None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def fingerprint_sha256(cert):
    """SHA-256 over the DER certificate, lowercase hex without colons."""
    return binascii.hexlify(cert.fingerprint(hashes.SHA256())).decode('ascii')


def _public_der(key):
    return key.public_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def key_matches_certificate(key, cert):
    """True when ``cert`` certifies the public half of ``key``."""
    return _public_der(key.public_key()) == _public_der(cert.public_key())


def certificate_names(cert):
    """SAN DNS names (lowercase, certificate order), then SAN IP addresses as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns + ips


def _int_to_twos_complement(value):
    """Minimal big-endian two's complement encoding, as DER encodes INTEGERs."""
    if value >= 0:
        length = value.bit_length() // 8 + 1
    else:
        length = (~value).bit_length() // 8 + 1
    return value.to_bytes(length, 'big', signed=True)


def serial_bytes(cert):
    """The DER content octets of the certificate's serial number."""
    return _int_to_twos_complement(cert.serial_number)


def ari_cert_id(cert):
    """RFC 9773 section 4.1 certificate identifier: base64url(AKI keyIdentifier).base64url(serial)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or aki.key_identifier is None:
        raise FleetcertError(
            'the certificate has no Authority Key Identifier, so it has no ARI certificate id')
    return '%s.%s' % (b64url(aki.key_identifier), b64url(serial_bytes(cert)))


def _josepy():
    import josepy  # pylint: disable=import-outside-toplevel
    return josepy


def jwk_for_key(key):
    """josepy JWK for a key (RSA or EC, private or public)."""
    jose = _josepy()
    key_type_of(key)
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return jose.JWKRSA(key=key)
    return jose.JWKEC(key=key)


def jwk_thumbprint(key):
    """RFC 7638 JWK thumbprint (SHA-256), base64url: the second half of a key authorization."""
    return b64url(jwk_for_key(key).thumbprint(hash_function=hashes.SHA256))


def jws_algorithm(key):
    """The JWS algorithm the key signs ACME requests with (RFC 7518 section 3.1)."""
    jose = _josepy()
    key_type = key_type_of(key)
    if key_type == 'ec256':
        return jose.ES256
    if key_type == 'ec384':
        return jose.ES384
    return jose.RS256


def make_self_signed(key, names, days):
    """A self-signed certificate for ``names``, valid ``days`` days from an hour ago.

    Serves as a placeholder so nginx can start with TLS before the first real
    certificate exists. The hour of backdating tolerates clock skew.
    """
    if not names:
        raise FleetcertError('names: at least one DNS name is required')
    now = datetime.datetime.now(datetime.timezone.utc)
    public_key = key.public_key()
    subject = _subject_for(names)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    )
    return builder.sign(key, hashes.SHA256())
