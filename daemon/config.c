/* Daemon configuration: parsing, type checks and defaults of the top-level sections (see config.h). */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conf_map.h"
#include "log.h"

static const struct nlpd_conf_entry input_map[] = {
    {"format", NLPD_CONF_ENUM, "json", offsetof(struct nlpd_input_conf, format), 0, "json", 0, 0,
     "record format: \"json\" (one JSON object per record; Avro arrives with the Kafka daemon)"},
    {"text_field", NLPD_CONF_STRING, "text", offsetof(struct nlpd_input_conf, text_field), 0, NULL, 0, 0,
     "field holding the text; a dotted path (\"payload.body\") walks nested objects"},
    {"id_field", NLPD_CONF_STRING, "id", offsetof(struct nlpd_input_conf, id_field), 0, NULL, 0, 0,
     "field holding the record id (string or number; dotted path allowed); copied to the output's \"id\""},
    {"max_text_bytes", NLPD_CONF_INT, "1048576", offsetof(struct nlpd_input_conf, max_text_bytes), 0, NULL, 1,
     1073741824, "longest text accepted, in bytes; a longer one is a per-record error"},
    {0},
};

static const struct nlpd_conf_entry batch_map[] = {
    {"max_records", NLPD_CONF_INT, "64", offsetof(struct nlpd_batch_conf, max_records), 0, NULL, 1, 65536,
     "a micro-batch closes when it holds this many records"},
    {"max_tokens", NLPD_CONF_INT, "8192", offsetof(struct nlpd_batch_conf, max_tokens), 0, NULL, 1, 1 << 24,
     "padded-token budget of a batch for transformer stages (fastText stages ignore it)"},
    {"max_wait_ms", NLPD_CONF_INT, "10", offsetof(struct nlpd_batch_conf, max_wait_ms), 0, NULL, 0, 60000,
     "a micro-batch closes this long after its first record arrived, full or not"},
    {0},
};

static const struct nlpd_conf_entry kernels_map[] = {
    {"backend", NLPD_CONF_ENUM, "auto", offsetof(struct nlpd_kernels_conf, backend), 0, "auto|cpu", 0, 0,
     "compute backend: \"auto\" or \"cpu\" (CUDA arrives with the CUDA backend)"},
    {"threads", NLPD_CONF_INT, "0", offsetof(struct nlpd_kernels_conf, threads), 0, NULL, 0, 1024,
     "worker threads running stage chains on batches; 0 = one per online CPU"},
    {0},
};

static const struct nlpd_conf_entry log_map[] = {
    {"level", NLPD_CONF_ENUM, "info", offsetof(struct nlpd_log_conf, level), 0, "err|warning|notice|info|debug", 0,
     0, "lowest priority logged"},
    {"format", NLPD_CONF_ENUM, "text", offsetof(struct nlpd_log_conf, format), 0, "text|json", 0, 0,
     "\"text\": journald priority prefixes on stderr; \"json\": one JSON object per line"},
    {0},
};

static const char *const top_keys[] = {"input", "batch", "kernels", "log", "pipeline", NULL};

static void release_sections(struct nlpd_config *c)
{
    nlpd_conf_release(input_map, &c->input);
    nlpd_conf_release(batch_map, &c->batch);
    nlpd_conf_release(kernels_map, &c->kernels);
    nlpd_conf_release(log_map, &c->log);
}

static int validate(struct nlpd_config *c, struct nlpd_diag *diag)
{
    const config_setting_t *root = config_root_setting(&c->cfg);
    int errors = 0;
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        int known = 0;
        for (const char *const *k = top_keys; *k && !known; k++)
            known = strcmp(*k, name) == 0;
        if (!known) {
            nlpd_diag_add(diag, nlpd_conf_file(s, c->path), config_setting_source_line(s),
                          "unknown key '%s' at top level (this build knows input, batch, kernels, log, pipeline)",
                          name);
            errors++;
        }
    }
    errors += nlpd_conf_apply(input_map, config_lookup(&c->cfg, "input"), &c->input, NULL, "input", c->path, diag);
    errors += nlpd_conf_apply(batch_map, config_lookup(&c->cfg, "batch"), &c->batch, NULL, "batch", c->path, diag);
    errors += nlpd_conf_apply(kernels_map, config_lookup(&c->cfg, "kernels"), &c->kernels, NULL, "kernels", c->path,
                              diag);
    errors += nlpd_conf_apply(log_map, config_lookup(&c->cfg, "log"), &c->log, NULL, "log", c->path, diag);

    for (const char *const *f = (const char *const[]){c->input.text_field, c->input.id_field, NULL}; *f; f++) {
        const char *p = *f;
        if (!*p || p[0] == '.' || p[strlen(p) - 1] == '.' || strstr(p, "..")) {
            const config_setting_t *s = config_lookup(&c->cfg, "input");
            nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0,
                          "input: field path \"%s\" is not a valid dotted path", p);
            errors++;
        }
    }

    const config_setting_t *pl = config_lookup(&c->cfg, "pipeline");
    if (!pl) {
        nlpd_diag_add(diag, c->path, 0, "missing 'pipeline' (a list of stages, e.g. pipeline = ( { stage = \"langid\"; model = \"models/lid.176.ftz\"; } );)");
        errors++;
    } else if (config_setting_type(pl) != CONFIG_TYPE_LIST) {
        nlpd_diag_add(diag, nlpd_conf_file(pl, c->path), config_setting_source_line(pl),
                      "pipeline must be a list ( { stage = ...; }, ... )");
        errors++;
    } else if (config_setting_length(pl) == 0) {
        nlpd_diag_add(diag, nlpd_conf_file(pl, c->path), config_setting_source_line(pl),
                      "pipeline is empty: name at least one stage");
        errors++;
    } else {
        c->pipeline = pl;
    }
    return errors;
}

static struct nlpd_config *finish(struct nlpd_config *c, int parsed, int keep_invalid, struct nlpd_diag *diag)
{
    if (!parsed) {
        const char *f = config_error_file(&c->cfg);
        nlpd_diag_add(diag, f ? nlpd_conf_path_of(f, c->path) : c->path, config_error_line(&c->cfg), "%s",
                      config_error_text(&c->cfg));
        nlpd_config_free(c);
        return NULL;
    }
    if (validate(c, diag) > 0 && !keep_invalid) {
        nlpd_config_free(c);
        return NULL;
    }
    return c;
}

static struct nlpd_config *config_new(const char *name)
{
    struct nlpd_config *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->path = strdup(name);
    config_init(&c->cfg);
    config_set_auto_convert(&c->cfg, 0);
    return c;
}

static struct nlpd_config *load_file(const char *path, int keep_invalid, struct nlpd_diag *diag)
{
    struct nlpd_config *c = config_new(path);
    if (!c)
        return NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        nlpd_diag_add(diag, path, 0, "cannot open: %m");
        nlpd_config_free(c);
        return NULL;
    }
    fclose(f);
    /* Relative @include paths resolve against the config file's folder. */
    char *dir = strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        config_set_include_dir(&c->cfg, dir);
    }
    free(dir);
    return finish(c, config_read_file(&c->cfg, path) == CONFIG_TRUE, keep_invalid, diag);
}

struct nlpd_config *nlpd_config_load(const char *path, struct nlpd_diag *diag)
{
    return load_file(path, 0, diag);
}

struct nlpd_config *nlpd_config_load_all(const char *path, struct nlpd_diag *diag)
{
    return load_file(path, 1, diag);
}

struct nlpd_config *nlpd_config_load_string(const char *text, const char *name, struct nlpd_diag *diag)
{
    struct nlpd_config *c = config_new(name);
    if (!c)
        return NULL;
    return finish(c, config_read_string(&c->cfg, text) == CONFIG_TRUE, 0, diag);
}

void nlpd_config_free(struct nlpd_config *c)
{
    if (!c)
        return;
    release_sections(c);
    config_destroy(&c->cfg);
    free(c->path);
    free(c);
}

void nlpd_config_doc(FILE *out)
{
    nlpd_conf_doc(input_map, "input", out);
    nlpd_conf_doc(batch_map, "batch", out);
    nlpd_conf_doc(kernels_map, "kernels", out);
    nlpd_conf_doc(log_map, "log", out);
}
