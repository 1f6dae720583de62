/* Model provenance (see model_info.h): read from the model's own files, never from the network. */
#include "model_info.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "metrics.h"

static void copy(char *dst, size_t cap, const char *s)
{
    size_t n = s ? strnlen(s, cap - 1) : 0;
    if (n)
        memcpy(dst, s, n);
    dst[n] = '\0';
}

static void from_config(const char *dir, struct nlpd_model_provenance *o)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *c = json_load_file(path, 0, NULL);
    if (!c)
        return;
    json_t *a = json_object_get(c, "architectures");
    if (json_is_array(a) && json_is_string(json_array_get(a, 0)))
        copy(o->arch, sizeof o->arch, json_string_value(json_array_get(a, 0)));
    else if (json_is_string(json_object_get(c, "model_type")))
        copy(o->arch, sizeof o->arch, json_string_value(json_object_get(c, "model_type")));
    copy(o->dtype, sizeof o->dtype, json_string_value(json_object_get(c, "torch_dtype")));
    copy(o->source, sizeof o->source, json_string_value(json_object_get(c, "_name_or_path")));
    copy(o->revision, sizeof o->revision, json_string_value(json_object_get(c, "_commit_hash")));
    json_t *labels = json_object_get(c, "id2label");
    size_t n = json_is_object(labels) ? json_object_size(labels) : 0, at = 0;
    for (size_t i = 0; i < n && at < sizeof o->labels; i++) {
        char k[24];
        snprintf(k, sizeof k, "%zu", i);
        const char *l = json_string_value(json_object_get(labels, k));
        at += (size_t)snprintf(o->labels + at, sizeof o->labels - at, "%s%s", i ? "," : "", l ? l : "?");
    }
    json_decref(c);
}

/* A model card's YAML front matter: `base_model: x` (or the first `- x` under it). */
static void from_readme(const char *dir, struct nlpd_model_provenance *o)
{
    char path[4096], line[512];
    snprintf(path, sizeof path, "%s/README.md", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    int in_front = 0, in_base = 0;
    for (int n = 0; n < 200 && fgets(line, sizeof line, f); n++) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!strcmp(line, "---")) {
            if (in_front)
                break;
            in_front = 1;
            continue;
        }
        if (!in_front)
            break;
        const char *v = NULL;
        if (!strncmp(line, "base_model:", 11))
            v = line + 11, in_base = 1;
        else if (in_base && !strncmp(line, "- ", 2))
            v = line + 2;
        else
            in_base = 0;
        while (v && *v == ' ')
            v++;
        if (v && *v) {
            copy(o->source, sizeof o->source, v);
            break;
        }
    }
    fclose(f);
}

void nlpd_model_provenance(const char *path, struct nlpd_model_provenance *o)
{
    memset(o, 0, sizeof *o);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        from_config(path, o);
        if (!o->source[0])
            from_readme(path, o);
    } else {
        size_t n = strlen(path);
        if ((n > 4 && !strcmp(path + n - 4, ".ftz")) || (n > 4 && !strcmp(path + n - 4, ".bin")))
            copy(o->arch, sizeof o->arch, "fasttext");
    }
    if (!o->source[0])
        copy(o->source, sizeof o->source, path);
}

void nlpd_model_info_line(const char *stage, const char *role, const char *id, const char *path, struct nlpd_buf *out)
{
    struct nlpd_model_provenance pv;
    nlpd_model_provenance(path ? path : "", &pv);
    char a[128], b[512], c[128], d[64], e[256], f[64], g[64];
    nlpd_buf_printf(out,
                    "nlpd_model_info{stage=\"%s\",model=\"%s\",role=\"%s\",architecture=\"%s\",dtype=\"%s\","
                    "source=\"%s\",revision=\"%s\"} 1\n",
                    nlpd_metric_label(a, sizeof a, stage), nlpd_metric_label(b, sizeof b, id),
                    nlpd_metric_label(g, sizeof g, role), nlpd_metric_label(c, sizeof c, pv.arch),
                    nlpd_metric_label(d, sizeof d, pv.dtype), nlpd_metric_label(e, sizeof e, pv.source),
                    nlpd_metric_label(f, sizeof f, pv.revision));
}

void nlpd_model_info_print(FILE *f, const char *stage, const char *role, const char *id, const char *path)
{
    struct nlpd_model_provenance pv;
    nlpd_model_provenance(path ? path : "", &pv);
    fprintf(f,
            "%s (%s)\n  model:        %s\n  path:         %s\n  architecture: %s\n  dtype:        %s\n"
            "  labels:       %s\n  source:       %s%s%s\n",
            stage, role, id, path ? path : "", pv.arch[0] ? pv.arch : "-", pv.dtype[0] ? pv.dtype : "-",
            pv.labels[0] ? pv.labels : "-", pv.source, pv.revision[0] ? " @ " : "", pv.revision);
}
