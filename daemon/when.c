/* `when` condition parser and evaluator (see when.h). Conditions are parsed once at start. */
#include "when.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum field { F_LANG_CODE, F_LANG_SCORE, F_SENT_LABEL, F_SENT_SCORE, F_MOD_FLAGGED };
enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOT_IN };

#define MAX_TERMS 16
#define MAX_VALUES 32
#define VALUE_MAX 64

struct term {
    enum field field;
    enum op op;
    double number;
    size_t nvalues;
    char values[MAX_VALUES][VALUE_MAX];
};

struct nlpd_when {
    size_t nterms;
    struct term terms[MAX_TERMS];
};

static const struct {
    const char *name;
    enum field field;
    int numeric;
} fields[] = {
    {"lang.code", F_LANG_CODE, 0},
    {"lang.score", F_LANG_SCORE, 1},
    {"sentiment.label", F_SENT_LABEL, 0},
    {"sentiment.score", F_SENT_SCORE, 1},
    {"moderation.flagged", F_MOD_FLAGGED, 1},
};

static void skip_ws(const char **p)
{
    while (isspace((unsigned char)**p))
        (*p)++;
}

static int parse_string(const char **p, char *out)
{
    char q = **p;
    if (q != '\'' && q != '"')
        return -1;
    const char *s = ++(*p);
    while (**p && **p != q)
        (*p)++;
    if (**p != q || (size_t)(*p - s) >= VALUE_MAX)
        return -1;
    memcpy(out, s, (size_t)(*p - s));
    out[*p - s] = '\0';
    (*p)++;
    return 0;
}

#define WHY(...) (snprintf(why, why_len, __VA_ARGS__), (void)0)

struct nlpd_when *nlpd_when_parse(const char *text, char *why, size_t why_len)
{
    struct nlpd_when *w = calloc(1, sizeof *w);
    if (!w) {
        WHY("out of memory");
        return NULL;
    }
    const char *p = text;
    for (;;) {
        if (w->nterms == MAX_TERMS) {
            WHY("more than %d comparisons", MAX_TERMS);
            goto bad;
        }
        struct term *t = &w->terms[w->nterms++];
        skip_ws(&p);
        size_t flen = strspn(p, "abcdefghijklmnopqrstuvwxyz_.");
        int numeric = -1;
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
            if (strlen(fields[i].name) == flen && strncmp(fields[i].name, p, flen) == 0) {
                t->field = fields[i].field;
                numeric = fields[i].numeric;
            }
        if (numeric < 0) {
            WHY("unknown field at \"%.20s\" (known: lang.code, lang.score, sentiment.label, sentiment.score, "
                "moderation.flagged)", p);
            goto bad;
        }
        p += flen;
        skip_ws(&p);
        if (strncmp(p, "==", 2) == 0) t->op = OP_EQ, p += 2;
        else if (strncmp(p, "!=", 2) == 0) t->op = OP_NE, p += 2;
        else if (strncmp(p, "<=", 2) == 0) t->op = OP_LE, p += 2;
        else if (strncmp(p, ">=", 2) == 0) t->op = OP_GE, p += 2;
        else if (*p == '<') t->op = OP_LT, p++;
        else if (*p == '>') t->op = OP_GT, p++;
        else if (strncmp(p, "not in", 6) == 0) t->op = OP_NOT_IN, p += 6;
        else if (strncmp(p, "in", 2) == 0) t->op = OP_IN, p += 2;
        else {
            WHY("expected ==, !=, <, <=, >, >=, in or not in at \"%.20s\"", p);
            goto bad;
        }
        skip_ws(&p);
        if (numeric) {
            if (t->op == OP_IN || t->op == OP_NOT_IN) {
                WHY("'in' needs a text field, not a score");
                goto bad;
            }
            char *end;
            if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0) {
                t->number = *p == 't';
                end = (char *)p + (*p == 't' ? 4 : 5);
            } else {
                t->number = strtod(p, &end);
            }
            if (end == p) {
                WHY("expected a number at \"%.20s\"", p);
                goto bad;
            }
            p = end;
        } else if (t->op == OP_IN || t->op == OP_NOT_IN) {
            if (*p++ != '[') {
                WHY("expected [ after 'in'");
                goto bad;
            }
            for (;;) {
                skip_ws(&p);
                if (t->nvalues == MAX_VALUES || parse_string(&p, t->values[t->nvalues]) < 0) {
                    WHY("expected a quoted value (at most %d, %d bytes each) at \"%.20s\"", MAX_VALUES,
                        VALUE_MAX - 1, p);
                    goto bad;
                }
                t->nvalues++;
                skip_ws(&p);
                if (*p == ',') {
                    p++;
                    continue;
                }
                if (*p++ != ']') {
                    WHY("expected , or ] in the list");
                    goto bad;
                }
                break;
            }
        } else {
            if (t->op != OP_EQ && t->op != OP_NE) {
                WHY("text fields compare with ==, !=, in or not in");
                goto bad;
            }
            if (parse_string(&p, t->values[0]) < 0) {
                WHY("expected a quoted value at \"%.20s\"", p);
                goto bad;
            }
            t->nvalues = 1;
        }
        skip_ws(&p);
        if (!*p)
            return w;
        if (strncmp(p, "&&", 2) != 0) {
            WHY("expected && or the end at \"%.20s\"", p);
            goto bad;
        }
        p += 2;
    }
bad:
    free(w);
    return NULL;
}

static int eval_term(const struct term *t, const struct nlpd_record *r)
{
    const char *s = NULL;
    double x = 0;
    switch (t->field) {
    case F_LANG_CODE:
        if (!r->lang.set)
            return 0;
        s = r->lang.code;
        break;
    case F_SENT_LABEL:
        if (!r->sentiment.set)
            return 0;
        s = r->sentiment.label;
        break;
    case F_LANG_SCORE:
        if (!r->lang.set)
            return 0;
        x = r->lang.score;
        break;
    case F_SENT_SCORE:
        if (!r->sentiment.set)
            return 0;
        x = r->sentiment.score;
        break;
    case F_MOD_FLAGGED:
        if (!r->moderation.set)
            return 0;
        x = r->moderation.flagged;
        break;
    }
    if (s) {
        int found = 0;
        for (size_t i = 0; i < t->nvalues && !found; i++)
            found = strcmp(s, t->values[i]) == 0;
        return (t->op == OP_EQ || t->op == OP_IN) ? found : !found;
    }
    switch (t->op) {
    case OP_EQ: return x == t->number;
    case OP_NE: return x != t->number;
    case OP_LT: return x < t->number;
    case OP_LE: return x <= t->number;
    case OP_GT: return x > t->number;
    case OP_GE: return x >= t->number;
    default: return 0;
    }
}

int nlpd_when_eval(const struct nlpd_when *w, const struct nlpd_record *rec)
{
    for (size_t i = 0; i < w->nterms; i++)
        if (!eval_term(&w->terms[i], rec))
            return 0;
    return 1;
}

void nlpd_when_free(struct nlpd_when *w)
{
    free(w);
}
