#!/bin/sh
# `make deb`: build/nlpd_VERSION_ARCH.deb with dpkg-deb from what `make install PREFIX=/usr` installs (binary,
# unit, sysusers entry, /etc/nlpd/nlpd.conf as a conffile, schema, docs, man pages when the install has them),
# the models `make models` fetched in /var/lib/nlpd/models (the unit's WorkingDirectory: the default config's
# relative model paths resolve there), the copyright file and the maintainer scripts of packaging/deb/.
# Depends: the Debian packages that hold the libraries build/nlpd names (objdump NEEDED, dpkg -S on ldd's paths).
# usage: scripts/make-deb.sh VERSION   (the Makefile builds build/nlpd and passes NLPD_VERSION)
set -eu
cd "$(dirname "$0")/.."
VERSION=${1:?usage: make-deb.sh VERSION}
ARCH=$(dpkg --print-architecture)
OUT=build/nlpd_${VERSION}_${ARCH}.deb
ROOT=build/deb/root
for f in models/lid.176.ftz models/amazon_review_polarity.ftz models/lexicons; do
    [ -e "$f" ] || { echo "make deb: $f is missing (make models)" >&2; exit 1; }
done
rm -rf build/deb
mkdir -p "$ROOT/DEBIAN"
make --no-print-directory -s install DESTDIR="$PWD/$ROOT" PREFIX=/usr SYSCONFDIR=/etc > build/deb/install.log
install -d -m 0755 "$ROOT/var/lib/nlpd/models"
cp -R models/. "$ROOT/var/lib/nlpd/models/"
find "$ROOT/var/lib/nlpd/models" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
install -D -m 0644 packaging/deb/copyright "$ROOT/usr/share/doc/nlpd/copyright"
for s in postinst postrm prerm; do install -m 0755 "packaging/deb/$s" "$ROOT/DEBIAN/$s"; done
echo /etc/nlpd/nlpd.conf > "$ROOT/DEBIAN/conffiles"

# the libraries nlpd itself names (NEEDED), found where ldd resolves them
ldd "$ROOT/usr/bin/nlpd" > build/deb/ldd.txt
deps=$(objdump -p "$ROOT/usr/bin/nlpd" | awk '$1 == "NEEDED" {print $2}' | while read -r so; do
    lib=$(awk -v so="$so" '$1 == so && $3 ~ /^\// {print $3}' build/deb/ldd.txt)
    [ -n "$lib" ] && { dpkg -S "$(realpath "$lib")" 2> /dev/null || dpkg -S "$lib" 2> /dev/null; }
done | cut -d: -f1 | sort -u | paste -sd, - | sed 's/,/, /g')
[ -n "$deps" ] || { echo "make deb: no package found for the libraries of build/nlpd" >&2; exit 1; }
cat > "$ROOT/DEBIAN/control" << CTL
Package: nlpd
Version: $VERSION
Architecture: $ARCH
Maintainer: nlpd developers <nlpd@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
Depends: $deps
Recommends: systemd
Section: net
Priority: optional
Description: stream-processing NLP daemon (Kafka in, enriched records out)
 nlpd reads records from Kafka, runs each record's text through a chain of NLP stages (language
 identification, translation, sentiment, named entities, content moderation) and produces enriched
 records, with dead letters for what it cannot process. Ships the fastText models and word lists the
 default configuration uses; edit /etc/nlpd/nlpd.conf, then systemctl enable --now nlpd.
CTL
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$OUT" > /dev/null
echo "make deb: $OUT ($(du -k "$OUT" | cut -f1) KiB)"
