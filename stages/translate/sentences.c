/* Sentence boundaries for translation (see sentences.h). */
#include "sentences.h"

#include <string.h>

int nlpd_sentence_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Abbreviations a full stop does not end a sentence after (compared case-insensitively, without the dot). */
static const char *const abbreviations[] = {
    "mr",     "mrs",  "ms",  "dr",  "prof", "st",   "sr",   "jr",  "vs",  "etc", "eg",  "ie",  "no",  "nr",   "fig",
    "approx", "dept", "inc", "ltd", "co",   "corp", "jan",  "feb", "mar", "apr", "jun", "jul", "aug", "sep",  "sept",
    "oct",    "nov",  "dec", "hr",  "fr",   "frau", "herr", "bzw", "ca",  "usw", "vgl", "sig", "sra", "dott", "av",
};

/* Whether the word ending right before s[dot] is an abbreviation, a single letter ("J. Smith", "e.g.") or an
 * ordinal number ("2. Mai"). */
static int abbreviation_before(const char *s, size_t dot)
{
    size_t a = dot;
    while (a > 0 && ((s[a - 1] >= 'a' && s[a - 1] <= 'z') || (s[a - 1] >= 'A' && s[a - 1] <= 'Z') || s[a - 1] == '.'))
        a--;
    size_t n = dot - a;
    if (n == 0) { /* a number: one or two digits are an ordinal ("am 2. Mai", "15. března") */
        size_t d = dot;
        while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9')
            d--;
        return dot - d >= 1 && dot - d <= 2 && (d == 0 || nlpd_sentence_space((unsigned char)s[d - 1]));
    }
    if (a > 0 && (unsigned char)s[a - 1] >= 0x80)
        return 0; /* the end of a word in another script: nothing known */
    if (n == 1 || memchr(s + a, '.', n))
        return 1; /* an initial, or dotted letters (e.g., z.B., U.S.) */
    char w[16];
    size_t k = 0;
    for (size_t i = a; i < dot && k + 1 < sizeof w; i++)
        if (s[i] != '.')
            w[k++] = (char)(s[i] | 0x20);
    w[k] = 0;
    if (n >= sizeof w)
        return 0;
    for (size_t i = 0; i < sizeof abbreviations / sizeof abbreviations[0]; i++)
        if (!strcmp(w, abbreviations[i]))
            return 1;
    return 0;
}

/* Length of a sentence end at s[i] (0 when none): . ! ? followed by space or the end (a full stop not after
 * an abbreviation or an initial, and not before a lowercase letter or a digit), or a CJK full stop / mark
 * (。！？, 3 bytes each) anywhere; a line break always ends one. */
size_t nlpd_sentence_end(const char *s, size_t len, size_t i)
{
    unsigned char c = (unsigned char)s[i];
    if (c == '\n')
        return 1;
    if ((c == '.' || c == '!' || c == '?') && (i + 1 == len || nlpd_sentence_space((unsigned char)s[i + 1]))) {
        if (c != '.' || i + 1 == len)
            return 1;
        size_t j = i + 1;
        while (j < len && nlpd_sentence_space((unsigned char)s[j]) && s[j] != '\n')
            j++;
        unsigned char next = j < len ? (unsigned char)s[j] : 0;
        if ((next >= 'a' && next <= 'z') || (next >= '0' && next <= '9') || abbreviation_before(s, i))
            return 0;
        return 1;
    }
    if (c == 0xE3 && i + 2 < len && (unsigned char)s[i + 1] == 0x80 && (unsigned char)s[i + 2] == 0x82)
        return 3; /* 。 */
    if (c == 0xEF && i + 2 < len && (unsigned char)s[i + 1] == 0xBC &&
        ((unsigned char)s[i + 2] == 0x81 || (unsigned char)s[i + 2] == 0x9F))
        return 3; /* ！ ？ */
    return 0;
}
