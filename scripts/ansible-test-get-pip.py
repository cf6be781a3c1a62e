# Stand-in for ansible-test's get-pip.py bootstrap script, whose download host
# is not reachable from the test bed. ansible-test's own error message says to
# place the script in its cache by hand; setup.sh does that with this file.
# It bootstraps pip from the interpreter's bundled ensurepip wheel, then
# installs what ansible-test asked for from the package index.
import subprocess
import sys

subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
