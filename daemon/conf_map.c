/* conf_map application (see conf_map.h). */
#include "conf_map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *nlpd_conf_path_of(const char *file, const char *main_path)
{
    static __thread char joined[4096];
    const char *slash = main_path ? strrchr(main_path, '/') : NULL;
    if (!file || file[0] == '/' || !slash || strcmp(file, main_path) == 0)
        return file;
    snprintf(joined, sizeof joined, "%.*s/%s", (int)(slash - main_path), main_path, file);
    return joined;
}

const char *nlpd_conf_file(const config_setting_t *s, const char *fallback)
{
    const char *f = s ? config_setting_source_file(s) : NULL;
    return f ? nlpd_conf_path_of(f, fallback) : fallback;
}

/* Levenshtein distance of two short keys (longer ones count as far apart). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[65];
    if (la > 64 || lb > 64)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

const char *nlpd_conf_suggest(const char *key, const char *const *candidates, size_t n)
{
    /* at most 2 edits, and fewer than a third of the key: "treshold" -> "threshold", not "id" -> "lang" */
    size_t best = 3, limit = strlen(key) / 3 + 1;
    const char *pick = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(key, candidates[i]);
        if (d < best && d <= limit && d > 0) {
            best = d;
            pick = candidates[i];
        }
    }
    return pick;
}

/* The suffix of an unknown-key message: " (did you mean 'x'?)", or "". Thread-local buffer. */
static const char *did_you_mean(const char *key, const struct nlpd_conf_entry *map, const char *const *extra)
{
    static __thread char out[128];
    const char *cand[256];
    size_t n = 0;
    for (const struct nlpd_conf_entry *e = map; e->type != NLPD_CONF_END && n < 256; e++)
        cand[n++] = e->key;
    for (const char *const *x = extra; x && *x && n < 256; x++)
        cand[n++] = *x;
    const char *s = nlpd_conf_suggest(key, cand, n);
    if (s)
        snprintf(out, sizeof out, " (did you mean '%s'?)", s);
    else
        out[0] = '\0';
    return out;
}

const char *nlpd_conf_map_get(const struct nlpd_conf_map *map, const char *from)
{
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->from[i], from) == 0)
            return map->to[i];
    return NULL;
}

static const char *type_name(enum nlpd_conf_type t)
{
    switch (t) {
    case NLPD_CONF_STRING: return "string";
    case NLPD_CONF_PATH: return "path";
    case NLPD_CONF_INT: return "integer";
    case NLPD_CONF_FLOAT: return "number";
    case NLPD_CONF_BOOL: return "boolean";
    case NLPD_CONF_ENUM: return "string";
    case NLPD_CONF_MAP: return "list of (\"from\", \"to\") pairs";
    case NLPD_CONF_LIST: return "list of strings";
    default: return "?";
    }
}

static const char *setting_type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a number";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "a value";
    }
}

static int choice_ok(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vl && strncmp(p, v, len) == 0)
            return 1;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

/* What to do about a missing model: `make models` fetches only these files into models/; a Hugging Face folder
 * (or any other file) is the user's to provide. */
static const char *model_hint(const char *path, int en)
{
    static const char *const fetched[] = {"lid.176.ftz", "amazon_review_polarity.ftz", "amazon_review_full.ftz",
                                          "lexicons", NULL};
    if (en != ENOENT)
        return "";
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (const char *const *f = fetched; *f; f++)
        if (strcmp(base, *f) == 0)
            return " (run `make models` to fetch it)";
    return " (a Hugging Face folder or model file you provide: download it, e.g. with `huggingface-cli download "
           "ORG/NAME --local-dir DIR`, and set the path; `make models` fetches only lid.176.ftz, the Amazon "
           "review models and the moderation word lists)";
}

static int in_range(const struct nlpd_conf_entry *e, double v)
{
    return e->min == e->max || (v >= e->min && v <= e->max);
}

static char **field_str(void *base, const struct nlpd_conf_entry *e)
{
    return (char **)((char *)base + e->offset);
}

/* Stores a value given as text (a default); the table is ours, so a bad default is a programmer error. */
static void store_default(const struct nlpd_conf_entry *e, void *base)
{
    char *p = (char *)base + e->offset;
    switch (e->type) {
    case NLPD_CONF_STRING:
    case NLPD_CONF_PATH:
    case NLPD_CONF_ENUM: *(char **)p = e->def ? strdup(e->def) : NULL; break;
    case NLPD_CONF_INT: *(long long *)p = e->def ? strtoll(e->def, NULL, 10) : 0; break;
    case NLPD_CONF_FLOAT: *(double *)p = e->def ? strtod(e->def, NULL) : 0.0; break;
    case NLPD_CONF_BOOL: *(int *)p = e->def && strcmp(e->def, "true") == 0; break;
    case NLPD_CONF_MAP: memset(p, 0, sizeof(struct nlpd_conf_map)); break;
    case NLPD_CONF_LIST: {
        /* A default list is one item (enough for our tables). */
        struct nlpd_conf_list *l = (struct nlpd_conf_list *)p;
        memset(l, 0, sizeof *l);
        if (e->def && (l->items = calloc(1, sizeof(char *))) && (l->items[0] = strdup(e->def)))
            l->n = 1;
        break;
    }
    default: NLPD_ASSERT(!"bad conf type");
    }
}

static int store_map(const struct nlpd_conf_entry *e, const config_setting_t *s, void *base, const char *section,
                     const char *file, struct nlpd_diag *diag)
{
    struct nlpd_conf_map *m = (struct nlpd_conf_map *)((char *)base + e->offset);
    memset(m, 0, sizeof *m);
    if (config_setting_type(s) != CONFIG_TYPE_LIST) {
        nlpd_diag_add(diag, nlpd_conf_file(s, file), config_setting_source_line(s), "%s.%s must be a %s, not %s",
                      section, e->key, type_name(e->type), setting_type_name(s));
        return 1;
    }
    int n = config_setting_length(s), errors = 0;
    m->from = calloc((size_t)n + 1, sizeof(char *));
    m->to = calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; i < n; i++) {
        const config_setting_t *pair = config_setting_get_elem(s, (unsigned)i);
        const char *from = NULL, *to = NULL;
        if ((config_setting_type(pair) == CONFIG_TYPE_LIST || config_setting_type(pair) == CONFIG_TYPE_ARRAY) &&
            config_setting_length(pair) == 2) {
            from = config_setting_get_string_elem(pair, 0);
            to = config_setting_get_string_elem(pair, 1);
        }
        if (!from || !to) {
            nlpd_diag_add(diag, nlpd_conf_file(pair, file), config_setting_source_line(pair),
                          "%s.%s[%d] must be a pair of strings like (\"__label__1\", \"negative\")", section, e->key,
                          i);
            errors++;
            continue;
        }
        m->from[m->n] = strdup(from);
        m->to[m->n] = strdup(to);
        m->n++;
    }
    return errors;
}

static int store_list(const struct nlpd_conf_entry *e, const config_setting_t *s, void *base, const char *section,
                      const char *file, struct nlpd_diag *diag)
{
    struct nlpd_conf_list *l = (struct nlpd_conf_list *)((char *)base + e->offset);
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_LIST && t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_STRING) {
        nlpd_diag_add(diag, nlpd_conf_file(s, file), config_setting_source_line(s),
                      "%s.%s must be a list of strings like [\"a\", \"b\"], not %s", section, e->key,
                      setting_type_name(s));
        return 1;
    }
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
    int n = t == CONFIG_TYPE_STRING ? 1 : config_setting_length(s), errors = 0;
    l->items = calloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; i < n && l->items; i++) {
        const char *v = t == CONFIG_TYPE_STRING ? config_setting_get_string(s) : config_setting_get_string_elem(s, i);
        if (!v || !*v) {
            nlpd_diag_add(diag, nlpd_conf_file(s, file), config_setting_source_line(s),
                          "%s.%s[%d] must be a non-empty string", section, e->key, i);
            errors++;
            continue;
        }
        l->items[l->n++] = strdup(v);
    }
    if (!errors && l->n == 0 && (e->flags & NLPD_CONF_REQUIRED)) {
        nlpd_diag_add(diag, nlpd_conf_file(s, file), config_setting_source_line(s), "%s.%s must not be empty", section,
                      e->key);
        errors++;
    }
    return errors;
}

int nlpd_conf_apply(const struct nlpd_conf_entry *map, const config_setting_t *group, void *base,
                    const char *const *extra_keys, const char *section, const char *file, struct nlpd_diag *diag)
{
    int errors = 0;
    if (group && config_setting_type(group) != CONFIG_TYPE_GROUP) {
        nlpd_diag_add(diag, nlpd_conf_file(group, file), config_setting_source_line(group),
                      "%s must be a group { ... }, not %s", section, setting_type_name(group));
        /* Defaults still fill base: callers (nlpd check shows every error) read it after errors. */
        for (const struct nlpd_conf_entry *e = map; e->type != NLPD_CONF_END; e++)
            store_default(e, base);
        return 1;
    }
    if (group) {
        int n = config_setting_length(group);
        for (int i = 0; i < n; i++) {
            const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
            const char *name = config_setting_name(s);
            int known = 0;
            for (const struct nlpd_conf_entry *e = map; e->type != NLPD_CONF_END && !known; e++)
                known = strcmp(e->key, name) == 0;
            for (const char *const *x = extra_keys; x && *x && !known; x++)
                known = strcmp(*x, name) == 0;
            if (!known) {
                nlpd_diag_add(diag, nlpd_conf_file(s, file), config_setting_source_line(s), "unknown key '%s' in %s%s",
                              name, section, did_you_mean(name, map, extra_keys));
                errors++;
            }
        }
    }

    for (const struct nlpd_conf_entry *e = map; e->type != NLPD_CONF_END; e++) {
        const config_setting_t *s = group ? config_setting_get_member(group, e->key) : NULL;
        store_default(e, base);
        if (!s) {
            if (e->flags & NLPD_CONF_REQUIRED) {
                nlpd_diag_add(diag, nlpd_conf_file(group, file), group ? config_setting_source_line(group) : 0,
                              "%s needs '%s' (%s)", section, e->key, e->doc);
                errors++;
            }
            continue;
        }
        const char *sfile = nlpd_conf_file(s, file);
        int line = config_setting_source_line(s);
        int t = config_setting_type(s);
        char *p = (char *)base + e->offset;
        switch (e->type) {
        case NLPD_CONF_STRING:
        case NLPD_CONF_PATH:
        case NLPD_CONF_ENUM: {
            if (t != CONFIG_TYPE_STRING) {
                nlpd_diag_add(diag, sfile, line, "%s.%s must be a string, not %s", section, e->key,
                              setting_type_name(s));
                errors++;
                break;
            }
            const char *v = config_setting_get_string(s);
            if (e->type == NLPD_CONF_ENUM && !choice_ok(e->choices, v)) {
                nlpd_diag_add(diag, sfile, line, "%s.%s must be one of %s, not \"%s\"", section, e->key, e->choices, v);
                errors++;
                break;
            }
            if (e->type == NLPD_CONF_PATH && access(v, R_OK) != 0) {
                int en = errno;
                if (e->flags & NLPD_CONF_MODEL)
                    nlpd_diag_add(diag, sfile, line, "%s.%s: model '%s' %s%s", section, e->key, v,
                                  en == ENOENT ? "not found" : strerror(en), model_hint(v, en));
                else
                    nlpd_diag_add(diag, sfile, line, "%s.%s: cannot read '%s': %s", section, e->key, v, strerror(en));
                errors++;
            }
            free(*field_str(base, e));
            *field_str(base, e) = strdup(v);
            break;
        }
        case NLPD_CONF_INT: {
            if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
                nlpd_diag_add(diag, sfile, line, "%s.%s must be an integer, not %s", section, e->key,
                              setting_type_name(s));
                errors++;
                break;
            }
            long long v = config_setting_get_int64(s);
            if (!in_range(e, (double)v)) {
                nlpd_diag_add(diag, sfile, line, "%s.%s = %lld is out of range [%.0f, %.0f]", section, e->key, v,
                              e->min, e->max);
                errors++;
                break;
            }
            *(long long *)p = v;
            break;
        }
        case NLPD_CONF_FLOAT: {
            double v;
            if (t == CONFIG_TYPE_FLOAT)
                v = config_setting_get_float(s);
            else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
                v = (double)config_setting_get_int64(s);
            else {
                nlpd_diag_add(diag, sfile, line, "%s.%s must be a number, not %s", section, e->key,
                              setting_type_name(s));
                errors++;
                break;
            }
            if (!in_range(e, v)) {
                nlpd_diag_add(diag, sfile, line, "%s.%s = %g is out of range [%g, %g]", section, e->key, v, e->min,
                              e->max);
                errors++;
                break;
            }
            *(double *)p = v;
            break;
        }
        case NLPD_CONF_BOOL:
            if (t != CONFIG_TYPE_BOOL) {
                nlpd_diag_add(diag, sfile, line, "%s.%s must be true or false, not %s", section, e->key,
                              setting_type_name(s));
                errors++;
                break;
            }
            *(int *)p = config_setting_get_bool(s);
            break;
        case NLPD_CONF_MAP: errors += store_map(e, s, base, section, file, diag); break;
        case NLPD_CONF_LIST: errors += store_list(e, s, base, section, file, diag); break;
        default: NLPD_ASSERT(!"bad conf type");
        }
    }
    return errors;
}

void nlpd_conf_release(const struct nlpd_conf_entry *map, void *base)
{
    for (const struct nlpd_conf_entry *e = map; e->type != NLPD_CONF_END; e++) {
        char *p = (char *)base + e->offset;
        if (e->type == NLPD_CONF_STRING || e->type == NLPD_CONF_PATH || e->type == NLPD_CONF_ENUM) {
            free(*(char **)p);
            *(char **)p = NULL;
        } else if (e->type == NLPD_CONF_MAP) {
            struct nlpd_conf_map *m = (struct nlpd_conf_map *)p;
            for (size_t i = 0; i < m->n; i++) {
                free(m->from[i]);
                free(m->to[i]);
            }
            free(m->from);
            free(m->to);
            memset(m, 0, sizeof *m);
        } else if (e->type == NLPD_CONF_LIST) {
            struct nlpd_conf_list *l = (struct nlpd_conf_list *)p;
            for (size_t i = 0; i < l->n; i++)
                free(l->items[i]);
            free(l->items);
            memset(l, 0, sizeof *l);
        }
    }
}

static int str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

int nlpd_conf_equal(const struct nlpd_conf_entry *e, const void *a, const void *b)
{
    const char *pa = (const char *)a + e->offset, *pb = (const char *)b + e->offset;
    switch (e->type) {
    case NLPD_CONF_STRING:
    case NLPD_CONF_PATH:
    case NLPD_CONF_ENUM: return str_eq(*(char *const *)pa, *(char *const *)pb);
    case NLPD_CONF_INT: return *(const long long *)pa == *(const long long *)pb;
    case NLPD_CONF_FLOAT: return *(const double *)pa == *(const double *)pb;
    case NLPD_CONF_BOOL: return *(const int *)pa == *(const int *)pb;
    case NLPD_CONF_MAP: {
        const struct nlpd_conf_map *x = (const void *)pa, *y = (const void *)pb;
        if (x->n != y->n)
            return 0;
        for (size_t i = 0; i < x->n; i++)
            if (!str_eq(x->from[i], y->from[i]) || !str_eq(x->to[i], y->to[i]))
                return 0;
        return 1;
    }
    case NLPD_CONF_LIST: {
        const struct nlpd_conf_list *x = (const void *)pa, *y = (const void *)pb;
        if (x->n != y->n)
            return 0;
        for (size_t i = 0; i < x->n; i++)
            if (!str_eq(x->items[i], y->items[i]))
                return 0;
        return 1;
    }
    default: return 0;
    }
}

void nlpd_conf_doc(const struct nlpd_conf_entry *map, const char *section, FILE *out)
{
    for (const struct nlpd_conf_entry *e = map; e->type != NLPD_CONF_END; e++) {
        fprintf(out, "  %s.%s  (%s%s%s", section, e->key, type_name(e->type),
                (e->flags & NLPD_CONF_REQUIRED) ? ", required" : "",
                (e->flags & NLPD_CONF_RESTART) ? ", restart required" : "");
        if (e->def)
            fprintf(out, ", default %s", e->def);
        if (e->type == NLPD_CONF_ENUM)
            fprintf(out, ", one of %s", e->choices);
        if (e->min != e->max)
            fprintf(out, e->type == NLPD_CONF_INT ? ", range %.0f..%.0f" : ", range %g..%g", e->min, e->max);
        fprintf(out, ")\n      %s\n", e->doc);
    }
}
