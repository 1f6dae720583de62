#!/bin/bash
# `make deb`, then the package installed with `dpkg -i --root` into a scratch root whose dpkg database is a copy
# of this machine's (so that Depends is checked against real packages): the maintainer scripts create user nlpd
# there (DPKG_ROOT), the config is a conffile readable by group nlpd only, `nlpd check` on the installed config
# passes as user nlpd in /var/lib/nlpd (the unit's WorkingDirectory, where the packaged models are), the
# installed unit passes `systemd-analyze verify`, every file `make install` installs is in the package, the
# copyright file and LICENSE are there; then `dpkg --purge` removes it all. Needs root; nothing outside the
# scratch root is changed.
# usage: tests/integration/test_deb.sh   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
R=$(mktemp -d)
trap 'rm -rf "$R" "$R.inst"' EXIT
if [ "$(id -u)" != 0 ] || ! command -v dpkg-deb > /dev/null || ! command -v setpriv > /dev/null ||
    ! command -v systemd-sysusers > /dev/null || [ ! -f models/lid.176.ftz ]; then
    echo "skip: needs root, dpkg-deb, setpriv, systemd-sysusers and the models (make models)"
    finish
fi
chmod 0755 "$R" # the service user walks into it
if [ -f LICENSE ] && grep -q 'Apache License' LICENSE && grep -q 'Version 2.0' LICENSE; then ok "LICENSE: Apache-2.0"; else nok "LICENSE" "missing or not Apache-2.0"; fi

if out=$(timeout 600 make --no-print-directory deb 2>&1); then ok "make deb" "$(echo "$out" | tail -n 1)"; else nok "make deb" "$(echo "$out" | tail -n 3)"; finish; fi
ver=$(sed -n 's/^NLPD_VERSION ?= //p' Makefile)
deb=build/nlpd_${ver}_$(dpkg --print-architecture).deb
[ -f "$deb" ] || { nok "package file" "$deb missing"; finish; }
f() { dpkg-deb -f "$deb" "$1"; }
if [ "$(f Package)" = nlpd ] && [ "$(f Version)" = "$ver" ] && f Depends | grep -q librdkafka1 &&
    [ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/nlpd/nlpd.conf ]; then
    ok "control: nlpd $ver, Depends from the linked libraries, /etc/nlpd/nlpd.conf a conffile"
else
    nok "control" "$(dpkg-deb -I "$deb" | head -n 20)"
fi
# Every file `make install` installs (man pages too, when it installs them) is in the package.
make --no-print-directory -s install DESTDIR="$R.inst" PREFIX=/usr SYSCONFDIR=/etc > /dev/null 2>&1
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | sort > "$R.list"
missing=$(cd "$R.inst" && find . -type f | sed 's|^\.||' | sort | comm -23 - "$R.list")
rm -f "$R.list"
if [ -z "$missing" ]; then
    ok "the package holds every file make install installs ($(cd "$R.inst" && find . -type f | wc -l))"
else
    nok "files of make install missing from the package" "$(echo "$missing" | head -n 3 | tr '\n' ' ')"
fi
for p in /usr/bin/nlpd /usr/lib/systemd/system/nlpd.service /usr/lib/sysusers.d/nlpd.conf /etc/nlpd/nlpd.conf \
    /usr/share/nlpd/schemas/enriched.avsc /usr/share/doc/nlpd/copyright /var/lib/nlpd/models/lid.176.ftz \
    /var/lib/nlpd/models/amazon_review_polarity.ftz /var/lib/nlpd/models/lexicons/ldnoobw/en.json; do
    dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx ".$p" || missing="$missing $p"
done
if [ -z "$missing" ]; then ok "binary, unit, sysusers, config, schema, copyright and models are packaged"; else nok "package contents" "missing:$missing"; fi
if dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/nlpd/copyright | grep -q '^License: Apache-2.0$'; then
    ok "copyright file: nlpd under Apache-2.0, the models' licences"
else
    nok "copyright file" "no License: Apache-2.0"
fi

# dpkg -i --root: a dpkg database with this machine's packages, maintainer scripts run with DPKG_ROOT.
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates"
cp /var/lib/dpkg/status "$R/var/lib/dpkg/status"
: > "$R/var/lib/dpkg/available"
if out=$(timeout 120 dpkg --root="$R" --force-script-chrootless -i "$deb" 2>&1); then
    ok "dpkg --root -i (dependencies satisfied by this machine's packages)"
else
    nok "dpkg --root -i" "$(echo "$out" | tail -n 3)"
    finish
fi
uid=$(awk -F: '$1 == "nlpd" {print $3}' "$R/etc/passwd" 2> /dev/null)
gid=$(awk -F: '$1 == "nlpd" {print $3}' "$R/etc/group" 2> /dev/null)
if [ -n "$uid" ] && [ -n "$gid" ] && [ "$(stat -c '%g %a' "$R/etc/nlpd/nlpd.conf")" = "$gid 640" ] &&
    [ "$(stat -c '%u' "$R/var/lib/nlpd")" = "$uid" ]; then
    ok "postinst: user nlpd ($uid:$gid), config root:nlpd 0640, /var/lib/nlpd owned by nlpd"
else
    nok "postinst" "uid '$uid' gid '$gid', config $(stat -c '%u:%g %a' "$R/etc/nlpd/nlpd.conf")"
    finish
fi
as_user() { setpriv --reuid="$1" --regid="$2" --clear-groups -- "${@:3}"; }
if out=$(as_user "$uid" "$gid" sh -c "cd '$R/var/lib/nlpd' && timeout 60 '$R/usr/bin/nlpd' check -c '$R/etc/nlpd/nlpd.conf'" 2>&1); then
    ok "nlpd check on the installed config as user nlpd in /var/lib/nlpd: $out"
else
    nok "nlpd check as user nlpd" "$out"
fi
if ! as_user 65534 65534 cat "$R/etc/nlpd/nlpd.conf" > /dev/null 2>&1; then ok "other users cannot read the config"; else nok "config permissions" "readable by nobody"; fi
# systemd-analyze verify on the installed unit; the scratch root has no systemd of its own, so its paths point
# into the scratch root (the unit's own paths are checked to exist there first).
unit=$R/usr/lib/systemd/system/nlpd.service
if ! command -v systemd-analyze > /dev/null || ! systemd-analyze --version > /dev/null 2>&1; then
    echo "skipped: systemd-analyze verify: systemd-analyze is not usable here"
elif [ "$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$unit")" != /usr/bin/nlpd ] || [ ! -x "$R/usr/bin/nlpd" ]; then
    nok "installed unit" "ExecStart: $(grep '^ExecStart' "$unit")"
else
    sed "s|/usr/bin/nlpd|$R/usr/bin/nlpd|" "$unit" > "$R/nlpd.service"
    out=$(systemd-analyze verify "$R/nlpd.service" 2>&1)
    if [ -z "$out" ]; then ok "systemd-analyze verify on the installed unit prints nothing"; else nok "systemd-analyze verify" "$out"; fi
    rm -f "$R/nlpd.service"
fi
# purge: the package's files, its conffile and /var/lib/nlpd go.
if out=$(timeout 120 dpkg --root="$R" --force-script-chrootless --purge nlpd 2>&1) && [ ! -e "$R/usr/bin/nlpd" ] &&
    [ ! -e "$R/etc/nlpd/nlpd.conf" ] && [ ! -e "$R/var/lib/nlpd" ] && ! grep -q '^Package: nlpd$' "$R/var/lib/dpkg/status"; then
    ok "dpkg --purge removes the binary, the config and /var/lib/nlpd"
else
    nok "dpkg --purge" "$(echo "$out" | tail -n 2); left: $(ls "$R/usr/bin" "$R/etc/nlpd" "$R/var/lib/nlpd" 2> /dev/null | tr '\n' ' ')"
fi
finish
