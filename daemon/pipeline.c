/* Pipeline construction and worker threads (see pipeline.h). */
#include "pipeline.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "conf_map.h"
#include "log.h"
#include "metrics.h"
#include "model_info.h"
#include "model_mgmt.h"
#include "result_codec.h"
#include "results.h"
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

struct stage_inst {
    const struct nlpd_stage_plugin *plugin;
    struct nlpd_stage_instance inst; /* what init() and process() get: name, type, index, token budget */
    void *ctx;
    int initialised;
    struct nlpd_when *when;
    char *name;
    char *model_id;
    char *model_path;                 /* the file or folder model_id digests */
    char *key_material;               /* stage name, model digest and output-changing options: the cache key's prefix */
    uint64_t hits, misses;            /* cache counters (atomic) */
    struct nlpd_histogram compute_ms; /* time of the stage on one batch, cache lookups included */
    struct nlpd_histogram padded_tokens; /* per micro-batch, as the stage reports it (transformer stages) */
    /* model management: the shadow and canary instances (same plugin, their own model and context) */
    struct stage_inst *shadow, *canary;
    double shadow_sample, canary_fraction;
    enum nlpd_mm_key canary_key;
    struct nlpd_mm_stage *mm; /* drift, agreement and canary counters (primary instances only) */
};

struct worker {
    struct nlpd_pipeline *p;
    pthread_t thread;
    void **tstate; /* one per stage */
    struct nlpd_record **scratch;
    size_t scratch_cap;
    /* cache lookups of one stage run: per eligible record */
    char (*keys)[80];
    const char **key_ptrs;
    struct nlpd_cache_value *vals;
    long *leader; /* -1: computed here; else the index of the record with the same key */
    struct nlpd_record **to_run;
    size_t cache_cap;
    size_t padded_tokens; /* reported by the current stage over its process() calls on one micro-batch */
    void **vtstate;       /* per stage: [2i] its shadow's thread state, [2i + 1] its canary's */
    struct nlpd_record **canary_list;
    struct nlpd_record *shadow_recs; /* scratch records the shadow writes into */
    struct nlpd_record **shadow_ptrs, **shadow_of;
    size_t mm_cap;
};

struct nlpd_pipeline {
    struct nlpd_cache *cache;
    struct nlpd_histogram batch_records;
    size_t nstages;
    struct stage_inst *stages;
    struct nlpd_model_ref *models;
    size_t nmodels;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct nlpd_job *head, *tail;
    size_t queued, queue_cap;
    void (*on_space)(void *user); /* see nlpd_pipeline_on_space() */
    void *on_space_user;
    int stopping, fatal, nworkers;
    int pressure;       /* set by the input while it holds back for the pipeline: shadows are skipped (atomic) */
    long test_delay_ms; /* NLPD_TEST_BATCH_DELAY_MS: a slow stage on demand, for flow-control tests */
    struct worker *workers;
    struct worker inline_worker;
};

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

static void stage_inst_free(struct stage_inst *s);

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
        stage_inst_free(v);
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

static int build_stage(struct nlpd_pipeline *p, const struct nlpd_config *cfg, const config_setting_t *entry,
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

struct nlpd_pipeline *nlpd_pipeline_create(const struct nlpd_config *cfg, struct nlpd_diag *diag)
{
    struct nlpd_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    nlpd_histogram_init_size(&p->batch_records);
    const char *delay = getenv("NLPD_TEST_BATCH_DELAY_MS");
    if (delay && (p->test_delay_ms = strtol(delay, NULL, 10)) > 0)
        nlpd_log(NLPD_LOG_WARNING, "pipeline",
                 "NLPD_TEST_BATCH_DELAY_MS: every micro-batch takes %ld ms more (tests only)", p->test_delay_ms);
    p->nstages = (size_t)config_setting_length(cfg->pipeline);
    p->stages = calloc(p->nstages, sizeof *p->stages);
    p->models = calloc(p->nstages, sizeof *p->models);
    if (!p->stages || !p->models) {
        nlpd_pipeline_free(p);
        return NULL;
    }
    int errors = 0;
    for (size_t i = 0; i < p->nstages; i++)
        errors += build_stage(p, cfg, config_setting_get_elem(cfg->pipeline, (unsigned)i), i, diag);
    for (size_t i = 0; i < p->nstages && !errors; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->stages[i].name, p->stages[j].name) == 0) {
                const config_setting_t *e = config_setting_get_elem(cfg->pipeline, (unsigned)i);
                nlpd_diag_add(diag, nlpd_conf_file(e, cfg->path), config_setting_source_line(e),
                              "two stages are named \"%s\": give one a distinct 'name'", p->stages[i].name);
                errors++;
            }
    if (!errors) {
        struct nlpd_error err = {0};
        p->cache = nlpd_cache_new(&cfg->cache, &err);
        if (!p->cache) {
            const config_setting_t *cs = config_lookup(&cfg->cfg, "cache");
            nlpd_diag_add(diag, nlpd_conf_file(cs, cfg->path), cs ? config_setting_source_line(cs) : 0, "cache: %s",
                          err.message);
            errors++;
        }
    }
    if (errors) {
        nlpd_pipeline_free(p);
        return NULL;
    }
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].model_id) {
            p->models[p->nmodels].stage_index = (unsigned)i;
            p->models[p->nmodels].stage = p->stages[i].name;
            p->models[p->nmodels].id = p->stages[i].model_id;
            p->models[p->nmodels].canary_id = p->stages[i].canary ? p->stages[i].canary->model_id : NULL;
            p->nmodels++;
        }
    return p;
}

static int worker_init(struct nlpd_pipeline *p, struct worker *w)
{
    w->p = p;
    w->tstate = calloc(p->nstages, sizeof *w->tstate);
    if (!w->tstate)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].plugin->thread_init && !(w->tstate[i] = p->stages[i].plugin->thread_init(p->stages[i].ctx)))
            return NLPD_ENOMEM;
    if (!(w->vtstate = calloc(2 * p->nstages, sizeof *w->vtstate)))
        return NLPD_ENOMEM;
    for (size_t i = 0; i < p->nstages; i++)
        for (int k = 0; k < 2; k++) {
            struct stage_inst *v = k ? p->stages[i].canary : p->stages[i].shadow;
            if (v && v->plugin->thread_init && !(w->vtstate[2 * i + k] = v->plugin->thread_init(v->ctx)))
                return NLPD_ENOMEM;
        }
    return 0;
}

static void worker_fini(struct worker *w)
{
    struct nlpd_pipeline *p = w->p;
    if (!p)
        return;
    for (size_t i = 0; w->tstate && i < p->nstages; i++)
        if (w->tstate[i] && p->stages[i].plugin->thread_fini)
            p->stages[i].plugin->thread_fini(p->stages[i].ctx, w->tstate[i]);
    for (size_t i = 0; w->vtstate && i < p->nstages; i++)
        for (int k = 0; k < 2; k++) {
            struct stage_inst *v = k ? p->stages[i].canary : p->stages[i].shadow;
            if (w->vtstate[2 * i + k] && v->plugin->thread_fini)
                v->plugin->thread_fini(v->ctx, w->vtstate[2 * i + k]);
        }
    free(w->vtstate);
    free(w->canary_list), free(w->shadow_recs), free(w->shadow_ptrs), free(w->shadow_of);
    free(w->tstate);
    free(w->scratch);
    free(w->keys), free(w->key_ptrs), free(w->vals), free(w->leader), free(w->to_run);
    memset(w, 0, sizeof *w);
}

static void mark_fatal(struct nlpd_pipeline *p)
{
    pthread_mutex_lock(&p->lock);
    p->fatal = 1;
    pthread_mutex_unlock(&p->lock);
}

/* Runs one stage on recs[0..n), retrying once and then splitting on NLPD_STAGE_RETRY. */
static void run_stage(struct worker *w, struct stage_inst *s, void *tstate, struct nlpd_record **recs, size_t n,
                      int attempt)
{
    struct nlpd_batch b = {.n = n, .recs = recs};
    struct nlpd_error err = {0};
    enum nlpd_stage_status st = s->plugin->process(&s->inst, s->ctx, tstate, &b, &err);
    w->padded_tokens += b.padded_tokens;
    if (st == NLPD_STAGE_OK)
        return;
    const char *why = err.message[0] ? err.message : nlpd_strerror(err.code);
    if (st == NLPD_STAGE_RETRY) {
        if (attempt == 0) {
            run_stage(w, s, tstate, recs, n, 1);
        } else if (n > 1) {
            run_stage(w, s, tstate, recs, n / 2, 0);
            run_stage(w, s, tstate, recs + n / 2, n - n / 2, 0);
        } else {
            nlpd_record_fail(recs[0], s->name, "stage failed after retries: %s", why);
        }
        return;
    }
    nlpd_log(NLPD_LOG_ERR, s->name, "fatal stage error: %s", why);
    mark_fatal(w->p);
    for (size_t i = 0; i < n; i++)
        nlpd_record_fail(recs[i], s->name, "stage failed: %s", why);
}

static int grow_cache_arrays(struct worker *w, size_t n)
{
    if (n <= w->cache_cap)
        return 0;
    free(w->keys), free(w->key_ptrs), free(w->vals), free(w->leader), free(w->to_run);
    w->keys = malloc(n * sizeof *w->keys);
    w->key_ptrs = malloc(n * sizeof *w->key_ptrs);
    w->vals = malloc(n * sizeof *w->vals);
    w->leader = malloc(n * sizeof *w->leader);
    w->to_run = malloc(n * sizeof *w->to_run);
    w->cache_cap = w->keys && w->key_ptrs && w->vals && w->leader && w->to_run ? n : 0;
    return w->cache_cap ? 0 : -1;
}

/* key = stage name ":" sha256(key material, lang.code for stages after langid, text) */
static void cache_key(EVP_MD_CTX *md, const struct stage_inst *s, const struct nlpd_record *r, char out[80])
{
    unsigned char d[32];
    unsigned len = 0;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, s->key_material, strlen(s->key_material) + 1);
    const char *lang = r->lang.set && !(s->plugin->results & NLPD_RESULT_LANG) ? r->lang.code : "";
    EVP_DigestUpdate(md, lang, strlen(lang) + 1);
    EVP_DigestUpdate(md, r->text, r->text_len);
    EVP_DigestFinal_ex(md, d, &len);
    int n = snprintf(out, 80, "%.12s:", s->plugin->name);
    for (int i = 0; i < 32 && n + 2 < 80; i++, n += 2)
        snprintf(out + n, 3, "%02x", d[i]);
}

/* A cacheable stage: look every record up, run the stage on the distinct misses, store what it computed,
 * and give records with the same key as a computed one its result. */
static void run_cached(struct worker *w, struct stage_inst *s, void *tstate, struct nlpd_record **recs, size_t n)
{
    unsigned mask = s->plugin->results;
    EVP_MD_CTX *md = grow_cache_arrays(w, n) < 0 ? NULL : EVP_MD_CTX_new(); /* one context per batch */
    if (!md) {
        run_stage(w, s, tstate, recs, n, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        cache_key(md, s, recs[i], w->keys[i]);
        w->key_ptrs[i] = w->keys[i];
    }
    EVP_MD_CTX_free(md);
    nlpd_cache_mget(w->p->cache, w->key_ptrs, n, w->vals);
    size_t nrun = 0, hits = 0;
    for (size_t i = 0; i < n; i++) {
        w->leader[i] = -1;
        if (w->vals[i].data && nlpd_results_decode(recs[i], mask, w->vals[i].data, w->vals[i].len) == 0) {
            w->leader[i] = -2; /* served from the cache */
            hits++;
        } else {
            if (w->vals[i].data) /* computed again below, and stored over it */
                nlpd_cache_reject(w->p->cache, NLPD_CACHE_REJECT_INVALID, w->keys[i]);
            for (size_t j = 0; j < i; j++) /* duplicates inside the batch are computed once */
                if (w->leader[j] == -1 && strcmp(w->keys[j], w->keys[i]) == 0) {
                    w->leader[i] = (long)j;
                    break;
                }
            if (w->leader[i] == -1)
                w->to_run[nrun++] = recs[i];
        }
        free(w->vals[i].data);
        w->vals[i].data = NULL;
    }
    __atomic_add_fetch(&s->hits, hits, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->misses, n - hits, __ATOMIC_RELAXED);
    if (nrun)
        run_stage(w, s, tstate, w->to_run, nrun, 0);

    /* Store the computed results; hand them to the duplicates. */
    size_t nset = 0;
    struct nlpd_buf *bufs = nrun ? calloc(n, sizeof *bufs) : NULL;
    for (size_t i = 0; bufs && i < n; i++) {
        if (w->leader[i] != -1 || recs[i]->error)
            continue;
        nlpd_results_encode(recs[i], mask, &bufs[i]);
        if (bufs[i].oom)
            continue;
        w->key_ptrs[nset] = w->keys[i];
        w->vals[nset].data = (unsigned char *)bufs[i].data;
        w->vals[nset].len = bufs[i].len;
        nset++;
    }
    for (size_t i = 0; i < n; i++) {
        long j = w->leader[i];
        if (j < 0)
            continue;
        if (recs[j]->error)
            nlpd_record_fail(recs[i], s->name, "%s", recs[j]->error);
        else if (!bufs || !bufs[j].data ||
                 nlpd_results_decode(recs[i], mask, (unsigned char *)bufs[j].data, bufs[j].len) < 0)
            nlpd_record_fail(recs[i], s->name, "out of memory");
    }
    nlpd_cache_mset(w->p->cache, w->key_ptrs, w->vals, nset);
    for (size_t i = 0; bufs && i < n; i++)
        nlpd_buf_free(&bufs[i]);
    free(bufs);
    for (size_t i = 0; i < nset; i++)
        w->vals[i].data = NULL;
}

/* Whether a stage that declares result fields wrote one for this record (a stage may leave a record alone,
 * e.g. translate for a record already in the target language): only then do meta.models name its model. */
static int wrote_result(unsigned results, const struct nlpd_record *r)
{
    if (!results)
        return 1;
    return nlpd_results_any_set(results, r);
}

static void run_one(struct worker *w, struct stage_inst *s, void *tstate, struct nlpd_record **recs, size_t n)
{
    if (s->key_material && nlpd_cache_enabled(w->p->cache))
        run_cached(w, s, tstate, recs, n);
    else
        run_stage(w, s, tstate, recs, n, 0);
}

static int grow_mm_arrays(struct worker *w, size_t n)
{
    if (n <= w->mm_cap)
        return 0;
    free(w->canary_list), free(w->shadow_recs), free(w->shadow_ptrs), free(w->shadow_of);
    w->canary_list = malloc(n * sizeof *w->canary_list);
    w->shadow_recs = malloc(n * sizeof *w->shadow_recs);
    w->shadow_ptrs = malloc(n * sizeof *w->shadow_ptrs);
    w->shadow_of = malloc(n * sizeof *w->shadow_of);
    w->mm_cap = w->canary_list && w->shadow_recs && w->shadow_ptrs && w->shadow_of ? n : 0;
    return w->mm_cap ? 0 : -1;
}

/* Stage si on recs[0..n): with a canary, each record goes to the canary or the primary by the stable hash of its
 * canary key; recs is reordered (primary's first). */
static void run_models(struct worker *w, size_t si, struct nlpd_record **recs, size_t n)
{
    struct stage_inst *s = &w->p->stages[si];
    if (!s->canary) {
        run_one(w, s, w->tstate[si], recs, n);
        return;
    }
    if (grow_mm_arrays(w, n) < 0) {
        for (size_t i = 0; i < n; i++)
            nlpd_record_fail(recs[i], s->name, "out of memory");
        return;
    }
    size_t np = 0, nc = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *k = nlpd_mm_key_of(recs[i], s->canary_key, &len);
        if (nlpd_mm_in_fraction(nlpd_mm_hash(s->name, k, len), s->canary_fraction))
            w->canary_list[nc++] = recs[i];
        else
            recs[np++] = recs[i];
    }
    memcpy(recs + np, w->canary_list, nc * sizeof *recs);
    if (np)
        run_one(w, s, w->tstate[si], recs, np);
    if (nc)
        run_one(w, s->canary, w->vtstate[2 * si + 1], recs + np, nc);
    for (size_t i = np; i < n && si < 32; i++)
        recs[i]->canary_run |= 1u << si;
    __atomic_add_fetch(&s->mm->served_primary, np, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->mm->served_canary, nc, __ATOMIC_RELAXED);
}

/* The shadow of stage si: on the sampled records the primary served, into scratch records that hold the input
 * the stage read (text, lang), never into the records themselves; then compared with the primary's results.
 * While the input holds back for the pipeline the shadow is skipped (and counted): it is the first work to go. */
static void run_shadow(struct worker *w, size_t si, struct nlpd_record **recs, size_t n)
{
    struct stage_inst *s = &w->p->stages[si];
    unsigned mask = s->plugin->results;
    char salt[160];
    snprintf(salt, sizeof salt, "%s.shadow", s->name);
    if (grow_mm_arrays(w, n) < 0)
        return;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct nlpd_record *r = recs[i];
        if (r->error || (si < 32 && (r->canary_run & (1u << si))) || !wrote_result(mask, r))
            continue;
        if (s->shadow_sample < 1 && !nlpd_mm_in_fraction(nlpd_mm_hash(salt, r->text, r->text_len), s->shadow_sample))
            continue;
        w->shadow_of[m++] = r;
    }
    if (!m)
        return;
    if (__atomic_load_n(&w->p->pressure, __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&s->mm->shadow_skipped, m, __ATOMIC_RELAXED);
        return;
    }
    for (size_t i = 0; i < m; i++) {
        const struct nlpd_record *r = w->shadow_of[i];
        struct nlpd_record *t = &w->shadow_recs[i];
        memset(t, 0, sizeof *t);
        t->text = r->text, t->text_len = r->text_len;
        if (mask & NLPD_RESULT_TRANSLATION) /* the primary's translation now feeds r->text: read what it read */
            t->text = nlpd_record_input_text(r, &t->text_len);
        t->lang = r->lang;
        t->id = r->id, t->key = r->key, t->key_len = r->key_len, t->topic = r->topic;
        if (mask & NLPD_RESULT_LANG) /* langid's own result: the shadow writes it afresh */
            memset(&t->lang, 0, sizeof t->lang);
        w->shadow_ptrs[i] = t;
    }
    double t0 = nlpd_now();
    struct nlpd_batch b = {.n = m, .recs = w->shadow_ptrs};
    struct nlpd_error err = {0};
    enum nlpd_stage_status st =
        s->shadow->plugin->process(&s->shadow->inst, s->shadow->ctx, w->vtstate[2 * si], &b, &err);
    nlpd_histogram_observe(&s->mm->shadow_ms, (nlpd_now() - t0) * 1e3);
    if (st != NLPD_STAGE_OK) /* a shadow never fails the pipeline */
        nlpd_log(NLPD_LOG_WARNING, s->shadow->name, "shadow batch failed: %s",
                 err.message[0] ? err.message : nlpd_strerror(err.code));
    for (size_t i = 0; i < m; i++) {
        struct nlpd_record *t = &w->shadow_recs[i];
        if (st != NLPD_STAGE_OK || t->error)
            __atomic_add_fetch(&s->mm->shadow_failed, 1, __ATOMIC_RELAXED);
        else
            nlpd_mm_compare(s->mm, mask, w->shadow_of[i], t);
        nlpd_record_free_results(t);
        if (t->error && strcmp(t->error, "out of memory") != 0)
            free(t->error);
    }
}

static void run_chain(struct worker *w, struct nlpd_batch *batch)
{
    struct nlpd_pipeline *p = w->p;
    if (w->scratch_cap < batch->n) {
        free(w->scratch);
        w->scratch = malloc(batch->n * sizeof *w->scratch);
        w->scratch_cap = w->scratch ? batch->n : 0;
        if (!w->scratch) {
            for (size_t i = 0; i < batch->n; i++)
                nlpd_record_fail(batch->recs[i], "pipeline", "out of memory");
            return;
        }
    }
    nlpd_histogram_observe(&p->batch_records, (double)batch->n);
    /* before the stages: a slow model, whose batch meets the input as the wait left it (e.g. paused) */
    if (p->test_delay_ms > 0) {
        struct timespec ts = {p->test_delay_ms / 1000, p->test_delay_ms % 1000 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (size_t si = 0; si < p->nstages; si++) {
        size_t n = 0;
        for (size_t i = 0; i < batch->n; i++) {
            struct nlpd_record *r = batch->recs[i];
            if (!r->error && (!p->stages[si].when || nlpd_when_eval(p->stages[si].when, r)))
                w->scratch[n++] = r;
        }
        double t0 = n ? nlpd_now() : 0;
        w->padded_tokens = 0;
        if (n)
            run_models(w, si, w->scratch, n);
        if (n)
            nlpd_histogram_observe(&p->stages[si].compute_ms, (nlpd_now() - t0) * 1e3);
        if (w->padded_tokens)
            nlpd_histogram_observe(&p->stages[si].padded_tokens, (double)w->padded_tokens);
        for (size_t i = 0; i < n; i++)
            if (!w->scratch[i]->error && wrote_result(p->stages[si].plugin->results, w->scratch[i])) {
                if (si < 32)
                    w->scratch[i]->stages_run |= 1u << si;
                if (p->stages[si].plugin->results)
                    nlpd_mm_observe(p->stages[si].mm, p->stages[si].plugin->results, w->scratch[i]);
            }
        if (n && p->stages[si].shadow)
            run_shadow(w, si, w->scratch, n);
    }
}

struct nlpd_chain {
    struct worker *w;
};

void nlpd_chain_run(struct nlpd_chain *chain, struct nlpd_batch *batch)
{
    run_chain(chain->w, batch);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct nlpd_pipeline *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->changed, &p->lock);
        struct nlpd_job *job = p->head;
        if (!job) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        p->head = job->next;
        if (!p->head)
            p->tail = NULL;
        int was_full = p->queued-- >= p->queue_cap;
        void (*on_space)(void *) = was_full ? p->on_space : NULL;
        void *space_user = p->on_space_user;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
        if (on_space)
            on_space(space_user);

        /* With a run hook the job belongs to it: it may be freed before the hook returns. */
        if (job->run) {
            struct nlpd_chain chain = {w};
            job->run(job, &chain);
            continue;
        }
        run_chain(w, &job->batch);
        pthread_mutex_lock(&p->lock);
        job->done = 1;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
    }
}

int nlpd_pipeline_start(struct nlpd_pipeline *p, int threads, struct nlpd_error *err)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    p->workers = calloc((size_t)threads, sizeof *p->workers);
    if (!p->workers)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    p->queue_cap = (size_t)threads * 2;
    for (int i = 0; i < threads; i++) {
        if (worker_init(p, &p->workers[i]) < 0) {
            worker_fini(&p->workers[i]);
            nlpd_pipeline_stop(p);
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cannot set up worker %d", i);
        }
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            worker_fini(&p->workers[i]);
            nlpd_pipeline_stop(p);
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cannot start worker thread %d", i);
        }
        p->nworkers++;
    }
    return 0;
}

static void enqueue(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->queued++;
    pthread_cond_broadcast(&p->changed);
}

void nlpd_pipeline_submit(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    NLPD_ASSERT(p->nworkers > 0);
    job->done = 0;
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    while (p->queued >= p->queue_cap)
        pthread_cond_wait(&p->changed, &p->lock);
    enqueue(p, job);
    pthread_mutex_unlock(&p->lock);
}

int nlpd_pipeline_try_submit(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    NLPD_ASSERT(p->nworkers > 0);
    job->done = 0;
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    int full = p->queued >= p->queue_cap;
    if (!full)
        enqueue(p, job);
    pthread_mutex_unlock(&p->lock);
    return full ? NLPD_EAGAIN : 0;
}

void nlpd_pipeline_on_space(struct nlpd_pipeline *p, void (*fn)(void *user), void *user)
{
    pthread_mutex_lock(&p->lock);
    p->on_space = fn;
    p->on_space_user = user;
    pthread_mutex_unlock(&p->lock);
}

void nlpd_pipeline_queue(struct nlpd_pipeline *p, size_t *queued, size_t *cap)
{
    pthread_mutex_lock(&p->lock);
    *queued = p->queued;
    *cap = p->queue_cap;
    pthread_mutex_unlock(&p->lock);
}

void nlpd_pipeline_wait(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    pthread_mutex_lock(&p->lock);
    while (!job->done)
        pthread_cond_wait(&p->changed, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

void nlpd_pipeline_run_inline(struct nlpd_pipeline *p, struct nlpd_batch *batch)
{
    if (!p->inline_worker.p && worker_init(p, &p->inline_worker) < 0) {
        worker_fini(&p->inline_worker);
        for (size_t i = 0; i < batch->n; i++)
            nlpd_record_fail(batch->recs[i], "pipeline", "out of memory");
        return;
    }
    run_chain(&p->inline_worker, batch);
}

void nlpd_pipeline_stop(struct nlpd_pipeline *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++) {
        pthread_join(p->workers[i].thread, NULL);
        worker_fini(&p->workers[i]);
    }
    free(p->workers);
    p->workers = NULL;
    p->nworkers = 0;
}

void nlpd_pipeline_free(struct nlpd_pipeline *p)
{
    if (!p)
        return;
    if (p->nworkers)
        nlpd_pipeline_stop(p);
    worker_fini(&p->inline_worker);
    for (size_t i = 0; i < p->nstages; i++)
        stage_inst_free(&p->stages[i]);
    free(p->stages);
    free(p->models);
    nlpd_cache_free(p->cache);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->changed);
    free(p);
}

static void stage_inst_free(struct stage_inst *s)
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
            stage_inst_free(v);
            free(v);
        }
    }
    if (s->mm) {
        nlpd_mm_stage_fini(s->mm);
        free(s->mm);
    }
}

void nlpd_pipeline_set_pressure(struct nlpd_pipeline *p, int on)
{
    __atomic_store_n(&p->pressure, on, __ATOMIC_RELAXED);
}

void nlpd_pipeline_take_cache(struct nlpd_pipeline *to, struct nlpd_pipeline *from)
{
    if (!from->cache)
        return;
    if (to->cache)
        nlpd_cache_swap_key(from->cache, to->cache);
    nlpd_cache_free(to->cache);
    to->cache = from->cache;
    from->cache = NULL;
}

int nlpd_pipeline_failed(struct nlpd_pipeline *p)
{
    pthread_mutex_lock(&p->lock);
    int fatal = p->fatal;
    pthread_mutex_unlock(&p->lock);
    return fatal;
}

size_t nlpd_pipeline_cache_stats(struct nlpd_pipeline *p, struct nlpd_stage_cache_stats *out, size_t cap,
                                 struct nlpd_cache_stats *total)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nstages && n < cap; i++) {
        if (!p->stages[i].key_material)
            continue;
        out[n].stage = p->stages[i].name;
        out[n].hits = __atomic_load_n(&p->stages[i].hits, __ATOMIC_RELAXED);
        out[n].misses = __atomic_load_n(&p->stages[i].misses, __ATOMIC_RELAXED);
        n++;
    }
    if (total)
        nlpd_cache_get_stats(p->cache, total);
    return nlpd_cache_enabled(p->cache) ? n : 0;
}

/* nlpd_model_info: every loaded model, the shadow's and the canary's too, with where it came from. */
static void model_info_metrics(struct nlpd_pipeline *p, struct nlpd_buf *out)
{
    static const char *const roles[] = {"primary", "shadow", "canary"};
    nlpd_metric_head(out, "nlpd_model_info", "gauge",
                     "Model of each stage (role primary, shadow or canary), with its sha256 digest and provenance");
    for (size_t i = 0; i < p->nstages; i++)
        for (int k = 0; k < 3; k++) {
            const struct stage_inst *v = k == 0 ? &p->stages[i] : k == 1 ? p->stages[i].shadow : p->stages[i].canary;
            if (!v || !v->model_id)
                continue;
            nlpd_model_info_line(p->stages[i].name, roles[k], v->model_id, v->model_path, out);
        }
}

size_t nlpd_pipeline_shadow_stats(struct nlpd_pipeline *p, struct nlpd_shadow_stats *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nstages && n < cap; i++) {
        const struct nlpd_mm_stage *m = p->stages[i].mm;
        if (!p->stages[i].shadow || !m)
            continue;
        out[n++] = (struct nlpd_shadow_stats){p->stages[i].name, __atomic_load_n(&m->agree, __ATOMIC_RELAXED),
                                              __atomic_load_n(&m->disagree, __ATOMIC_RELAXED),
                                              __atomic_load_n(&m->shadow_skipped, __ATOMIC_RELAXED),
                                              __atomic_load_n(&m->shadow_failed, __ATOMIC_RELAXED)};
    }
    return n;
}

void nlpd_pipeline_models_print(struct nlpd_pipeline *p, FILE *f)
{
    static const char *const roles[] = {"primary", "shadow", "canary"};
    for (size_t i = 0; i < p->nstages; i++)
        for (int k = 0; k < 3; k++) {
            const struct stage_inst *v = k == 0 ? &p->stages[i] : k == 1 ? p->stages[i].shadow : p->stages[i].canary;
            if (v && v->model_id)
                nlpd_model_info_print(f, p->stages[i].name, roles[k], v->model_id, v->model_path);
        }
}

void nlpd_pipeline_metrics(struct nlpd_pipeline *p, struct nlpd_buf *out)
{
    char labels[160], esc[128]; /* esc: a stage name as a label value */
    nlpd_metric_head(out, "nlpd_stage_batch_seconds", "histogram",
                     "Time a stage spends on one micro-batch (cache lookups included), in seconds");
    for (size_t i = 0; i < p->nstages; i++) {
        snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, p->stages[i].name));
        nlpd_histogram_write(&p->stages[i].compute_ms, "nlpd_stage_batch_seconds", labels, 1e-3, out);
    }
    nlpd_metric_head(out, "nlpd_batch_records", "histogram", "Records per micro-batch");
    nlpd_histogram_write(&p->batch_records, "nlpd_batch_records", "", 1.0, out);
    nlpd_metric_head(out, "nlpd_stage_batch_padded_tokens", "histogram",
                     "Padded tokens a transformer stage ran on per micro-batch (sequences x padded length)");
    for (size_t i = 0; i < p->nstages; i++) {
        if (!__atomic_load_n(&p->stages[i].padded_tokens.count, __ATOMIC_ACQUIRE))
            continue; /* stages without a padded model never report */
        snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, p->stages[i].name));
        nlpd_histogram_write(&p->stages[i].padded_tokens, "nlpd_stage_batch_padded_tokens", labels, 1.0, out);
    }
    model_info_metrics(p, out);
    struct nlpd_mm_stage *mms[64];
    size_t nmm = 0;
    for (size_t i = 0; i < p->nstages && nmm < 64; i++)
        if (p->stages[i].mm && p->stages[i].plugin->results)
            mms[nmm++] = p->stages[i].mm;
    nlpd_mm_metrics(mms, nmm, out);
    if (!nlpd_cache_enabled(p->cache))
        return;
    nlpd_metric_head(out, "nlpd_cache_hits_total", "counter", "Stage results served from the cache");
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].key_material)
            nlpd_buf_printf(out, "nlpd_cache_hits_total{stage=\"%s\"} %llu\n",
                            nlpd_metric_label(esc, sizeof esc, p->stages[i].name),
                            (unsigned long long)__atomic_load_n(&p->stages[i].hits, __ATOMIC_RELAXED));
    nlpd_metric_head(out, "nlpd_cache_misses_total", "counter", "Stage results computed (not in the cache)");
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].key_material)
            nlpd_buf_printf(out, "nlpd_cache_misses_total{stage=\"%s\"} %llu\n",
                            nlpd_metric_label(esc, sizeof esc, p->stages[i].name),
                            (unsigned long long)__atomic_load_n(&p->stages[i].misses, __ATOMIC_RELAXED));
    struct nlpd_cache_stats st;
    nlpd_cache_get_stats(p->cache, &st);
    nlpd_metric_head(out, "nlpd_cache_errors_total", "counter", "Failed cache lookups and stores");
    nlpd_buf_printf(out, "nlpd_cache_errors_total %llu\n", (unsigned long long)st.errors);
    nlpd_metric_head(out, "nlpd_cache_lookup_seconds_total", "counter", "Time spent in cache lookups");
    nlpd_buf_printf(out, "nlpd_cache_lookup_seconds_total %.6f\n", st.lookup_seconds);
    nlpd_metric_head(out, "nlpd_cache_rejected_total", "counter",
                     "Cached values refused (computed again): invalid encoding, or HMAC tag missing or wrong");
    for (size_t i = 0; i < sizeof st.rejected / sizeof st.rejected[0]; i++)
        nlpd_buf_printf(out, "nlpd_cache_rejected_total{reason=\"%s\"} %llu\n", nlpd_cache_reject_names[i],
                        (unsigned long long)st.rejected[i]);
    nlpd_metric_head(out, "nlpd_cache_breaker_open", "gauge", "1 while the Redis circuit breaker is open");
    nlpd_buf_printf(out, "nlpd_cache_breaker_open %d\n", st.breaker_open ? 1 : 0);
}

int nlpd_pipeline_threads(const struct nlpd_pipeline *p)
{
    return p->nworkers;
}

const struct nlpd_model_ref *nlpd_pipeline_models(const struct nlpd_pipeline *p, size_t *n)
{
    *n = p->nmodels;
    return p->models;
}
