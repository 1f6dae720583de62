/* Confluent Schema Registry client (see schema_registry.h): the REST subset nlpd uses (GET /schemas/ids/{id},
 * POST /subjects/{subject}/versions, POST /subjects/{subject}, GET /subjects as a reachability probe) through
 * libcurl, process-wide caches of what the registry answered, and per-decoder writer -> reader resolvers. */
#include "schema_registry.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf_map.h"
#include "log.h"

#define MAX_RESPONSE (16 << 20) /* a schema is kilobytes; a bigger answer is not the registry's */
#define BACKOFF_S    1.0        /* after a failed request, unknown ids fail at once for this long */

/* ---- configuration ---- */

#define SR_COMMON_KEYS                                                                                                 \
    {"url",                                                                                                            \
     NLPD_CONF_STRING,                                                                                                 \
     NULL,                                                                                                             \
     offsetof(struct nlpd_sr_conf, url),                                                                               \
     NLPD_CONF_REQUIRED,                                                                                               \
     NULL,                                                                                                             \
     0,                                                                                                                \
     0,                                                                                                                \
     "base URL of the Confluent Schema Registry (http:// or https://), e.g. \"http://registry:8081\""},                \
        {"basic_auth",                                                                                                 \
         NLPD_CONF_STRING,                                                                                             \
         "",                                                                                                           \
         offsetof(struct nlpd_sr_conf, basic_auth),                                                                    \
         0,                                                                                                            \
         NULL,                                                                                                         \
         0,                                                                                                            \
         0,                                                                                                            \
         "HTTP basic authentication \"user:password\" (\"\": none)"},                                                  \
        {"basic_auth_file",                                                                                            \
         NLPD_CONF_PATH,                                                                                               \
         NULL,                                                                                                         \
         offsetof(struct nlpd_sr_conf, basic_auth_file),                                                               \
         0,                                                                                                            \
         NULL,                                                                                                         \
         0,                                                                                                            \
         0,                                                                                                            \
         "file holding basic_auth instead (one line \"user:password\"; must not be readable by others)"},              \
    {                                                                                                                  \
        "timeout_ms", NLPD_CONF_INT, "5000", offsetof(struct nlpd_sr_conf, timeout_ms), 0, NULL, 100, 600000,          \
            "deadline of one registry request (connection included)"                                                   \
    }

static const struct nlpd_conf_entry input_sr_map[] = {SR_COMMON_KEYS, {0}};

static const struct nlpd_conf_entry output_sr_map[] = {
    SR_COMMON_KEYS,
    {"subject", NLPD_CONF_STRING, NULL, offsetof(struct nlpd_sr_conf, subject), 0, NULL, 0, 0,
     "subject the output schema is registered under (default: TopicNameStrategy, \"<kafka.output_topic>-value\")"},
    {"auto_register", NLPD_CONF_BOOL, "true", offsetof(struct nlpd_sr_conf, auto_register), 0, NULL, 0, 0,
     "register output.schema under the subject at start (an identical schema already there keeps its id); false: "
     "only look it up (POST /subjects/{subject}), and fail at start when it is not registered"},
    {0},
};

static const struct nlpd_conf_entry *map_of(const char *section)
{
    return strcmp(section, "output") == 0 ? output_sr_map : input_sr_map;
}

int nlpd_sr_conf_apply(const config_setting_t *parent, struct nlpd_sr_conf *c, const char *section, const char *file,
                       struct nlpd_diag *diag)
{
    const config_setting_t *g = parent ? config_setting_get_member(parent, "schema_registry") : NULL;
    memset(c, 0, sizeof *c);
    if (!g)
        return 0;
    char name[64];
    snprintf(name, sizeof name, "%s.schema_registry", section);
    int errors = nlpd_conf_apply(map_of(section), g, c, NULL, name, file, diag);
    c->set = 1;
    if (c->url && strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0) {
        nlpd_diag_add(diag, nlpd_conf_file(g, file), config_setting_source_line(g),
                      "%s.url \"%s\": not an http:// or https:// URL", name, c->url);
        errors++;
    }
    if (c->basic_auth && *c->basic_auth && c->basic_auth_file) {
        nlpd_diag_add(diag, nlpd_conf_file(g, file), config_setting_source_line(g),
                      "%s: set basic_auth or basic_auth_file, not both", name);
        errors++;
    }
    return errors;
}

void nlpd_sr_conf_release(struct nlpd_sr_conf *c)
{
    nlpd_conf_release(output_sr_map, c); /* a superset of the input's keys */
}

int nlpd_sr_conf_equal(const struct nlpd_sr_conf *a, const struct nlpd_sr_conf *b)
{
    if (a->set != b->set)
        return 0;
    for (const struct nlpd_conf_entry *e = output_sr_map; e->type != NLPD_CONF_END; e++)
        if (!nlpd_conf_equal(e, a, b))
            return 0;
    return 1;
}

void nlpd_sr_conf_doc(const char *section, FILE *out)
{
    char name[64];
    snprintf(name, sizeof name, "%s.schema_registry", section);
    nlpd_conf_doc(map_of(section), name, out);
}

/* ---- HTTP ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void curl_init(void)
{
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct body {
    char *data;
    size_t len;
    int over;
};

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
    struct body *b = user;
    size_t k = size * n;
    if (b->len + k > MAX_RESPONSE) {
        b->over = 1;
        return 0;
    }
    char *nd = realloc(b->data, b->len + k + 1);
    if (!nd)
        return 0;
    memcpy(nd + b->len, p, k);
    b->len += k;
    nd[b->len] = '\0';
    b->data = nd;
    return k;
}

/* "user:password" from basic_auth or its file (which others must not read). Never logged. */
static int credentials(const struct nlpd_sr_conf *c, char *out, size_t cap, struct nlpd_error *err)
{
    out[0] = '\0';
    if (!c->basic_auth_file) {
        if (c->basic_auth && strlen(c->basic_auth) >= cap)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "schema_registry.basic_auth is too long");
        snprintf(out, cap, "%s", c->basic_auth ? c->basic_auth : "");
        return 0;
    }
    int fd = open(c->basic_auth_file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int en = errno;
        if (fd >= 0)
            close(fd);
        return nlpd_error_set(err, NLPD_EINVAL, 0, "schema_registry.basic_auth_file %s: %s", c->basic_auth_file,
                              strerror(en));
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        close(fd);
        return nlpd_error_set(err, NLPD_EINVAL, 0,
                              "schema_registry.basic_auth_file %s is readable or writable by others (chmod o-rw %s)",
                              c->basic_auth_file, c->basic_auth_file);
    }
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0 || (size_t)n == cap - 1)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "schema_registry.basic_auth_file %s: %s", c->basic_auth_file,
                              n < 0 ? "cannot read it" : "too long");
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        n--;
    out[n] = '\0';
    if (!strchr(out, ':'))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "schema_registry.basic_auth_file %s: not \"user:password\"",
                              c->basic_auth_file);
    return 0;
}

/* One request; *json gets the parsed answer of a 2xx. Errors: NLPD_EAGAIN (retriable) when the registry cannot be
 * reached or answers 5xx, NLPD_ENOTFOUND on 404, NLPD_EINVAL otherwise; the message has the registry's own. */
static int request(const struct nlpd_sr_conf *c, const char *method, const char *path, const char *payload,
                   json_t **json, struct nlpd_error *err)
{
    *json = NULL;
    pthread_once(&curl_once, curl_init);
    if (!curl_ok)
        return nlpd_error_set(err, NLPD_EFATAL, 0, "schema registry: libcurl cannot be initialised");
    char auth[1024], url[2048], cerr[CURL_ERROR_SIZE] = "";
    int rc = credentials(c, auth, sizeof auth, err);
    if (rc < 0)
        return rc;
    size_t ul = strlen(c->url);
    while (ul > 0 && c->url[ul - 1] == '/')
        ul--;
    snprintf(url, sizeof url, "%.*s%s", (int)ul, c->url, path);
    CURL *h = curl_easy_init();
    if (!h)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "schema registry: out of memory");
    struct body b = {0};
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/vnd.schemaregistry.v1+json, "
                                                      "application/json");
    if (payload)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/vnd.schemaregistry.v1+json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* called from worker threads */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "nlpd");
    if (*auth) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERPWD, auth);
    }
    if (payload) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    memset(auth, 0, sizeof auth);
    if (cc != CURLE_OK) {
        rc = nlpd_error_set(err, b.over ? NLPD_EFORMAT : NLPD_EAGAIN, !b.over, "schema registry %s %s%s: %s", method,
                            c->url, path,
                            b.over  ? "answer over 16 MiB"
                            : *cerr ? cerr
                                    : curl_easy_strerror(cc));
        free(b.data);
        return rc;
    }
    json_error_t je;
    json_t *j = b.data ? json_loadb(b.data, b.len, 0, &je) : NULL;
    if (status < 200 || status >= 300) {
        const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
        int code = status == 404 ? NLPD_ENOTFOUND : status >= 500 || status == 429 ? NLPD_EAGAIN : NLPD_EINVAL;
        rc = nlpd_error_set(err, code, code == NLPD_EAGAIN, "schema registry %s %s%s: HTTP %ld%s%s", method, c->url,
                            path, status, msg ? ": " : "", msg ? msg : "");
    } else if (!j) {
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "schema registry %s %s%s: the answer is not JSON", method, c->url,
                            path);
    } else {
        *json = j;
        j = NULL;
    }
    json_decref(j);
    free(b.data);
    return rc;
}

/* ---- process-wide caches: what the registry answered, by URL ---- */

struct known_id {
    char *url;
    int32_t id;
    char *schema;
};

struct known_subject {
    char *url, *subject, *schema;
    int32_t id;
};

struct down {
    char *url;
    double until;
    char why[NLPD_ERROR_MSG_MAX];
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct known_id *ids;
static size_t nids;
static struct known_subject *subjects;
static size_t nsubjects;
static struct down *downs;
static size_t ndowns;
static char **probed;
static size_t nprobed;

/* Room for element n (the caches hold a few schemas: one realloc each is fine). */
static int grow(void **arr, size_t n, size_t size)
{
    void *na = realloc(*arr, (n + 1) * size);
    if (!na)
        return -1;
    *arr = na;
    return 0;
}

/* Under cache_lock: the outage record of url (created when create). */
static struct down *down_of(const char *url, int create)
{
    for (size_t i = 0; i < ndowns; i++)
        if (strcmp(downs[i].url, url) == 0)
            return &downs[i];
    if (!create || grow((void **)&downs, ndowns, sizeof *downs) < 0)
        return NULL;
    downs[ndowns] = (struct down){.url = strdup(url)};
    return downs[ndowns].url ? &downs[ndowns++] : NULL;
}

static void note_result(const char *url, int rc, const struct nlpd_error *e)
{
    pthread_mutex_lock(&cache_lock);
    struct down *d = down_of(url, rc == NLPD_EAGAIN);
    if (d) {
        d->until = rc == NLPD_EAGAIN ? mono_now() + BACKOFF_S : 0;
        if (rc == NLPD_EAGAIN)
            snprintf(d->why, sizeof d->why, "%s", e->message);
    }
    pthread_mutex_unlock(&cache_lock);
}

/* The schema (JSON text, caller frees) of id: cached, else fetched. */
static int schema_by_id(const struct nlpd_sr_conf *c, int32_t id, char **schema, struct nlpd_error *err)
{
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < nids; i++)
        if (ids[i].id == id && strcmp(ids[i].url, c->url) == 0) {
            *schema = strdup(ids[i].schema);
            pthread_mutex_unlock(&cache_lock);
            return *schema ? 0 : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        }
    struct down *d = down_of(c->url, 0);
    if (d && mono_now() < d->until) {
        int rc = nlpd_error_set(err, NLPD_EAGAIN, 1, "%s", d->why);
        pthread_mutex_unlock(&cache_lock);
        return rc;
    }
    pthread_mutex_unlock(&cache_lock);

    char path[64];
    snprintf(path, sizeof path, "/schemas/ids/%d", (int)id);
    json_t *j;
    int rc = request(c, "GET", path, NULL, &j, err);
    note_result(c->url, rc, err);
    if (rc < 0)
        return rc;
    const char *s = json_string_value(json_object_get(j, "schema"));
    const char *type = json_string_value(json_object_get(j, "schemaType"));
    if (!s || (type && strcmp(type, "AVRO") != 0)) {
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "schema registry %s: schema id %d is %s", c->url, (int)id,
                            s ? "not an Avro schema" : "answered without a \"schema\" string");
        json_decref(j);
        return rc;
    }
    *schema = strdup(s);
    pthread_mutex_lock(&cache_lock);
    int have = 0;
    for (size_t i = 0; i < nids && !have; i++)
        have = ids[i].id == id && strcmp(ids[i].url, c->url) == 0;
    if (!have && grow((void **)&ids, nids, sizeof *ids) == 0) {
        ids[nids] = (struct known_id){strdup(c->url), id, strdup(s)};
        if (ids[nids].url && ids[nids].schema)
            nids++;
    }
    pthread_mutex_unlock(&cache_lock);
    json_decref(j);
    return *schema ? 0 : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
}

int nlpd_sr_subject_id(const struct nlpd_sr_conf *c, const char *subject, const char *schema_json, int32_t *id,
                       struct nlpd_error *err)
{
    char *esc = curl_easy_escape(NULL, subject, 0);
    if (!esc)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    char path[1024];
    snprintf(path, sizeof path, "/subjects/%s%s", esc, c->auto_register ? "/versions" : "");
    curl_free(esc);
    json_t *req = json_pack("{s:s}", "schema", schema_json), *j = NULL;
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!payload)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    int rc = request(c, "POST", path, payload, &j, err);
    free(payload);
    if (rc == 0) {
        json_t *v = json_object_get(j, "id");
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
        json_decref(j);
        if (n <= 0 || n > INT32_MAX)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "schema registry %s%s: the answer has no valid \"id\"", c->url,
                                  path);
        *id = (int32_t)n;
        pthread_mutex_lock(&cache_lock);
        size_t i = 0;
        for (; i < nsubjects; i++)
            if (!strcmp(subjects[i].url, c->url) && !strcmp(subjects[i].subject, subject) &&
                !strcmp(subjects[i].schema, schema_json))
                break;
        if (i < nsubjects) {
            subjects[i].id = *id;
        } else if (grow((void **)&subjects, nsubjects, sizeof *subjects) == 0) {
            subjects[nsubjects] = (struct known_subject){strdup(c->url), strdup(subject), strdup(schema_json), *id};
            if (subjects[nsubjects].url && subjects[nsubjects].subject && subjects[nsubjects].schema)
                nsubjects++;
        }
        pthread_mutex_unlock(&cache_lock);
        return 0;
    }
    if (rc != NLPD_EAGAIN)
        return rc;
    /* unreachable: an id this process got before for the same schema and subject (a reload during an outage) */
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < nsubjects; i++)
        if (!strcmp(subjects[i].url, c->url) && !strcmp(subjects[i].subject, subject) &&
            !strcmp(subjects[i].schema, schema_json)) {
            *id = subjects[i].id;
            pthread_mutex_unlock(&cache_lock);
            nlpd_log(NLPD_LOG_WARNING, "registry", "%s; using schema id %d, which it gave for subject %s before",
                     err ? err->message : "unreachable", (int)*id, subject);
            return 0;
        }
    pthread_mutex_unlock(&cache_lock);
    return rc;
}

int nlpd_sr_output_id(const struct nlpd_sr_conf *c, const char *schema_path, const char *topic, int32_t fixed_id,
                      int32_t *id, struct nlpd_error *err)
{
    *id = fixed_id;
    if (!c->set)
        return 0;
    if (fixed_id > 0)
        return nlpd_error_set(err, NLPD_EINVAL, 0,
                              "set output.confluent_schema_id or output.schema_registry, not both");
    FILE *f = fopen(schema_path, "rb");
    if (!f)
        return nlpd_error_set(err, NLPD_EIO, 0, "%s: cannot open: %s", schema_path, strerror(errno));
    char *text = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&text, &cap, '\0', f); /* the whole file: a schema holds no NUL */
    fclose(f);
    if (n <= 0) {
        free(text);
        return nlpd_error_set(err, NLPD_EIO, 0, "%s: cannot read it", schema_path);
    }
    char subject[512];
    snprintf(subject, sizeof subject, "%s", c->subject && *c->subject ? c->subject : "");
    if (!*subject)
        snprintf(subject, sizeof subject, "%s-value", topic); /* TopicNameStrategy */
    int rc = nlpd_sr_subject_id(c, subject, text, id, err);
    free(text);
    if (rc == 0)
        nlpd_log(NLPD_LOG_INFO, "registry", "output schema %s: id %d under subject %s at %s", schema_path, (int)*id,
                 subject, c->url);
    else if (err) {
        char why[NLPD_ERROR_MSG_MAX];
        memcpy(why, err->message, sizeof why);
        nlpd_error_set(err, rc, err->retriable, "output.schema_registry: %.400s", why);
    }
    return rc;
}

/* ---- decoders ----
 * Avro C's resolver has no reader defaults: a reader field the writer lacks fails the resolution. So each writer is
 * resolved into a projection of the reader schema (the reader's fields that the writer has, nested records
 * included); the defaults of the others are read from the reader schema's JSON when a field is looked up. */

struct nlpd_sr_decoder {
    struct nlpd_sr_conf conf; /* borrowed strings: the config outlives its decoders */
    json_t *reader;           /* the reader schema's JSON; NULL: records are read with their writer schema */
    pthread_mutex_t lock;
    struct nlpd_sr_writer *w;
    size_t n;
};

struct nlpd_sr_decoder *nlpd_sr_decoder_new(const struct nlpd_sr_conf *c, const char *reader_path,
                                            struct nlpd_error *err)
{
    pthread_mutex_lock(&cache_lock);
    int seen = 0;
    for (size_t i = 0; i < nprobed && !seen; i++)
        seen = strcmp(probed[i], c->url) == 0;
    pthread_mutex_unlock(&cache_lock);
    if (!seen) {
        json_t *j;
        int rc = request(c, "GET", "/subjects", NULL, &j, err);
        json_decref(j);
        if (rc < 0)
            return NULL;
        pthread_mutex_lock(&cache_lock);
        if (grow((void **)&probed, nprobed, sizeof *probed) == 0 && (probed[nprobed] = strdup(c->url)))
            nprobed++;
        pthread_mutex_unlock(&cache_lock);
    }
    struct nlpd_sr_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    d->conf = *c;
    if (reader_path) {
        json_error_t je;
        d->reader = json_load_file(reader_path, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(d->reader)) {
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s:%d: %s", reader_path, je.line,
                           d->reader ? "the schema must be a record" : je.text);
            json_decref(d->reader);
            free(d);
            return NULL;
        }
    }
    pthread_mutex_init(&d->lock, NULL);
    return d;
}

static int is_record(const json_t *t)
{
    const char *type = json_string_value(json_object_get(t, "type"));
    return json_is_object(t) && type && strcmp(type, "record") == 0;
}

static json_t *field_named(const json_t *record, const char *name)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(record, "fields"), i, f)
    {
        const char *n = json_string_value(json_object_get(f, "name"));
        if (n && strcmp(n, name) == 0)
            return f;
    }
    return NULL;
}

/* The reader record r cut to the fields the writer record w has (r is changed in place). A missing field without
 * a default: -1 and why. */
static int project(json_t *r, const json_t *w, char *why, size_t cap)
{
    json_t *kept = json_array(), *f;
    size_t i;
    json_array_foreach(json_object_get(r, "fields"), i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        const json_t *wf = name ? field_named(w, name) : NULL;
        if (!wf) {
            if (!json_object_get(f, "default")) {
                snprintf(why, cap, "the reader's field \"%s\" has no default and the writer schema lacks it",
                         name ? name : "?");
                json_decref(kept);
                return -1;
            }
            continue;
        }
        json_t *rt = json_object_get(f, "type");
        const json_t *wt = json_object_get(wf, "type");
        if (is_record(rt) && is_record(wt) && project(rt, wt, why, cap) < 0) {
            json_decref(kept);
            return -1;
        }
        json_array_append(kept, f);
    }
    json_object_set_new(r, "fields", kept);
    return 0;
}

static void writer_free(struct nlpd_sr_writer *w)
{
    if (w->resolver)
        avro_value_iface_decref(w->resolver);
    if (w->value_iface)
        avro_value_iface_decref(w->value_iface);
    if (w->dest)
        avro_schema_decref(w->dest);
    if (w->schema)
        avro_schema_decref(w->schema);
}

/* Builds w (id and schema text given) against d's reader. */
static int writer_build(const struct nlpd_sr_decoder *d, struct nlpd_sr_writer *w, const char *json,
                        struct nlpd_error *err)
{
    int id = (int)w->id;
    if (avro_schema_from_json_length(json, strlen(json), &w->schema))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "the registry's schema id %d is not a valid Avro schema: %s", id,
                              avro_strerror());
    if (!d->reader) {
        w->value_iface = avro_generic_class_from_schema(w->schema);
        return w->value_iface ? 0 : nlpd_error_set(err, NLPD_EFORMAT, 0, "schema id %d: %s", id, avro_strerror());
    }
    char why[256] = "";
    json_t *wj = json_loads(json, 0, NULL), *proj = json_deep_copy(d->reader);
    int rc = is_record(wj) ? project(proj, wj, why, sizeof why) : (snprintf(why, sizeof why, "not a record"), -1);
    char *text = rc == 0 ? json_dumps(proj, JSON_COMPACT) : NULL;
    json_decref(wj);
    json_decref(proj);
    if (rc == 0 && (!text || avro_schema_from_json_length(text, strlen(text), &w->dest)))
        rc = -1, snprintf(why, sizeof why, "%s", avro_strerror());
    free(text);
    if (rc == 0 && !(w->resolver = avro_resolved_writer_new(w->schema, w->dest)))
        rc = -1, snprintf(why, sizeof why, "%s", avro_strerror());
    if (rc == 0 && !(w->value_iface = avro_generic_class_from_schema(w->dest)))
        rc = -1, snprintf(why, sizeof why, "%s", avro_strerror());
    if (rc < 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0,
                              "writer schema id %d cannot be read with input.schema (Avro schema resolution: %s)", id,
                              why);
    return 0;
}

int nlpd_sr_decoder_get(struct nlpd_sr_decoder *d, int32_t id, const struct nlpd_sr_writer **out,
                        struct nlpd_error *err)
{
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n; i++)
        if (d->w[i].id == id) {
            *out = &d->w[i];
            pthread_mutex_unlock(&d->lock);
            return 0;
        }
    pthread_mutex_unlock(&d->lock);

    char *json;
    int rc = schema_by_id(&d->conf, id, &json, err);
    if (rc < 0)
        return rc;
    struct nlpd_sr_writer w = {.id = id};
    rc = writer_build(d, &w, json, err);
    free(json);
    if (rc < 0) {
        writer_free(&w);
        return rc;
    }
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n; i++)
        if (d->w[i].id == id) { /* another thread was first */
            writer_free(&w);
            *out = &d->w[i];
            pthread_mutex_unlock(&d->lock);
            return 0;
        }
    /* Entries never move once handed out: the array is fixed-size and full means no more caching. */
    if (!d->w && !(d->w = calloc(NLPD_SR_MAX_WRITERS, sizeof *d->w))) {
        pthread_mutex_unlock(&d->lock);
        writer_free(&w);
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    }
    if (d->n == NLPD_SR_MAX_WRITERS) {
        pthread_mutex_unlock(&d->lock);
        writer_free(&w);
        return nlpd_error_set(err, NLPD_ERANGE, 0, "more than %d writer schemas on this input", NLPD_SR_MAX_WRITERS);
    }
    d->w[d->n] = w;
    *out = &d->w[d->n++];
    pthread_mutex_unlock(&d->lock);
    return 0;
}

int nlpd_sr_decoder_default(const struct nlpd_sr_decoder *d, const char *path, char *buf, size_t cap)
{
    const json_t *rec = d->reader, *def = NULL;
    char seg[256];
    for (const char *p = path; rec || def;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof seg)
            return -1;
        memcpy(seg, p, n);
        seg[n] = '\0';
        const json_t *f = rec ? field_named(rec, seg) : NULL;
        def = def ? json_object_get(def, seg) : f ? json_object_get(f, "default") : NULL;
        if (!dot) {
            if (json_is_string(def))
                snprintf(buf, cap, "%s", json_string_value(def));
            else if (json_is_integer(def))
                snprintf(buf, cap, "%lld", (long long)json_integer_value(def));
            else
                return -1;
            return json_is_string(def) ? 1 : 0;
        }
        rec = f && is_record(json_object_get(f, "type")) ? json_object_get(f, "type") : NULL;
        p = dot + 1;
    }
    return -1;
}

void nlpd_sr_decoder_free(struct nlpd_sr_decoder *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        writer_free(&d->w[i]);
    free(d->w);
    json_decref(d->reader);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
