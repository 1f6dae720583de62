#!/bin/bash
# `make install` gives a service that can start: the README's "Operations" install steps, run in a scratch root
# ($D, via DESTDIR) exactly as written, with `systemd-sysusers --root` creating the nlpd user there and
# `nlpd check` run as that user (setpriv) in the unit's WorkingDirectory, as systemd would. Also: the installed
# unit points at the installed binary and config for any PREFIX, every model file (lexicons included) is copied,
# and other users cannot read the config. Needs root (chgrp, setpriv); nothing outside $D is changed.
# usage: tests/integration/test_install.sh   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
if [ "$(id -u)" != 0 ] || ! command -v setpriv > /dev/null || ! command -v systemd-sysusers > /dev/null ||
    [ ! -f models/lid.176.ftz ]; then
    echo "skip: needs root, setpriv, systemd-sysusers and the models (make models)"
    finish
fi
chmod 0755 "$D" # the service user walks into it

# The README's steps, without their comments, must be the ones emulated below, in this order.
readme=$(awk '/^## Operations/ {o = 1} o && /^```sh/ {c = 1; next} c && /^```/ {exit} c' README.md |
    sed -e 's/ *# .*//')
expected="make && sudo make install
sudo systemd-sysusers
sudo chgrp nlpd /etc/nlpd/nlpd.conf
sudo install -d -o nlpd -g nlpd /var/lib/nlpd/models && sudo cp -R models/. /var/lib/nlpd/models/
sudo runuser -u nlpd -- sh -c 'cd /var/lib/nlpd && /usr/local/bin/nlpd check -c /etc/nlpd/nlpd.conf'
sudo systemctl enable --now nlpd"
if [ "$(printf '%s\n' "$readme" | head -n 6)" = "$expected" ]; then
    ok "the README's install steps are the ones this test runs"
else
    nok "README install steps changed: update this test" "$(printf '%s\n' "$readme" | head -n 6 | tr '\n' '|')"
fi

# make && sudo make install
if make --no-print-directory install DESTDIR="$D" > "$D.make.log" 2>&1; then
    ok "make install DESTDIR=\$D"
else
    nok "make install" "$(tail -n 3 "$D.make.log")"
    rm -f "$D.make.log"
    finish
fi
rm -f "$D.make.log"
# sudo systemd-sysusers (reads the sysusers.d entry make install put in /usr/local/lib)
if systemd-sysusers --root="$D" > /dev/null 2>&1 && uid=$(awk -F: '$1 == "nlpd" {print $3}' "$D/etc/passwd") &&
    gid=$(awk -F: '$1 == "nlpd" {print $3}' "$D/etc/group") && [ -n "$uid" ] && [ -n "$gid" ] &&
    [ "$(awk -F: '$1 == "nlpd" {print $6}' "$D/etc/passwd")" = /var/lib/nlpd ]; then
    ok "systemd-sysusers creates user nlpd ($uid:$gid, home /var/lib/nlpd)"
else
    nok "systemd-sysusers" "no nlpd user in $D/etc/passwd"
    finish
fi
# sudo chgrp nlpd /etc/nlpd/nlpd.conf
chgrp "$gid" "$D/etc/nlpd/nlpd.conf"
# sudo install -d -o nlpd -g nlpd /var/lib/nlpd/models && sudo cp -R models/. /var/lib/nlpd/models/
install -d -o "$uid" -g "$gid" "$D/var/lib/nlpd/models" && cp -R models/. "$D/var/lib/nlpd/models/"
missing=$(cd models && find . -type f | while read -r f; do [ -f "$D/var/lib/nlpd/models/$f" ] || echo "$f"; done)
if [ -z "$missing" ]; then
    ok "every model file is in /var/lib/nlpd/models ($(find "$D/var/lib/nlpd/models" -type f | wc -l) files, lexicons too)"
else
    nok "models copied" "missing: $(echo "$missing" | head -n 3 | tr '\n' ' ')"
fi
# sudo runuser -u nlpd -- sh -c 'cd /var/lib/nlpd && /usr/local/bin/nlpd check -c /etc/nlpd/nlpd.conf'
as_user() { setpriv --reuid="$1" --regid="$2" --clear-groups -- "${@:3}"; }
if out=$(as_user "$uid" "$gid" sh -c "cd '$D/var/lib/nlpd' && '$D/usr/local/bin/nlpd' check -c '$D/etc/nlpd/nlpd.conf'" 2>&1); then
    ok "nlpd check on the installed config as user nlpd in /var/lib/nlpd: $out"
else
    nok "nlpd check as user nlpd" "$out"
fi
# The config may hold passwords: no one else reads it.
if ! as_user 65534 65534 cat "$D/etc/nlpd/nlpd.conf" > /dev/null 2>&1; then
    ok "other users cannot read /etc/nlpd/nlpd.conf ($(stat -c '%a' "$D/etc/nlpd/nlpd.conf"))"
else
    nok "config permissions" "readable by nobody: $(stat -c '%a %U:%G' "$D/etc/nlpd/nlpd.conf")"
fi
# sudo systemctl enable --now nlpd: what systemd will use must exist where the unit says.
unit=$D/usr/local/lib/systemd/system/nlpd.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
set -- $exec_start
if [ "$1" = /usr/local/bin/nlpd ] && [ -x "$D$1" ] && [ "$4" = /etc/nlpd/nlpd.conf ] && [ -f "$D$4" ] &&
    grep -q '^WorkingDirectory=/var/lib/nlpd$' "$unit" && grep -q '^User=nlpd$' "$unit"; then
    ok "the installed unit runs $exec_start as nlpd in /var/lib/nlpd"
else
    nok "installed unit" "ExecStart=$exec_start"
fi
# The schema path of the installed config is the installed schema, so that format "avro" works from any directory.
schema=$(sed -n 's/^ *schema = "\(.*\)";/\1/p' "$D/etc/nlpd/nlpd.conf" | head -n 1)
if [ "$schema" = /usr/local/share/nlpd/schemas/enriched.avsc ] && [ -f "$D$schema" ]; then
    ok "installed output.schema is the installed $schema"
else
    nok "installed output.schema" "'$schema'"
fi
# The man pages and the bash completion (issue 17): `man nlpd` / `man nlpd.conf` find them under PREFIX/share/man.
M=$D/usr/local/share/man
if [ -f "$M/man1/nlpd.1" ] && [ -f "$M/man5/nlpd.conf.5" ] &&
    [ -f "$D/usr/local/share/bash-completion/completions/nlpd" ] &&
    MANWIDTH=200 man -M "$M" 5 nlpd.conf 2> /dev/null | grep -q 'cache.redis_password_file' &&
    MANWIDTH=200 man -M "$M" 1 nlpd 2> /dev/null | grep -q 'nlpd tokenize --model DIR'; then
    ok "make install puts nlpd.1, nlpd.conf.5 (man finds them) and the bash completion under PREFIX/share"
else
    nok "man pages and completion" "$(ls -R "$D/usr/local/share" 2> /dev/null | head -n 20 | tr '\n' ' ')"
fi
# Another PREFIX: the unit and the config follow it; an existing config is kept.
echo "# edited" >> "$D/etc/nlpd/nlpd.conf"
if make --no-print-directory install DESTDIR="$D" PREFIX=/usr > /dev/null 2>&1 &&
    grep -q '^ExecStart=/usr/bin/nlpd run -c /etc/nlpd/nlpd.conf$' "$D/usr/lib/systemd/system/nlpd.service" &&
    [ -x "$D/usr/bin/nlpd" ] && [ -f "$D/usr/share/nlpd/schemas/enriched.avsc" ] &&
    tail -n 1 "$D/etc/nlpd/nlpd.conf" | grep -q '^# edited$'; then
    ok "make install PREFIX=/usr: ExecStart=/usr/bin/nlpd, the existing config kept"
else
    nok "make install PREFIX=/usr" "$(grep '^ExecStart' "$D/usr/lib/systemd/system/nlpd.service" 2> /dev/null)"
fi
finish
