#!/usr/bin/env bash
# Initialise a SoftHSM2 token holding one demo seal key + certificate (for tests and demos).
#
#   scripts/softhsm-init.sh WORKDIR KEY.p12 PASSFILE [TOKEN_LABEL] [USER_PIN]
#
# Creates WORKDIR/softhsm2.conf (tokens under WORKDIR/tokens, nothing touches the system
# token directory), a token TOKEN_LABEL (default eoffice-seal), and imports the PKCS#12's
# private key and certificate under the object label "seal" with CKA_ID 01.
# Prints the SOFTHSM2_CONF and module path to export. Needs: softhsm2, opensc (pkcs11-tool),
# openssl. The SO PIN is random and discarded: a test token needs no re-initialisation.
set -euo pipefail

WORK=${1:?workdir}; P12=${2:?key.p12}; PASSFILE=${3:?passphrase file}
LABEL=${4:-eoffice-seal}; PIN=${5:-123456}
MODULE=${SOFTHSM2_MODULE:-}
if [ -z "$MODULE" ]; then
  for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
                   /usr/local/lib/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so; do
    if [ -f "$candidate" ]; then MODULE=$candidate; break; fi
  done
fi
[ -n "$MODULE" ] || { echo "libsofthsm2.so not found (apt-get install softhsm2)" >&2; exit 1; }

mkdir -p "$WORK/tokens"
chmod 700 "$WORK"
cat > "$WORK/softhsm2.conf" <<CONF
directories.tokendir = $WORK/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$WORK/softhsm2.conf"

SO_PIN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
softhsm2-util --init-token --free --label "$LABEL" --pin "$PIN" --so-pin "$SO_PIN" >/dev/null

# The unencrypted key only ever exists inside WORKDIR (mode 700) and is removed at once.
umask 077
openssl pkcs12 -in "$P12" -passin "file:$PASSFILE" -nocerts -nodes 2>/dev/null \
  | openssl pkey -out "$WORK/key.pem"
openssl pkcs12 -in "$P12" -passin "file:$PASSFILE" -clcerts -nokeys 2>/dev/null \
  | openssl x509 -outform DER -out "$WORK/cert.der"
trap 'rm -f "$WORK/key.pem"' EXIT
softhsm2-util --import "$WORK/key.pem" --token "$LABEL" --label seal --id 01 --pin "$PIN" >/dev/null
pkcs11-tool --module "$MODULE" --token-label "$LABEL" --login --pin "$PIN" \
  --write-object "$WORK/cert.der" --type cert --label seal --id 01 >/dev/null

echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
echo "PKCS11_MODULE=$MODULE"
echo "TOKEN_LABEL=$LABEL"
