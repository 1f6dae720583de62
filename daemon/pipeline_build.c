/* Building a pipeline's stages from the configuration: the stage registry, the framework's per-stage options,
 * model ids and cache-key material, shadow and canary instances. */
#include "pipeline.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf_map.h"
#include "log.h"
#include "metrics.h"
#include "model_mgmt.h"
#include "pipeline_internal.h"
#include "when.h"

extern const struct nlpd_stage_plugin nlpd_stage_langid;
extern const struct nlpd_stage_plugin nlpd_stage_sentiment;
extern const struct nlpd_stage_plugin nlpd_stage_ner;
extern const struct nlpd_stage_plugin nlpd_stage_moderation;
extern const struct nlpd_stage_plugin nlpd_stage_translate;

static const struct nlpd_stage_plugin *const builtin[] = {
    &nlpd_stage_langid, &nlpd_stage_translate, &nlpd_stage_sentiment, &nlpd_stage_ner, &nlpd_stage_moderation};

#define NBUILTIN  (sizeof builtin / sizeof builtin[0])
#define MAX_EXTRA 16

/* Stages registered at run time (tests, embedders); written before any pipeline is built. */
static const struct nlpd_stage_plugin *extra[MAX_EXTRA];
static size_t nextra;

int nlpd_stage_register(const struct nlpd_stage_plugin *plugin)
{
    if (nextra == MAX_EXTRA || plugin->abi != NLPD_STAGE_ABI || nlpd_stage_find(plugin->name))
        return NLPD_EINVAL;
    extra[nextra++] = plugin;
    return 0;
}

static const struct nlpd_stage_plugin *registry_at(size_t i)
{
    return i < NBUILTIN ? builtin[i] : i < NBUILTIN + nextra ? extra[i - NBUILTIN] : NULL;
}

const struct nlpd_stage_plugin *nlpd_stage_find(const char *name)
{
    for (size_t i = 0; registry_at(i); i++)
        if (strcmp(registry_at(i)->name, name) == 0)
            return registry_at(i);
    return NULL;
}

/* "langid, sentiment, ...": for error messages. */
static void stage_names(char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; registry_at(i) && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", registry_at(i)->name);
}

/* The options the framework owns for every stage with a token budget: one bound and one doc for all. */
struct stage_budget {
    long long max_tokens;
};

static const struct nlpd_conf_entry budget_map[] = {
    {"max_tokens", NLPD_CONF_INT, NULL, offsetof(struct stage_budget, max_tokens), 0, NULL, 16, 1 << 24,
     "padded-token budget of one model batch (records, or translate's sentences, are grouped by length under "
     "it); default: batch.max_tokens. fastText models ignore it"},
    {0},
};

/* The framework's model-management options of a stage. The shadow and canary groups also take any of the
 * plugin's own keys (model, dtype, labels, ...), which override the primary's for that instance. */
struct mm_opts {
    double sample;
    double fraction;
    char *key;
    double low_confidence;
};

static const struct nlpd_conf_entry mm_map[] = {
    {"low_confidence", NLPD_CONF_FLOAT, "0.5", offsetof(struct mm_opts, low_confidence), 0, NULL, 0, 1,
     "results with a confidence under it count in nlpd_stage_low_confidence_total (drift signal)"},
    {0},
};

static const struct nlpd_conf_entry shadow_map[] = {
    {"sample", NLPD_CONF_FLOAT, "1", offsetof(struct mm_opts, sample), 0, NULL, 0, 1,
     "share of the records the shadow also runs on, chosen by a stable hash of the text"},
    {0},
};

static const struct nlpd_conf_entry canary_map[] = {
    {"fraction", NLPD_CONF_FLOAT, NULL, offsetof(struct mm_opts, fraction), NLPD_CONF_REQUIRED, NULL, 0, 1,
     "share of the records the canary model serves instead of the primary"},
    {"key", NLPD_CONF_ENUM, "text", offsetof(struct mm_opts, key), 0, "id|key|text", 0, 0,
     "what the split hashes (FNV-1a 64 of the stage name, NUL, the field, then murmur3 fmix64): the record id, the "
     "Kafka key (each falls back to the text when absent) or the text; the same record always gets the same model"},
    {0},
};

void nlpd_stages_doc(FILE *out)
{
    for (size_t i = 0; registry_at(i); i++) {
        const struct nlpd_stage_plugin *pl = registry_at(i);
        fprintf(out, "\nstage \"%s\": %s\n", pl->name, pl->description);
        fprintf(out, "  %s.name  (string, default \"%s\")\n      instance name used in meta.models and logs\n",
                pl->name, pl->name);
        fprintf(out,
                "  %s.when  (string)\n      run only on records matching this condition, e.g. "
                "\"lang.code == 'en'\"\n",
                pl->name);
        nlpd_conf_doc(pl->conf_map, pl->name, out);
        if (pl->token_budget)
            nlpd_conf_doc(budget_map, pl->name, out);
        nlpd_conf_doc(mm_map, pl->name, out);
        if (pl->results) {
            fprintf(out,
                    "  %s.shadow  (group)\n      a second model run on a sample after the primary, compared "
                    "with it, never written to the output: { model = \"...\"; sample = 1.0; } plus any of "
                    "the stage's keys to override\n",
                    pl->name);
            char sec[96];
            snprintf(sec, sizeof sec, "%s.shadow", pl->name);
            nlpd_conf_doc(shadow_map, sec, out);
            fprintf(out,
                    "  %s.canary  (group)\n      a second model serving a stable share of the records: "
                    "{ model = \"...\"; fraction = 0.1; key = \"text\"; } plus any of the stage's keys to "
                    "override\n",
                    pl->name);
            snprintf(sec, sizeof sec, "%s.canary", pl->name);
            nlpd_conf_doc(canary_map, sec, out);
        }
    }
}

static int digest_file(EVP_MD_CTX *md, const char *path, struct nlpd_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return nlpd_error_set(err, NLPD_EIO, 0, "%s: cannot open: %m", path);
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        EVP_DigestUpdate(md, buf, n);
    int rc = ferror(f) ? nlpd_error_set(err, NLPD_EIO, 0, "%s: read error", path) : 0;
    fclose(f);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A folder (a Hugging Face model, word lists) digests as its regular files and subfolders in name order:
 * each file as its path below the folder, NUL, content; subfolders recursively (a few levels deep). */
static int digest_dir(EVP_MD_CTX *md, const char *path, const char *rel, int depth, struct nlpd_error *err)
{
    DIR *d = opendir(path);
    if (!d)
        return nlpd_error_set(err, NLPD_EIO, 0, "%s: cannot open: %m", path);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && rc == 0) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **g = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
            if (!g) {
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
                break;
            }
            names = g;
        }
        if (!(names[n++] = strdup(e->d_name)))
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    }
    closedir(d);
    if (names)
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char full[4096], sub[4096];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        if (stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 4) {
            rc = digest_dir(md, full, sub, depth + 1, err);
        } else if (S_ISREG(st.st_mode)) {
            EVP_DigestUpdate(md, sub, strlen(sub) + 1);
            rc = digest_file(md, full, err);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int nlpd_file_sha256(const char *path, char hex[65], struct nlpd_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return nlpd_error_set(err, NLPD_EIO, 0, "%s: %m", path);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "sha256 unavailable");
    }
    int rc = S_ISDIR(st.st_mode) ? digest_dir(md, path, "", 0, err) : digest_file(md, path, err);
    unsigned char d[32];
    unsigned len = 0;
    EVP_DigestFinal_ex(md, d, &len);
    EVP_MD_CTX_free(md);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return rc;
}

/* Provenance of a stage's model: "<file name>@sha256:<hex>", from its NLPD_CONF_MODEL entry. */
static char *model_id_of(struct stage_inst *s)
{
    for (const struct nlpd_conf_entry *e = s->plugin->conf_map; e->type != NLPD_CONF_END; e++) {
        if (!(e->flags & NLPD_CONF_MODEL))
            continue;
        const char *path = *(char **)((char *)s->ctx + e->offset);
        if (!path)
            continue;
        char hex[65];
        struct nlpd_error err;
        if (nlpd_file_sha256(path, hex, &err) < 0) {
            nlpd_log(NLPD_LOG_WARNING, s->name, "cannot digest model: %s", err.message);
            continue;
        }
        size_t plen = strlen(path);
        while (plen > 1 && path[plen - 1] == '/') /* "models/sst2/" names the folder sst2 */
            plen--;
        const char *base = path + plen;
        while (base > path && base[-1] != '/')
            base--;
        const char *variant = s->plugin->model_variant ? s->plugin->model_variant(s->ctx) : NULL;
        if (variant && !strcmp(variant, "fp32"))
            variant = NULL;
        size_t len = (size_t)(path + plen - base) + 80 + (variant ? strlen(variant) + 1 : 0);
        char *id = malloc(len);
        if (id)
            snprintf(id, len, "%.*s@sha256:%s%s%s", (int)(path + plen - base), base, hex, variant ? "+" : "",
                     variant ? variant : "");
        s->model_path = strdup(path);
        return id;
    }
    return NULL;
}

/* The options that change a stage's output, in table order, as text: part of every cache key. */
static char *key_material_of(const struct stage_inst *s)
{
    struct nlpd_buf b = {0};
    nlpd_buf_printf(&b, "stage=%s\nmodel=%s\n", s->plugin->name, s->model_id ? s->model_id : "");
    for (const struct nlpd_conf_entry *e = s->plugin->conf_map; e->type != NLPD_CONF_END; e++) {
        if (!(e->flags & (NLPD_CONF_CACHE_KEY | NLPD_CONF_MODEL)))
            continue;
        const char *p = (const char *)s->ctx + e->offset;
        nlpd_buf_printf(&b, "%s=", e->key);
        switch (e->type) {
        case NLPD_CONF_STRING:
        case NLPD_CONF_PATH:
        case NLPD_CONF_ENUM: nlpd_buf_puts(&b, *(char *const *)p ? *(char *const *)p : ""); break;
        case NLPD_CONF_INT: nlpd_buf_printf(&b, "%lld", *(const long long *)p); break;
        case NLPD_CONF_FLOAT: nlpd_buf_printf(&b, "%.17g", *(const double *)p); break;
        case NLPD_CONF_BOOL: nlpd_buf_printf(&b, "%d", *(const int *)p); break;
        case NLPD_CONF_MAP: {
            const struct nlpd_conf_map *m = (const struct nlpd_conf_map *)p;
            for (size_t i = 0; i < m->n; i++) {
                /* a per-language model map names files: their digests are what matters */
                char hex[65];
                struct nlpd_error err;
                const char *v = m->to[i];
                if (strcmp(e->key, "models") == 0 && nlpd_file_sha256(v, hex, &err) == 0)
                    v = hex;
                nlpd_buf_printf(&b, "%s\x1f%s\x1e", m->from[i], v);
            }
            break;
        }
        case NLPD_CONF_LIST: {
            const struct nlpd_conf_list *l = (const struct nlpd_conf_list *)p;
            for (size_t i = 0; i < l->n; i++)
                nlpd_buf_printf(&b, "%s\x1e", l->items[i]);
            break;
        }
        default: break;
        }
        nlpd_buf_puts(&b, "\n");
    }
    if (b.oom) {
        nlpd_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static const char *const stage_common_keys[] = {"stage", "name", "when", "shadow", "canary", "low_confidence", NULL};
static const char *const budget_stage_keys[] = {"stage",  "name",   "when",           "max_tokens",
                                                "shadow", "canary", "low_confidence", NULL};

/* The names of a group's members (NULL-terminated, calloc'd; the strings are libconfig's), NULL when out of
 * memory: the extra keys of a table that reads only some of them. */
static const char **member_names(const config_setting_t *g)
{
    int n = config_setting_length(g);
    const char **keys = calloc((size_t)n + 1, sizeof *keys);
    for (int i = 0; keys && i < n; i++)
        keys[i] = config_setting_name(config_setting_get_elem(g, (unsigned)i));
    return keys;
}

/* The stage's max_tokens (framework-owned, see budget_map), else batch.max_tokens. */
static int apply_budget(struct stage_inst *s, const struct nlpd_config *cfg, const config_setting_t *entry,
                        const char *section, struct nlpd_diag *diag)
{
    /* only max_tokens is checked here: the entry's other keys are the plugin table's business */
    int n = config_setting_length(entry);
    const char **keys = calloc((size_t)n + 1, sizeof *keys);
    if (!keys) {
        nlpd_diag_add(diag, nlpd_conf_file(entry, cfg->path), config_setting_source_line(entry), "out of memory");
        return 1;
    }
    for (int i = 0; i < n; i++)
        keys[i] = config_setting_name(config_setting_get_elem(entry, (unsigned)i));
    struct stage_budget b = {0};
    int errors = nlpd_conf_apply(budget_map, entry, &b, keys, section, cfg->path, diag);
    free(keys);
    s->inst.max_tokens = (size_t)(b.max_tokens ? b.max_tokens : cfg->batch.max_tokens);
    return errors;
}

/* A shadow or canary instance of s: the primary's options from entry, overridden by the plugin's keys that group
 * (the entry's `shadow` or `canary`) holds; its own options (sample, fraction, key) go to opts. NULL on an error
 * (in diag). */
static struct stage_inst *build_variant(const struct nlpd_config *cfg, const struct stage_inst *s,
                                        const config_setting_t *entry, const config_setting_t *group, const char *role,
                                        const struct nlpd_conf_entry *own, struct mm_opts *opts, const char *section,
                                        struct nlpd_diag *diag)
{
    const char *file = nlpd_conf_file(group, cfg->path);
    int line = config_setting_source_line(group);
    char sec[192];
    snprintf(sec, sizeof sec, "%s.%s", section, role);
    if (config_setting_type(group) != CONFIG_TYPE_GROUP) {
        nlpd_diag_add(diag, file, line, "%s must be a group { model = \"...\"; ... }", sec);
        return NULL;
    }
    if (!s->plugin->results) {
        nlpd_diag_add(diag, file, line, "%s: stage %s writes no result to compare or split", sec, s->plugin->name);
        return NULL;
    }
    struct stage_inst *v = calloc(1, sizeof *v);
    const char **entry_keys = member_names(entry), **group_keys = member_names(group);
    size_t nmap = 0;
    while (s->plugin->conf_map[nmap].type != NLPD_CONF_END)
        nmap++;
    struct nlpd_conf_entry *sub = calloc(nmap + 1, sizeof *sub);
    const char *own_keys[8] = {0};
    for (size_t i = 0; own[i].type != NLPD_CONF_END && i < 7; i++)
        own_keys[i] = own[i].key;
    int errors = 0;
    if (!v || !entry_keys || !group_keys || !sub ||
        !(v->ctx = calloc(1, s->plugin->ctx_size ? s->plugin->ctx_size : 1))) {
        nlpd_diag_add(diag, file, line, "out of memory");
        errors++;
        goto out;
    }
    v->plugin = s->plugin;
    size_t nlen = strlen(s->name) + strlen(role) + 2;
    if (!(v->name = malloc(nlen))) {
        nlpd_diag_add(diag, file, line, "out of memory");
        errors++;
        goto out;
    }
    snprintf(v->name, nlen, "%s.%s", s->name, role);
    /* the primary's options (already checked), then the group's keys of the plugin's table over them; a group
     * giving `model` drops the primary's `models` and the other way round */
    errors += nlpd_conf_apply(s->plugin->conf_map, entry, v->ctx, entry_keys, section, cfg->path, diag);
    int has_model = config_setting_get_member(group, "model") != NULL;
    int has_models = config_setting_get_member(group, "models") != NULL;
    size_t nsub = 0;
    for (size_t i = 0; i < nmap; i++) {
        const char *k = s->plugin->conf_map[i].key;
        if (config_setting_get_member(group, k) || (!strcmp(k, "models") && has_model) ||
            (!strcmp(k, "model") && has_models))
            sub[nsub++] = s->plugin->conf_map[i];
    }
    nlpd_conf_release(sub, v->ctx);
    errors += nlpd_conf_apply(sub, group, v->ctx, own_keys, sec, cfg->path, diag);
    errors += nlpd_conf_apply(own, group, opts, group_keys, sec, cfg->path, diag);
    if (errors)
        goto out;
    v->inst = (struct nlpd_stage_instance){
        .name = v->name, .type = s->plugin->name, .index = s->inst.index, .max_tokens = s->inst.max_tokens};
    nlpd_histogram_init_ms(&v->compute_ms);
    nlpd_histogram_init_tokens(&v->padded_tokens);
    struct nlpd_error err = {0};
    v->initialised = 1;
    if (s->plugin->init(&v->inst, v->ctx, &err) < 0) {
        nlpd_diag_add(diag, file, line, "%s: %s", sec, err.message[0] ? err.message : nlpd_strerror(err.code));
        errors++;
        goto out;
    }
    v->model_id = model_id_of(v);
    if (!(v->key_material = key_material_of(v))) {
        nlpd_diag_add(diag, file, line, "out of memory");
        errors++;
    }
out:
    free(entry_keys);
    free(group_keys);
    free(sub);
    if (errors && v) {
        nlpd_stage_inst_free(v);
        free(v);
        v = NULL;
    }
    return v;
}

/* "a, b, c" of up to 64 labels, sorted (so that two sets print alike), into out. */
static size_t label_set(const struct stage_inst *s, const char **labels, char *out, size_t cap)
{
    size_t n = s->plugin->labels(s->ctx, labels, 64);
    if (n > 64)
        n = 64;
    qsort(labels, n, sizeof *labels, cmp_names);
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", labels[i]);
    return n;
}

/* A shadow is compared label for label: its labels must be the primary's (map them with the stage's `labels`). */
static int check_labels(const struct nlpd_config *cfg, const struct stage_inst *s, const config_setting_t *g,
                        const char *section, struct nlpd_diag *diag)
{
    if (!s->plugin->labels)
        return 0;
    const char *a[64], *b[64];
    char sa[1024], sb[1024];
    size_t na = label_set(s, a, sa, sizeof sa), nb = label_set(s->shadow, b, sb, sizeof sb);
    int same = na == nb;
    for (size_t i = 0; same && i < na; i++)
        same = !strcmp(a[i], b[i]);
    if (!same)
        nlpd_diag_add(diag, nlpd_conf_file(g, cfg->path), config_setting_source_line(g),
                      "%s.shadow: its labels (%s) are not the primary's (%s), so the two cannot be compared: map "
                      "them with labels = ((\"model label\", \"label\"), ...) in the shadow group",
                      section, sb, sa);
    return !same;
}

/* The stage's model management: its drift counters, and its shadow and canary when the entry has them. */
static int build_mm(struct nlpd_pipeline *p, const struct nlpd_config *cfg, struct stage_inst *s,
                    const config_setting_t *entry, const char *section, struct nlpd_diag *diag)
{
    (void)p;
    const char *file = nlpd_conf_file(entry, cfg->path);
    int line = config_setting_source_line(entry);
    struct mm_opts o = {0};
    const char **keys = member_names(entry);
    if (!keys || !(s->mm = malloc(sizeof *s->mm))) {
        free(keys);
        nlpd_diag_add(diag, file, line, "out of memory");
        return 1;
    }
    nlpd_mm_stage_init(s->mm, s->name);
    int errors = nlpd_conf_apply(mm_map, entry, &o, keys, section, cfg->path, diag);
    free(keys);
    s->mm->low_confidence = o.low_confidence;
    s->mm->primary_id = s->model_id;
    const config_setting_t *g = config_setting_get_member(entry, "shadow");
    if (g && !errors) {
        if (!(s->shadow = build_variant(cfg, s, entry, g, "shadow", shadow_map, &o, section, diag)))
            return 1;
        s->shadow_sample = o.sample;
        s->mm->has_shadow = 1;
        if (check_labels(cfg, s, g, section, diag))
            return 1;
        s->mm->shadow_id = s->shadow->model_id;
    }
    if ((g = config_setting_get_member(entry, "canary")) && !errors) {
        s->canary = build_variant(cfg, s, entry, g, "canary", canary_map, &o, section, diag);
        if (s->canary) {
            s->canary_fraction = o.fraction;
            s->canary_key = !strcmp(o.key, "id")    ? NLPD_MM_KEY_ID
                            : !strcmp(o.key, "key") ? NLPD_MM_KEY_KEY
                                                    : NLPD_MM_KEY_TEXT;
            s->mm->has_canary = 1;
            s->mm->canary_id = s->canary->model_id;
        }
        nlpd_conf_release(canary_map, &o);
        if (!s->canary)
            return 1;
    }
    return errors;
}

int nlpd_pipeline_build_stage(struct nlpd_pipeline *p, const struct nlpd_config *cfg, const config_setting_t *entry,
                              size_t index, struct nlpd_diag *diag)
{
    const char *file = nlpd_conf_file(entry, cfg->path);
    int line = config_setting_source_line(entry);
    struct stage_inst *s = &p->stages[index];
    if (config_setting_type(entry) != CONFIG_TYPE_GROUP) {
        nlpd_diag_add(diag, file, line, "pipeline[%zu] must be a group { stage = \"...\"; ... }", index);
        return 1;
    }
    const char *stage = NULL;
    const config_setting_t *ss = config_setting_get_member(entry, "stage");
    char names[256];
    stage_names(names, sizeof names);
    if (!ss || config_setting_type(ss) != CONFIG_TYPE_STRING) {
        nlpd_diag_add(diag, file, ss ? (int)config_setting_source_line(ss) : line,
                      "pipeline[%zu] needs 'stage' as a string (one of: %s)", index, names);
        return 1;
    }
    stage = config_setting_get_string(ss);
    s->plugin = nlpd_stage_find(stage);
    if (!s->plugin) {
        nlpd_diag_add(diag, file, config_setting_source_line(ss), "unknown stage \"%s\" (this build has: %s)", stage,
                      names);
        return 1;
    }
    NLPD_ASSERT(s->plugin->abi == NLPD_STAGE_ABI);
    nlpd_histogram_init_ms(&s->compute_ms);
    nlpd_histogram_init_tokens(&s->padded_tokens);
    const char *name = stage;
    const config_setting_t *ns = config_setting_get_member(entry, "name");
    if (ns && (config_setting_type(ns) != CONFIG_TYPE_STRING || !*(name = config_setting_get_string(ns)))) {
        nlpd_diag_add(diag, file, config_setting_source_line(ns), "pipeline[%zu].name must be a non-empty string",
                      index);
        return 1;
    }
    s->name = strdup(name);
    s->ctx = calloc(1, s->plugin->ctx_size ? s->plugin->ctx_size : 1);
    if (!s->name || !s->ctx) {
        nlpd_diag_add(diag, file, line, "out of memory");
        return 1;
    }
    char section[128];
    snprintf(section, sizeof section, "pipeline[%zu] (%s)", index, s->name);
    s->inst = (struct nlpd_stage_instance){.name = s->name, .type = s->plugin->name, .index = index};
    int errors =
        nlpd_conf_apply(s->plugin->conf_map, entry, s->ctx,
                        s->plugin->token_budget ? budget_stage_keys : stage_common_keys, section, cfg->path, diag);
    if (s->plugin->token_budget)
        errors += apply_budget(s, cfg, entry, section, diag);

    const config_setting_t *ws = config_setting_get_member(entry, "when");
    if (ws) {
        char why[256];
        if (config_setting_type(ws) != CONFIG_TYPE_STRING) {
            nlpd_diag_add(diag, file, config_setting_source_line(ws), "%s.when must be a string", section);
            errors++;
        } else if (!(s->when = nlpd_when_parse(config_setting_get_string(ws), why, sizeof why))) {
            nlpd_diag_add(diag, file, config_setting_source_line(ws), "%s.when: %s", section, why);
            errors++;
        }
    }
    if (errors)
        return errors;

    struct nlpd_error err = {0};
    s->initialised = 1; /* fini() runs even after a failed init(), to release what it got */
    if (s->plugin->init(&s->inst, s->ctx, &err) < 0) {
        nlpd_diag_add(diag, file, line, "%s: %s", section, err.message[0] ? err.message : nlpd_strerror(err.code));
        return 1;
    }
    s->model_id = model_id_of(s);
    if (s->plugin->results && !(s->key_material = key_material_of(s))) {
        nlpd_diag_add(diag, file, line, "out of memory");
        return 1;
    }
    return build_mm(p, cfg, s, entry, section, diag);
}

void nlpd_stage_inst_free(struct stage_inst *s)
{
    if (s->initialised && s->plugin->fini)
        s->plugin->fini(s->ctx);
    if (s->plugin && s->ctx)
        nlpd_conf_release(s->plugin->conf_map, s->ctx);
    free(s->ctx);
    free(s->name);
    free(s->model_id);
    free(s->model_path);
    free(s->key_material);
    nlpd_when_free(s->when);
    for (int k = 0; k < 2; k++) {
        struct stage_inst *v = k ? s->canary : s->shadow;
        if (v) {
            nlpd_stage_inst_free(v);
            free(v);
        }
    }
    if (s->mm) {
        nlpd_mm_stage_fini(s->mm);
        free(s->mm);
    }
}
