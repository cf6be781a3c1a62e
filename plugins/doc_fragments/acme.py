# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Options of plugins/module_utils/acme_client.py:acme_argument_spec()
    DOCUMENTATION = r'''
options:
  directory_url:
    description:
      - URL of the CA's ACME directory (RFC 8555 section 7.1.1).
      - For example V(https://acme-v02.api.letsencrypt.org/directory) (Let's Encrypt
        production) or V(https://acme-staging-v02.api.letsencrypt.org/directory)
        (staging, for trying things out without hitting production rate limits).
      - Must be an C(https) URL unless O(allow_insecure_directory=true).
    type: str
    required: true
  allow_insecure_directory:
    description:
      - Accept an C(http) O(directory_url). Only for test CAs on a trusted network.
    type: bool
    default: false
  account_key_content:
    description:
      - PEM private key of the ACME account, for example from Ansible Vault or an AWX
        credential. Never logged.
      - EC P-256, P-384 or RSA (2048 bits or more).
      - Mutually exclusive with O(account_key_path).
    type: str
  account_key_path:
    description:
      - Path of a PEM file (on the machine running the module) holding the private key
        of the ACME account.
      - Mutually exclusive with O(account_key_content).
    type: path
  account_uri:
    description:
      - URL of the ACME account (the RV(fleetcert.meteor.acme_account#module:account_uri)
        of M(fleetcert.meteor.acme_account)).
      - When given, requests are signed with it directly; otherwise the account is
        looked up by its key first, which costs one request.
    type: str
  ca_bundle:
    description:
      - PEM file of CA certificates to verify the TLS certificate of the ACME server.
      - When unset, the default trust store of the Python C(requests) library is used
        (including E(REQUESTS_CA_BUNDLE) if set in the environment).
    type: path
  request_timeout:
    description:
      - Seconds to wait for each HTTP response from the ACME server.
      - Connection failures are retried a few times with backoff; C(badNonce) errors
        are retried up to 10 times; HTTP 429 and 503 are retried after the server's
        C(Retry-After) as long as the total wait stays within 60 seconds.
    type: int
    default: 30
requirements:
  - acme >= 3.0 (certbot's ACME library)
  - josepy >= 2.0
  - cryptography >= 42
  - requests
notes:
  - "The module talks to the ACME server from the machine it runs on; run it on the
    controller (C(delegate_to: localhost), C(run_once: true)) so one order serves the
    whole fleet and rate limits are not multiplied by the number of servers."
'''
