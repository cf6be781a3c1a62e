# -*- coding: utf-8 -*-
# Copyright: fleetcert maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Makes `ansible_collections.fleetcert.meteor` importable for every test.

scripts/setup.sh links the checkout at .cache/collections/ansible_collections/
fleetcert/meteor; the venv's bundled collections share the namespace package.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, '.cache', 'collections')

if not os.path.isdir(os.path.join(COLLECTIONS, 'ansible_collections', 'fleetcert', 'meteor')):
    raise RuntimeError('%s/ansible_collections/fleetcert/meteor is missing: run `make setup`' % COLLECTIONS)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
