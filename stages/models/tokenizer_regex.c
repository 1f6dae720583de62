/* The mini regex of the tokenizers' Replace normaliser and Split pre-tokeniser (tokenizer_internal.h says what
 * it accepts): a pattern compiles to a small program that a backtracking VM runs over code points, with bounded
 * program size and steps so that a hostile tokenizer.json cannot make it run away. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_internal.h"

static int cat(int32_t cp)
{
    return (int)utf8proc_category(cp);
}

enum { RX_CHAR, RX_ANY, RX_CLASS, RX_SPLIT, RX_JMP, RX_MATCH, RX_BOL, RX_EOL, RX_LOOK };
enum { CL_RANGE, CL_SPACE, CL_DIGIT, CL_WORD, CL_CAT }; /* class items */

struct rx_item {
    int kind, neg;
    int32_t lo, hi; /* range, or category bitmask in lo for CL_CAT */
};

struct rx_inst {
    int op;
    int32_t c;         /* RX_CHAR */
    int x, y;          /* SPLIT prefers x; JMP x; LOOK: sub program at x, continue at y */
    int neg;           /* RX_CLASS / RX_LOOK */
    int item0, nitems; /* RX_CLASS items */
};

struct trx {
    struct rx_inst *prog;
    size_t n, cap;
    struct rx_item *items;
    size_t nitems, items_cap;
    int oom; /* an allocation failed while compiling: the error is that, whatever the parser says */
};

#define RX_MAX_PROG  20000
#define RX_MAX_STEPS 2000000

struct rx_parser {
    const char *p, *end;
    struct trx *rx;
    struct nlpd_error *err; /* the first failure only */
    int depth;
};

static int rx_emit(struct trx *rx, int op)
{
    if (rx->n >= RX_MAX_PROG)
        return -1;
    if (rx->n == rx->cap) {
        size_t cap = rx->cap ? rx->cap * 2 : 32;
        struct rx_inst *p = realloc(rx->prog, cap * sizeof *p);
        if (!p) {
            rx->oom = 1;
            return -1;
        }
        rx->prog = p;
        rx->cap = cap;
    }
    memset(&rx->prog[rx->n], 0, sizeof rx->prog[0]);
    rx->prog[rx->n].op = op;
    return (int)rx->n++;
}

static int rx_item_add(struct trx *rx, struct rx_item it)
{
    if (rx->nitems == rx->items_cap) {
        size_t cap = rx->items_cap ? rx->items_cap * 2 : 16;
        struct rx_item *p = realloc(rx->items, cap * sizeof *p);
        if (!p) {
            rx->oom = 1;
            return -1;
        }
        rx->items = p;
        rx->items_cap = cap;
    }
    rx->items[rx->nitems++] = it;
    return 0;
}

static int32_t rx_next_cp(struct rx_parser *ps)
{
    int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)ps->p, ps->end - ps->p, &cp);
    if (k <= 0)
        return -1;
    ps->p += k;
    return cp;
}

static int rx_fail(struct rx_parser *ps, const char *what)
{
    if (!ps->err->code)
        nlpd_error_set(ps->err, NLPD_EFORMAT, 0, "%s", what);
    return -1;
}

static int rx_too_large(struct rx_parser *ps)
{
    if (!ps->err->code)
        nlpd_error_set(ps->err, NLPD_ERANGE, 0, "regex too large (over %d instructions)", RX_MAX_PROG);
    return -1;
}

/* Category masks: bit per utf8proc category. */
static int32_t rx_cat_mask(const char *name, size_t len)
{
    static const struct {
        const char *n;
        int32_t mask;
    } cats[] = {
        {"L", (1 << UTF8PROC_CATEGORY_LU) | (1 << UTF8PROC_CATEGORY_LL) | (1 << UTF8PROC_CATEGORY_LT) |
                  (1 << UTF8PROC_CATEGORY_LM) | (1 << UTF8PROC_CATEGORY_LO)},
        {"Lu", 1 << UTF8PROC_CATEGORY_LU},
        {"Ll", 1 << UTF8PROC_CATEGORY_LL},
        {"Lt", 1 << UTF8PROC_CATEGORY_LT},
        {"Lm", 1 << UTF8PROC_CATEGORY_LM},
        {"Lo", 1 << UTF8PROC_CATEGORY_LO},
        {"M", (1 << UTF8PROC_CATEGORY_MN) | (1 << UTF8PROC_CATEGORY_MC) | (1 << UTF8PROC_CATEGORY_ME)},
        {"Mn", 1 << UTF8PROC_CATEGORY_MN},
        {"Mc", 1 << UTF8PROC_CATEGORY_MC},
        {"Me", 1 << UTF8PROC_CATEGORY_ME},
        {"N", (1 << UTF8PROC_CATEGORY_ND) | (1 << UTF8PROC_CATEGORY_NL) | (1 << UTF8PROC_CATEGORY_NO)},
        {"Nd", 1 << UTF8PROC_CATEGORY_ND},
        {"Nl", 1 << UTF8PROC_CATEGORY_NL},
        {"No", 1 << UTF8PROC_CATEGORY_NO},
        {"P", (1 << UTF8PROC_CATEGORY_PC) | (1 << UTF8PROC_CATEGORY_PD) | (1 << UTF8PROC_CATEGORY_PS) |
                  (1 << UTF8PROC_CATEGORY_PE) | (1 << UTF8PROC_CATEGORY_PI) | (1 << UTF8PROC_CATEGORY_PF) |
                  (1 << UTF8PROC_CATEGORY_PO)},
        {"S", (1 << UTF8PROC_CATEGORY_SM) | (1 << UTF8PROC_CATEGORY_SC) | (1 << UTF8PROC_CATEGORY_SK) |
                  (1 << UTF8PROC_CATEGORY_SO)},
        {"Z", (1 << UTF8PROC_CATEGORY_ZS) | (1 << UTF8PROC_CATEGORY_ZL) | (1 << UTF8PROC_CATEGORY_ZP)},
        {"C", (1 << UTF8PROC_CATEGORY_CC) | (1 << UTF8PROC_CATEGORY_CF) | (1 << UTF8PROC_CATEGORY_CS) |
                  (1 << UTF8PROC_CATEGORY_CO) | (1 << UTF8PROC_CATEGORY_CN)},
    };
    for (size_t i = 0; i < sizeof cats / sizeof cats[0]; i++)
        if (strlen(cats[i].n) == len && memcmp(cats[i].n, name, len) == 0)
            return cats[i].mask;
    return 0;
}

/* Parses an escape after '\' into a class item (returns 1) or a literal (returns 0 with *lit). */
static int rx_escape(struct rx_parser *ps, struct rx_item *it, int32_t *lit)
{
    if (ps->p >= ps->end)
        return rx_fail(ps, "trailing backslash");
    char c = *ps->p++;
    memset(it, 0, sizeof *it);
    switch (c) {
    case 's':
    case 'S':
        it->kind = CL_SPACE;
        it->neg = c == 'S';
        return 1;
    case 'd':
    case 'D':
        it->kind = CL_DIGIT;
        it->neg = c == 'D';
        return 1;
    case 'w':
    case 'W':
        it->kind = CL_WORD;
        it->neg = c == 'W';
        return 1;
    case 'p':
    case 'P': {
        it->kind = CL_CAT;
        it->neg = c == 'P';
        const char *name = ps->p;
        size_t len = 1;
        if (ps->p < ps->end && *ps->p == '{') {
            const char *close = memchr(ps->p, '}', (size_t)(ps->end - ps->p));
            if (!close)
                return rx_fail(ps, "unterminated \\p{");
            name = ps->p + 1;
            len = (size_t)(close - name);
            ps->p = close + 1;
        } else if (ps->p < ps->end) {
            ps->p++;
        } else {
            return rx_fail(ps, "bad \\p");
        }
        it->lo = rx_cat_mask(name, len);
        if (!it->lo)
            return rx_fail(ps, "unsupported \\p category");
        return 1;
    }
    case 'n': *lit = '\n'; return 0;
    case 't': *lit = '\t'; return 0;
    case 'r': *lit = '\r'; return 0;
    case 'f': *lit = '\f'; return 0;
    case 'v': *lit = '\v'; return 0;
    case '0': *lit = 0; return 0;
    case 'x': {
        int32_t v = 0;
        int k = 0;
        if (ps->p < ps->end && *ps->p == '{') {
            ps->p++;
            while (ps->p < ps->end && *ps->p != '}' && k < 6) {
                char h = *ps->p++;
                int d = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
                if (d < 0)
                    return rx_fail(ps, "bad \\x{}");
                v = v * 16 + d;
                k++;
            }
            if (ps->p >= ps->end || *ps->p != '}' || !k)
                return rx_fail(ps, "bad \\x{}");
            ps->p++;
        } else {
            for (k = 0; k < 2; k++) {
                if (ps->p >= ps->end)
                    return rx_fail(ps, "bad \\x");
                char h = *ps->p++;
                int d = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
                if (d < 0)
                    return rx_fail(ps, "bad \\x");
                v = v * 16 + d;
            }
        }
        if (v > 0x10ffff)
            return rx_fail(ps, "bad \\x");
        *lit = v;
        return 0;
    }
    default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            return rx_fail(ps, "unsupported regex escape");
        ps->p--;
        *lit = rx_next_cp(ps);
        return *lit < 0 ? rx_fail(ps, "bad UTF-8 in regex") : 0;
    }
}

static int rx_class(struct rx_parser *ps)
{
    int neg = 0;
    if (ps->p < ps->end && *ps->p == '^') {
        neg = 1;
        ps->p++;
    }
    int first = (int)ps->rx->nitems, count = 0;
    int start = 1;
    for (;;) {
        if (ps->p >= ps->end)
            return rx_fail(ps, "unterminated [");
        if (*ps->p == ']' && !start) {
            ps->p++;
            break;
        }
        start = 0;
        if (*ps->p == '[')
            return rx_fail(ps, "nested classes unsupported");
        struct rx_item it = {0};
        int32_t lo;
        if (*ps->p == '\\') {
            ps->p++;
            int r = rx_escape(ps, &it, &lo);
            if (r < 0)
                return -1;
            if (r == 1) {
                if (rx_item_add(ps->rx, it) < 0)
                    return -1;
                count++;
                continue;
            }
        } else {
            lo = rx_next_cp(ps);
            if (lo < 0)
                return rx_fail(ps, "bad UTF-8 in regex");
        }
        int32_t hi = lo;
        if (ps->end - ps->p >= 2 && *ps->p == '-' && ps->p[1] != ']') {
            ps->p++;
            if (*ps->p == '\\') {
                ps->p++;
                if (rx_escape(ps, &it, &hi) != 0)
                    return rx_fail(ps, "bad class range");
            } else {
                hi = rx_next_cp(ps);
            }
            if (hi < lo)
                return rx_fail(ps, "bad class range");
        }
        it.kind = CL_RANGE;
        it.lo = lo;
        it.hi = hi;
        if (rx_item_add(ps->rx, it) < 0)
            return -1;
        count++;
    }
    int pc = rx_emit(ps->rx, RX_CLASS);
    if (pc < 0)
        return -1;
    ps->rx->prog[pc].neg = neg;
    ps->rx->prog[pc].item0 = first;
    ps->rx->prog[pc].nitems = count;
    return 0;
}

static int rx_alt(struct rx_parser *ps);

/* Copies program range [a, b) to the end, relocating jumps. */
static int rx_copy(struct trx *rx, int a, int b)
{
    int delta = (int)rx->n - a;
    for (int i = a; i < b; i++) {
        int pc = rx_emit(rx, 0);
        if (pc < 0)
            return -1;
        rx->prog[pc] = rx->prog[i];
        int op = rx->prog[pc].op;
        if (op == RX_SPLIT || op == RX_JMP || op == RX_LOOK) {
            rx->prog[pc].x += delta;
            rx->prog[pc].y += delta;
        }
    }
    return 0;
}

/* Inserts an instruction at position at, shifting [at, n) and relocating jumps. */
static int rx_insert(struct trx *rx, int at, int op)
{
    if (rx_emit(rx, 0) < 0)
        return -1;
    memmove(&rx->prog[at + 1], &rx->prog[at], (rx->n - 1 - (size_t)at) * sizeof rx->prog[0]);
    /* Moved instructions (the wrapped atom) follow their targets from `at` on; earlier ones keep pointing at the
     * construct's start, which is now the inserted instruction. */
    for (size_t i = 0; i < rx->n; i++) {
        int o = rx->prog[i].op;
        if ((o == RX_SPLIT || o == RX_JMP || o == RX_LOOK) && i != (size_t)at) {
            int lim = i > (size_t)at ? at : at + 1;
            if (rx->prog[i].x >= lim)
                rx->prog[i].x++;
            if (rx->prog[i].y >= lim)
                rx->prog[i].y++;
        }
    }
    memset(&rx->prog[at], 0, sizeof rx->prog[0]);
    rx->prog[at].op = op;
    return 0;
}

/* Wraps [a, n) as (atom)? or (atom)* greedy or lazy. */
static int rx_opt(struct trx *rx, int a, int greedy)
{
    if (rx_insert(rx, a, RX_SPLIT) < 0)
        return -1;
    int end = (int)rx->n;
    rx->prog[a].x = greedy ? a + 1 : end;
    rx->prog[a].y = greedy ? end : a + 1;
    return 0;
}

static int rx_star(struct trx *rx, int a, int greedy)
{
    if (rx_insert(rx, a, RX_SPLIT) < 0)
        return -1;
    int j = rx_emit(rx, RX_JMP);
    if (j < 0)
        return -1;
    rx->prog[j].x = a;
    int end = (int)rx->n;
    rx->prog[a].x = greedy ? a + 1 : end;
    rx->prog[a].y = greedy ? end : a + 1;
    return 0;
}

static int rx_quant(struct rx_parser *ps, int a)
{
    if (ps->p >= ps->end)
        return 0;
    char q = *ps->p;
    long lo, hi;
    if (q == '*') {
        lo = 0;
        hi = -1;
        ps->p++;
    } else if (q == '+') {
        lo = 1;
        hi = -1;
        ps->p++;
    } else if (q == '?') {
        lo = 0;
        hi = 1;
        ps->p++;
    } else if (q == '{') {
        const char *s = ps->p + 1;
        char *e;
        if (s >= ps->end || *s < '0' || *s > '9')
            return 0; /* a literal '{' */
        lo = strtol(s, &e, 10);
        hi = lo;
        if (e < ps->end && *e == ',') {
            e++;
            if (e < ps->end && *e >= '0' && *e <= '9')
                hi = strtol(e, &e, 10);
            else
                hi = -1;
        }
        if (e >= ps->end || *e != '}' || lo > 1000 || hi > 1000 || hi == 0 || (hi >= 0 && hi < lo))
            return rx_fail(ps, "bad or too large {n,m}");
        ps->p = e + 1;
    } else {
        return 0;
    }
    int greedy = 1;
    if (ps->p < ps->end && *ps->p == '?') {
        greedy = 0;
        ps->p++;
    } else if (ps->p < ps->end && *ps->p == '+') {
        return rx_fail(ps, "possessive quantifiers unsupported");
    }
    struct trx *rx = ps->rx;
    int b = (int)rx->n;
    if (lo == 0 && hi == 1)
        return rx_opt(rx, a, greedy);
    if (lo == 0 && hi == -1)
        return rx_star(rx, a, greedy);
    /* atom{lo,hi}: lo copies (the first is in place), then optional copies or a star. */
    for (long i = 1; i < lo; i++)
        if (rx_copy(rx, a, b) < 0)
            return rx_too_large(ps);
    if (hi == -1) {
        int s = (int)rx->n;
        if (rx_copy(rx, a, b) < 0 || rx_star(rx, s, greedy) < 0)
            return rx_too_large(ps);
    } else {
        for (long i = lo > 1 ? lo : 1; i < hi; i++) {
            int s = (int)rx->n;
            if (rx_copy(rx, a, b) < 0 || rx_opt(rx, s, greedy) < 0)
                return rx_too_large(ps);
        }
    }
    if (lo == 0) /* {0,m}: the in-place copy becomes optional too */
        return rx_opt(rx, a, greedy);
    return 0;
}

static int rx_seq(struct rx_parser *ps)
{
    while (ps->p < ps->end && *ps->p != '|' && *ps->p != ')') {
        int a = (int)ps->rx->n;
        char c = *ps->p;
        if (c == '(') {
            ps->p++;
            int look = 0;
            if (ps->end - ps->p >= 2 && ps->p[0] == '?') {
                if (ps->p[1] == ':')
                    look = 0;
                else if (ps->p[1] == '=')
                    look = 1;
                else if (ps->p[1] == '!')
                    look = 2;
                else
                    return rx_fail(ps, "unsupported group syntax");
                ps->p += 2;
            }
            if (++ps->depth > 50)
                return rx_fail(ps, "regex nesting too deep");
            int lk = -1;
            if (look) {
                lk = rx_emit(ps->rx, RX_LOOK);
                if (lk < 0)
                    return -1;
                ps->rx->prog[lk].neg = look == 2;
                ps->rx->prog[lk].x = lk + 1;
            }
            if (rx_alt(ps) < 0)
                return -1;
            ps->depth--;
            if (ps->p >= ps->end || *ps->p != ')')
                return rx_fail(ps, "unbalanced (");
            ps->p++;
            if (look) {
                if (rx_emit(ps->rx, RX_MATCH) < 0)
                    return -1;
                ps->rx->prog[lk].y = (int)ps->rx->n;
                continue; /* no quantifier on lookarounds */
            }
        } else if (c == '[') {
            ps->p++;
            if (rx_class(ps) < 0)
                return -1;
        } else if (c == '.') {
            ps->p++;
            if (rx_emit(ps->rx, RX_ANY) < 0)
                return -1;
        } else if (c == '^' || c == '$') {
            ps->p++;
            if (rx_emit(ps->rx, c == '^' ? RX_BOL : RX_EOL) < 0)
                return -1;
            continue;
        } else if (c == '*' || c == '+' || c == '?') {
            return rx_fail(ps, "quantifier without operand");
        } else {
            int32_t lit;
            struct rx_item it;
            if (c == '\\') {
                ps->p++;
                int r = rx_escape(ps, &it, &lit);
                if (r < 0)
                    return -1;
                if (r == 1) {
                    if (rx_item_add(ps->rx, it) < 0)
                        return -1;
                    int pc = rx_emit(ps->rx, RX_CLASS);
                    if (pc < 0)
                        return -1;
                    ps->rx->prog[pc].item0 = (int)ps->rx->nitems - 1;
                    ps->rx->prog[pc].nitems = 1;
                    goto quant;
                }
            } else {
                lit = rx_next_cp(ps);
                if (lit < 0)
                    return rx_fail(ps, "bad UTF-8 in regex");
            }
            int pc = rx_emit(ps->rx, RX_CHAR);
            if (pc < 0)
                return -1;
            ps->rx->prog[pc].c = lit;
        }
    quant:
        if (rx_quant(ps, a) < 0)
            return -1;
    }
    return 0;
}

static int rx_alt(struct rx_parser *ps)
{
    int a = (int)ps->rx->n;
    if (rx_seq(ps) < 0)
        return -1;
    while (ps->p < ps->end && *ps->p == '|') {
        ps->p++;
        /* a: SPLIT a+1, L2 ; <first> ; JMP end ; L2: <rest> */
        if (rx_insert(ps->rx, a, RX_SPLIT) < 0)
            return -1;
        int j = rx_emit(ps->rx, RX_JMP);
        if (j < 0)
            return -1;
        int l2 = (int)ps->rx->n;
        if (rx_seq(ps) < 0)
            return -1;
        ps->rx->prog[a].x = a + 1;
        ps->rx->prog[a].y = l2;
        ps->rx->prog[j].x = (int)ps->rx->n;
        /* Further alternatives nest inside the second branch. */
        a = l2;
    }
    return 0;
}

struct trx *nlpd_trx_compile(const char *pat, size_t len, struct nlpd_error *err)
{
    struct trx *rx = calloc(1, sizeof *rx);
    if (!rx) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    struct nlpd_error e = {0};
    struct rx_parser ps = {pat, pat + len, rx, &e, 0};
    if (rx_alt(&ps) < 0 || ps.p != ps.end || rx_emit(rx, RX_MATCH) < 0) {
        if (rx->oom)
            nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        else if (e.code)
            nlpd_error_set(err, e.code, 0, "%s", e.message);
        else if (ps.p != ps.end)
            nlpd_error_set(err, NLPD_EFORMAT, 0, "unbalanced )");
        else
            nlpd_error_set(err, NLPD_ERANGE, 0, "regex too large (over %d instructions)", RX_MAX_PROG);
        nlpd_trx_free(rx);
        return NULL;
    }
    return rx;
}

void nlpd_trx_free(struct trx *rx)
{
    if (!rx)
        return;
    free(rx->prog);
    free(rx->items);
    free(rx);
}

static int rx_word(int32_t cp)
{
    int c = cat(cp);
    return nlpd_tok_is_letter(cp) || c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC ||
           c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL ||
           c == UTF8PROC_CATEGORY_PC;
}

static int rx_class_match(const struct trx *rx, const struct rx_inst *in, int32_t cp)
{
    int hit = 0;
    for (int i = 0; i < in->nitems && !hit; i++) {
        const struct rx_item *it = &rx->items[in->item0 + i];
        int r;
        switch (it->kind) {
        case CL_RANGE: r = cp >= it->lo && cp <= it->hi; break;
        case CL_SPACE: r = nlpd_tok_is_whitespace(cp); break;
        case CL_DIGIT: r = cat(cp) == UTF8PROC_CATEGORY_ND; break;
        case CL_WORD: r = rx_word(cp); break;
        default: r = (it->lo >> cat(cp)) & 1; break;
        }
        hit = it->neg ? !r : r;
    }
    return in->neg ? !hit : hit;
}

struct rx_frame {
    int pc;
    size_t sp;
};

/* Runs the program from pc at sp; returns 1 with *end on a match. Explicit backtrack stack (no recursion but
 * for lookarounds, whose depth is bounded by the pattern). *steps bounds pathological patterns. */
static int rx_run(const struct trx *rx, int pc0, const struct tchar *s, size_t n, size_t sp0, size_t *end, long *steps)
{
    struct rx_frame stack_local[64];
    struct rx_frame *st = stack_local;
    size_t top = 0, cap = 64;
    int pc = pc0;
    size_t sp = sp0;
    int result = 0;
    for (;;) {
        if (--*steps < 0)
            break;
        const struct rx_inst *in = &rx->prog[pc];
        int ok = 1;
        switch (in->op) {
        case RX_CHAR:
            ok = sp < n && s[sp].cp == in->c;
            sp++, pc++;
            break;
        case RX_ANY:
            ok = sp < n && s[sp].cp != '\n';
            sp++, pc++;
            break;
        case RX_CLASS:
            ok = sp < n && rx_class_match(rx, in, s[sp].cp);
            sp++, pc++;
            break;
        case RX_BOL:
            ok = sp == 0;
            pc++;
            break;
        case RX_EOL:
            ok = sp == n;
            pc++;
            break;
        case RX_JMP: pc = in->x; break;
        case RX_SPLIT:
            if (top == cap) {
                size_t ncap = cap * 2;
                struct rx_frame *ns = malloc(ncap * sizeof *ns);
                if (!ns) {
                    *steps = -1;
                    goto done;
                }
                memcpy(ns, st, top * sizeof *st);
                if (st != stack_local)
                    free(st);
                st = ns;
                cap = ncap;
            }
            st[top].pc = in->y;
            st[top].sp = sp;
            top++;
            pc = in->x;
            break;
        case RX_LOOK: {
            size_t e;
            int r = rx_run(rx, in->x, s, n, sp, &e, steps);
            ok = in->neg ? !r : r;
            pc = in->y;
            break;
        }
        case RX_MATCH:
            *end = sp;
            result = 1;
            goto done;
        }
        if (!ok) {
            if (top == 0)
                break;
            top--;
            pc = st[top].pc;
            sp = st[top].sp;
        }
    }
done:
    if (st != stack_local)
        free(st);
    return result && *steps >= 0;
}

int nlpd_trx_find(const struct trx *rx, const struct tchar *s, size_t n, size_t from, size_t *ms, size_t *me)
{
    long steps = RX_MAX_STEPS;
    for (size_t i = from; i <= n; i++) {
        size_t e;
        if (rx_run(rx, 0, s, n, i, &e, &steps)) {
            *ms = i;
            *me = e;
            return 1;
        }
        if (steps < 0)
            return 0;
    }
    return 0;
}
