/* `when` condition parser and evaluator (see when.h). A condition is parsed once into a small tree; evaluating it
 * reads the record's fields through the result table and allocates nothing. Grammar:
 *   or := and (("or" | "||") and)*      and := unary (("and" | "&&") unary)*
 *   unary := ("not" | "!") unary | "(" or ")" | comparison
 *   comparison := FIELD [op value | ["not"] "in" list] | STRING "in" FIELD
 *   list := "(" value, ... ")" | "[" value, ... "]" */
#include "when.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "results.h"

enum op { OP_TRUTH, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOT_IN };
enum kind { N_CMP, N_AND, N_OR, N_NOT };

#define MAX_NODES  128
#define MAX_VALUES 64
#define VALUE_MAX  64
#define MAX_DEPTH  32

struct node {
    enum kind kind;
    int a, b; /* children (N_AND, N_OR: both; N_NOT: a) */
    /* N_CMP */
    const struct nlpd_result_field *field;
    char arg[VALUE_MAX]; /* an argument field's argument (moderation.categories.<arg>) */
    enum op op;
    double number;
    size_t nvalues;
    char (*values)[VALUE_MAX];
};

struct nlpd_when {
    int root;
    size_t n;
    struct node nodes[MAX_NODES];
};

static int topic_get(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->s = r->topic;
    return r->topic && i == 0;
}

/* Fields that are not results. */
static const struct nlpd_result_field builtin_fields[] = {
    {"source.topic", NLPD_FIELD_STRING, 0, topic_get, "the input topic (Kafka)"},
};

struct parser {
    const char *text, *p;
    struct nlpd_when *w;
    char *why;
    size_t why_len;
    int failed, depth;
};

__attribute__((format(printf, 2, 3))) static int fail(struct parser *ps, const char *fmt, ...)
{
    if (!ps->failed) {
        char msg[1300];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(ps->why, ps->why_len, "%s (column %d)", msg, (int)(ps->p - ps->text) + 1);
    }
    ps->failed = 1;
    return -1;
}

static void skip_ws(struct parser *ps)
{
    while (isspace((unsigned char)*ps->p))
        ps->p++;
}

static int is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-' || c == '/';
}

/* Consumes keyword kw when it is a whole word (or, for symbols, the symbol) at the cursor. */
static int accept(struct parser *ps, const char *kw)
{
    skip_ws(ps);
    size_t n = strlen(kw);
    if (strncmp(ps->p, kw, n) != 0)
        return 0;
    if (isalpha((unsigned char)kw[0]) && is_word_char(ps->p[n]))
        return 0;
    ps->p += n;
    return 1;
}

static int new_node(struct parser *ps, enum kind kind)
{
    if (ps->w->n == MAX_NODES)
        return fail(ps, "%s", "too long: more than 128 terms");
    struct node *nd = &ps->w->nodes[ps->w->n];
    memset(nd, 0, sizeof *nd);
    nd->kind = kind;
    return (int)ps->w->n++;
}

static int parse_string(struct parser *ps, char *out)
{
    skip_ws(ps);
    char q = *ps->p;
    if (q != '\'' && q != '"')
        return -1;
    const char *s = ps->p + 1, *e = strchr(s, q);
    if (!e || (size_t)(e - s) >= VALUE_MAX)
        return -1;
    memcpy(out, s, (size_t)(e - s));
    out[e - s] = '\0';
    ps->p = e + 1;
    return 0;
}

/* A field name at the cursor: the field, its argument copied into arg. */
static const struct nlpd_result_field *parse_field(struct parser *ps, char *arg)
{
    skip_ws(ps);
    size_t len = 0;
    while (is_word_char(ps->p[len]))
        len++;
    const struct nlpd_result_field *f = NULL;
    size_t arg_at = len;
    for (size_t i = 0; i < sizeof builtin_fields / sizeof builtin_fields[0]; i++)
        if (strlen(builtin_fields[i].name) == len && strncmp(ps->p, builtin_fields[i].name, len) == 0)
            f = &builtin_fields[i];
    if (!f)
        f = nlpd_result_field_find(ps->p, len, &arg_at);
    if (!f) {
        fail(ps, "unknown field \"%.*s\" (known: source.topic, %s)", (int)(len ? len : 1), ps->p,
             nlpd_result_field_names());
        return NULL;
    }
    if (len - arg_at >= VALUE_MAX) {
        fail(ps, "%s", "field argument too long");
        return NULL;
    }
    memcpy(arg, ps->p + arg_at, len - arg_at);
    arg[len - arg_at] = '\0';
    ps->p += len;
    return f;
}

static int parse_list(struct parser *ps, struct node *nd)
{
    skip_ws(ps);
    char close = *ps->p == '(' ? ')' : *ps->p == '[' ? ']' : 0;
    if (!close)
        return fail(ps, "%s", "expected ( or [ after 'in'");
    ps->p++;
    if (!(nd->values = calloc(MAX_VALUES, sizeof *nd->values)))
        return fail(ps, "%s", "out of memory");
    for (;;) {
        if (nd->nvalues == MAX_VALUES || parse_string(ps, nd->values[nd->nvalues]) < 0)
            return fail(ps, "expected a quoted value (at most %d, %d bytes each)", MAX_VALUES, VALUE_MAX - 1);
        nd->nvalues++;
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p != close)
            return fail(ps, "expected , or %s in the list", close == ')' ? ")" : "]");
        ps->p++;
        return 0;
    }
}

static int parse_or(struct parser *ps);

static int parse_comparison(struct parser *ps)
{
    int id = new_node(ps, N_CMP);
    if (id < 0)
        return -1;
    struct node *nd = &ps->w->nodes[id];
    skip_ws(ps);
    if (*ps->p == '\'' || *ps->p == '"') { /* 'PER' in entities.groups */
        nd->values = calloc(1, sizeof *nd->values);
        if (!nd->values || parse_string(ps, nd->values[0]) < 0)
            return fail(ps, "%s", "expected a quoted value");
        nd->nvalues = 1;
        int neg = accept(ps, "not");
        if (!accept(ps, "in"))
            return fail(ps, "%s", "expected 'in' after a value");
        if (!(nd->field = parse_field(ps, nd->arg)))
            return -1;
        if (nd->field->type != NLPD_FIELD_STRING)
            return fail(ps, "%s", "'in' needs a text field");
        nd->op = neg ? OP_NOT_IN : OP_IN;
        return id;
    }
    if (!(nd->field = parse_field(ps, nd->arg)))
        return -1;
    int text = nd->field->type == NLPD_FIELD_STRING;
    skip_ws(ps);
    const char *p = ps->p;
    if (strncmp(p, "==", 2) == 0)
        nd->op = OP_EQ, ps->p += 2;
    else if (strncmp(p, "!=", 2) == 0)
        nd->op = OP_NE, ps->p += 2;
    else if (strncmp(p, "<=", 2) == 0)
        nd->op = OP_LE, ps->p += 2;
    else if (strncmp(p, ">=", 2) == 0)
        nd->op = OP_GE, ps->p += 2;
    else if (*p == '<')
        nd->op = OP_LT, ps->p++;
    else if (*p == '>')
        nd->op = OP_GT, ps->p++;
    else if (accept(ps, "not")) {
        if (!accept(ps, "in"))
            return fail(ps, "%s", "expected 'in' after 'not'");
        nd->op = OP_NOT_IN;
    } else if (accept(ps, "in"))
        nd->op = OP_IN;
    else if (nd->field->type == NLPD_FIELD_BOOL &&
             (!*p || *p == ')' || strchr("&|", *p) || strncmp(p, "and", 3) == 0 || strncmp(p, "or", 2) == 0)) {
        nd->op = OP_TRUTH; /* moderation.flagged alone */
        return id;
    } else
        return fail(ps, "%s", "expected ==, !=, <, <=, >, >=, in or not in");
    if (nd->op == OP_IN || nd->op == OP_NOT_IN) {
        if (!text)
            return fail(ps, "%s", "'in' needs a text field, not a number or a flag");
        return parse_list(ps, nd) < 0 ? -1 : id;
    }
    skip_ws(ps);
    if (text) {
        if (nd->op != OP_EQ && nd->op != OP_NE)
            return fail(ps, "%s", "text fields compare with ==, !=, in or not in");
        nd->values = calloc(1, sizeof *nd->values);
        if (!nd->values || parse_string(ps, nd->values[0]) < 0)
            return fail(ps, "%s", "expected a quoted value");
        nd->nvalues = 1;
        return id;
    }
    if (accept(ps, "true") || accept(ps, "false")) {
        nd->number = ps->p[-1] == 'e' && ps->p[-2] == 'u'; /* "true", not "false" */
        return id;
    }
    char *end;
    nd->number = strtod(ps->p, &end);
    if (end == ps->p || is_word_char(*end))
        return fail(ps, "%s", "expected a number, true or false");
    ps->p = end;
    return id;
}

static int parse_unary(struct parser *ps)
{
    if (++ps->depth > MAX_DEPTH)
        return fail(ps, "%s", "nested too deeply");
    int id;
    if (accept(ps, "not") || accept(ps, "!")) {
        int a = parse_unary(ps);
        if (a < 0 || (id = new_node(ps, N_NOT)) < 0)
            return -1;
        ps->w->nodes[id].a = a;
    } else if (accept(ps, "(")) {
        id = parse_or(ps);
        if (id >= 0 && !accept(ps, ")"))
            return fail(ps, "%s", "expected )");
    } else {
        skip_ws(ps);
        if (!*ps->p)
            return fail(ps, "%s", "expected a condition");
        id = parse_comparison(ps);
    }
    ps->depth--;
    return id;
}

static int parse_binary(struct parser *ps, enum kind kind)
{
    int a = kind == N_OR ? parse_binary(ps, N_AND) : parse_unary(ps);
    while (a >= 0 && (kind == N_OR ? accept(ps, "or") || accept(ps, "||") : accept(ps, "and") || accept(ps, "&&"))) {
        int b = kind == N_OR ? parse_binary(ps, N_AND) : parse_unary(ps);
        int id = b < 0 ? -1 : new_node(ps, kind);
        if (id < 0)
            return -1;
        ps->w->nodes[id].a = a;
        ps->w->nodes[id].b = b;
        a = id;
    }
    return a;
}

static int parse_or(struct parser *ps)
{
    return parse_binary(ps, N_OR);
}

struct nlpd_when *nlpd_when_parse(const char *text, char *why, size_t why_len)
{
    struct nlpd_when *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    struct parser ps = {text, text, w, why, why_len, 0, 0};
    w->root = parse_or(&ps);
    skip_ws(&ps);
    if (w->root >= 0 && *ps.p)
        fail(&ps, "%s", "expected and, or, && or || or the end");
    if (ps.failed || w->root < 0) {
        nlpd_when_free(w);
        return NULL;
    }
    return w;
}

static int compare(const struct node *nd, const struct nlpd_field_value *v)
{
    if (nd->field->type == NLPD_FIELD_STRING) {
        if (!v->s) /* an empty list */
            return 0;
        for (size_t i = 0; i < nd->nvalues; i++)
            if (strcmp(v->s, nd->values[i]) == 0)
                return 1;
        return 0;
    }
    switch (nd->op) {
    case OP_TRUTH: return v->x != 0;
    case OP_EQ: return v->x == nd->number;
    case OP_NE: return v->x != nd->number;
    case OP_LT: return v->x < nd->number;
    case OP_LE: return v->x <= nd->number;
    case OP_GT: return v->x > nd->number;
    case OP_GE: return v->x >= nd->number;
    default: return 0;
    }
}

static int eval_cmp(const struct node *nd, const struct nlpd_record *r)
{
    struct nlpd_field_value v = {0};
    int negated = nd->field->type == NLPD_FIELD_STRING && (nd->op == OP_NE || nd->op == OP_NOT_IN);
    if (!nd->field->get(r, nd->arg, 0, &v))
        return 0; /* not set: false, whatever the operator */
    size_t i = 0;
    do {
        if (compare(nd, &v))
            return !negated;
    } while (nd->field->list && nd->field->get(r, nd->arg, ++i, &v));
    return negated;
}

static int eval(const struct nlpd_when *w, int id, const struct nlpd_record *r)
{
    const struct node *nd = &w->nodes[id];
    switch (nd->kind) {
    case N_CMP: return eval_cmp(nd, r);
    case N_AND: return eval(w, nd->a, r) && eval(w, nd->b, r);
    case N_OR: return eval(w, nd->a, r) || eval(w, nd->b, r);
    case N_NOT: return !eval(w, nd->a, r);
    }
    return 0;
}

int nlpd_when_eval(const struct nlpd_when *w, const struct nlpd_record *rec)
{
    return eval(w, w->root, rec);
}

void nlpd_when_free(struct nlpd_when *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->nodes[i].values);
    free(w);
}
