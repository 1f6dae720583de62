/* Config parsing: every error is reported as FILE:LINE: message, defaults apply, types are checked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "pipeline.h"

static char path[64];

/* Writes text to a temp file and loads it; returns the config or NULL with diag filled. */
static struct nlpd_config *load_text(const char *text, struct nlpd_diag *diag)
{
    snprintf(path, sizeof path, "/tmp/nlpd-test-config-XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    struct nlpd_config *c = nlpd_config_load(path, diag);
    return c;
}

static int has_error(const struct nlpd_diag *d, int line, const char *needle)
{
    char prefix[96];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    for (size_t i = 0; i < d->n; i++)
        if (strncmp(d->msgs[i], prefix, strlen(prefix)) == 0 && strstr(d->msgs[i], needle))
            return 1;
    for (size_t i = 0; i < d->n; i++)
        fprintf(stderr, "  got: %s\n", d->msgs[i]);
    return 0;
}

static void defaults(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c = load_text("pipeline = ( { stage = \"langid\"; } );\n", &d);
    CHECK(c != NULL);
    if (c) {
        CHECK(strcmp(c->input.format, "json") == 0);
        CHECK(strcmp(c->input.text_field, "text") == 0);
        CHECK(strcmp(c->input.id_field, "id") == 0);
        CHECK(c->input.max_text_bytes == 1048576);
        CHECK(c->batch.max_records == 64);
        CHECK(c->batch.max_wait_ms == 10);
        CHECK(c->kernels.threads == 0);
        CHECK(strcmp(c->kernels.dtype, "auto") == 0); /* fp16 on CUDA, fp32 on the CPU */
        CHECK(strcmp(c->log.level, "info") == 0);
    }
    nlpd_config_free(c);
    nlpd_diag_free(&d);
    unlink(path);
}

static void syntax_error_has_line(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c = load_text("input: { text_field = \"t\"; };\nbatch: { max_records = ; };\n", &d);
    CHECK(c == NULL);
    CHECK(has_error(&d, 2, "syntax error"));
    nlpd_diag_free(&d);
    unlink(path);
}

static void all_errors_reported(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c = load_text("input: {\n"
                                      "  text_field = 5;\n"   /* 2: wrong type */
                                      "  colour = \"red\";\n" /* 3: unknown key */
                                      "};\n"
                                      "batch: { max_records = \"64\"; };\n" /* 5: string for int */
                                      "tracing: { listen = \"x\"; };\n"     /* 6: unknown section */
                                      "kernels: { threads = -1; };\n"       /* 7: out of range */
                                      "log: { level = \"loud\"; };\n"       /* 8: bad enum */
                                      "pipeline = ( { stage = \"langid\"; } );\n",
                                      &d);
    CHECK(c == NULL);
    CHECK(has_error(&d, 2, "input.text_field must be a string, not an integer"));
    CHECK(has_error(&d, 3, "unknown key 'colour' in input"));
    CHECK(has_error(&d, 5, "batch.max_records must be an integer, not a string"));
    CHECK(has_error(&d, 6, "unknown key 'tracing' at top level"));
    CHECK(has_error(&d, 7, "kernels.threads = -1 is out of range"));
    CHECK(has_error(&d, 8, "log.level must be one of"));
    CHECK(d.n == 6);
    nlpd_diag_free(&d);
    unlink(path);
}

static void pipeline_required(void)
{
    struct nlpd_diag d = {0};
    CHECK(load_text("batch: { max_records = 8; };\n", &d) == NULL);
    CHECK(d.n == 1 && strstr(d.msgs[0], "missing 'pipeline'"));
    nlpd_diag_free(&d);
    CHECK(load_text("pipeline = ( );\n", &d) == NULL);
    CHECK(has_error(&d, 1, "pipeline is empty"));
    nlpd_diag_free(&d);
    CHECK(load_text("pipeline = 3;\n", &d) == NULL);
    CHECK(has_error(&d, 1, "pipeline must be a list"));
    nlpd_diag_free(&d);
    unlink(path);
}

static void bad_field_paths(void)
{
    struct nlpd_diag d = {0};
    CHECK(load_text("input: { text_field = \"a..b\"; };\npipeline = ( { stage = \"langid\"; } );\n", &d) == NULL);
    CHECK(has_error(&d, 1, "not a valid dotted path"));
    nlpd_diag_free(&d);
    unlink(path);
}

/* Stage options are checked against the stage's conf_map when the pipeline is built. */
static void stage_errors(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c = load_text(
        "pipeline = (\n"
        "  { stage = \"nosuch\"; },\n"                                                                           /* 2 */
        "  { stage = \"langid\"; model = \"/nonexistent/lid.ftz\"; },\n"                                         /* 3 */
        "  { stage = \"langid\";\n"                                                                              /* 4 */
        "    model = 7;\n"                                                                                       /* 5 */
        "    threshold = 2.0;\n"                                                                                 /* 6 */
        "    speed = 1; },\n"                                                                                    /* 7 */
        "  { stage = \"sentiment\"; model = \"/dev/null\"; labels = ( \"x\" ); when = \"lang.code ~ 'en'\"; }\n" /* 8 */
        ");\n",
        &d);
    CHECK(c != NULL);
    if (c) {
        CHECK(nlpd_pipeline_create(c, &d) == NULL);
        CHECK(has_error(&d, 2, "unknown stage \"nosuch\""));
        CHECK(has_error(&d, 3,
                        "model '/nonexistent/lid.ftz' not found (a Hugging Face folder or model file you provide"));
        CHECK(has_error(&d, 5, "model must be a string"));
        CHECK(has_error(&d, 6, "threshold = 2 is out of range"));
        CHECK(has_error(&d, 7, "unknown key 'speed'"));
        CHECK(has_error(&d, 8, "labels[0] must be a pair of strings"));
        CHECK(has_error(&d, 8, "when: expected ==, !=, <, <=, >, >=, in or not in"));
    }
    nlpd_config_free(c);
    nlpd_diag_free(&d);
    unlink(path);
}

static void from_string(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c =
        nlpd_config_load_string("pipeline = ( { stage = \"langid\"; } ); batch: { max_wait_ms = 0; };", "(inline)", &d);
    CHECK(c && c->batch.max_wait_ms == 0);
    nlpd_config_free(c);
    CHECK(nlpd_config_load_string("pipeline = (", "(inline)", &d) == NULL);
    CHECK(d.n == 1 && strncmp(d.msgs[0], "(inline):1: ", 12) == 0);
    nlpd_diag_free(&d);
}

static void kafka_section(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c = load_text("kafka: {\n"
                                      "  brokers = \"embedded\";\n"
                                      "  input_topics = [\"a\", \"^b.*\"];\n"
                                      "  output_topic = \"out\"; dlq_topic = \"dlq\";\n"
                                      "  properties = ( (\"security.protocol\", \"SASL_SSL\") );\n"
                                      "};\n"
                                      "pipeline = ( { stage = \"langid\"; } );\n",
                                      &d);
    CHECK(c && c->has_kafka);
    if (c) {
        CHECK(c->kafka.input_topics.n == 2 && strcmp(c->kafka.input_topics.items[1], "^b.*") == 0);
        CHECK(c->kafka.properties.n == 1 && strcmp(c->kafka.properties.to[0], "SASL_SSL") == 0);
        CHECK(strcmp(c->kafka.group_id, "nlpd") == 0 && c->flow.max_inflight == 20000);
        CHECK(strcmp(c->output.format, "json") == 0);
    }
    nlpd_config_free(c);
    nlpd_diag_free(&d);
    c = load_text("kafka: {\n  brokers = \"x:9092\";\n  input_topics = [];\n};\n"
                  "input: { format = \"avro\"; };\npipeline = ( { stage = \"langid\"; } );\n",
                  &d);
    CHECK(c == NULL);
    CHECK(has_error(&d, 3, "kafka.input_topics must not be empty"));
    CHECK(has_error(&d, 1, "kafka needs 'output_topic'"));
    CHECK(has_error(&d, 5, "input.format \"avro\" needs input.schema"));
    nlpd_diag_free(&d);
    unlink(path);
}

/* A section of the wrong type is one FILE:LINE error, and its fields still get their defaults: nlpd check keeps
 * an invalid config to build the pipeline and report every error, and validation reads the fields itself. */
static void section_wrong_type(void)
{
    static const char *const bad[] = {"input = 5;",     "cache = 5;",    "log = 5;",
                                      "kafka = ( 1 );", "output = [1];", "flow = \"x\";",
                                      "metrics = 1.5;", "batch = true;", "kernels = ( { threads = 1; } );"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "pipeline = ( { stage = \"langid\"; } );\n%s\n", bad[i]);
        snprintf(path, sizeof path, "/tmp/nlpd-test-config-XXXXXX");
        int fd = mkstemp(path);
        FILE *f = fdopen(fd, "w");
        fputs(text, f);
        fclose(f);
        struct nlpd_diag d = {0};
        struct nlpd_config *c = nlpd_config_load_all(path, &d);
        CHECK(c != NULL);
        CHECK(has_error(&d, 2, "must be a group { ... }, not"));
        CHECK(d.n == 1);
        if (c) {
            CHECK(c->input.format && c->input.text_field && c->input.id_field && c->output.format);
            CHECK(c->cache.backend && c->cache.redis && c->cache.key_prefix && c->log.level && c->log.format);
            CHECK(c->kernels.backend && c->kernels.dtype && c->metrics.listen && c->output.schema);
            CHECK(c->batch.max_records == 64 && c->flow.max_inflight == 20000);
        }
        nlpd_config_free(c);
        nlpd_diag_free(&d);
        CHECK(nlpd_config_load(path, &d) == NULL && d.n == 1);
        nlpd_diag_free(&d);
        unlink(path);
    }
}

/* output.schema is read only for Avro output: a JSON config with a schema path that does not resolve (as an
 * installed config's relative path did under /var/lib/nlpd) is fine; an Avro one is an error at its line. */
static void output_schema_only_for_avro(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c = load_text("output: { format = \"json\"; schema = \"/nonexistent/enriched.avsc\"; };\n"
                                      "pipeline = ( { stage = \"langid\"; } );\n",
                                      &d);
    CHECK(c != NULL && d.n == 0);
    nlpd_config_free(c);
    unlink(path);
    c = load_text("output: {\n  format = \"avro\";\n  schema = \"/nonexistent/enriched.avsc\";\n};\n"
                  "pipeline = ( { stage = \"langid\"; } );\n",
                  &d);
    CHECK(c == NULL);
    CHECK(has_error(&d, 3, "output.schema: cannot read '/nonexistent/enriched.avsc'"));
    nlpd_diag_free(&d);
    unlink(path);
}

static void missing_file(void)
{
    struct nlpd_diag d = {0};
    CHECK(nlpd_config_load("/nonexistent/nlpd.conf", &d) == NULL);
    CHECK(d.n == 1 && strstr(d.msgs[0], "/nonexistent/nlpd.conf: cannot open"));
    nlpd_diag_free(&d);
}

/* output.routes: conditions parsed at load with FILE:LINE errors; the first matching route wins. */
static void output_routes(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c =
        load_text("output: { routes = (\n"                                 /* 1 */
                  "  { when = \"lang.code == 'de'\"; topic = \"de\"; },\n" /* 2 */
                  "  { when = \"lang.code in ('de', 'fr')\"; topic = \"fr\"; copy = true; name = \"romance\"; }\n"
                  "); };\n"
                  "pipeline = ( { stage = \"langid\"; } );\n",
                  &d);
    CHECK(c && d.n == 0 && c->routes.n == 2);
    if (c && c->routes.n == 2) {
        struct nlpd_record r = {0};
        CHECK(nlpd_routes_match(&c->routes, &r) == NULL); /* no language: the output topic */
        r.lang.set = 1;
        strcpy(r.lang.code, "de");
        CHECK(nlpd_routes_match(&c->routes, &r) == &c->routes.r[0]); /* first match wins */
        strcpy(r.lang.code, "fr");
        const struct nlpd_route *m = nlpd_routes_match(&c->routes, &r);
        CHECK(m == &c->routes.r[1] && m->copy && strcmp(m->name, "romance") == 0 && strcmp(m->topic, "fr") == 0);
        CHECK(strcmp(c->routes.r[0].name, "de") == 0 && !c->routes.r[0].copy); /* the name defaults to the topic */
    }
    nlpd_config_free(c);
    unlink(path);
    nlpd_diag_free(&d);

    c = load_text("output: {\n"                                                                     /* 1 */
                  "  routes = (\n"                                                                  /* 2 */
                  "    { when = \"lang.code == 'de'\"; topic = \"de\"; },\n"                        /* 3 */
                  "    { when = \"lang.code == 'de' and\";\n"                                       /* 4 */
                  "      topic = \"x\"; },\n"                                                       /* 5 */
                  "    { when = \"lang.cod == 'de'\"; topic = \"x\"; copy = 1; route = \"x\"; },\n" /* 6 */
                  "    { topic = \"y\"; }\n"                                                        /* 7 */
                  "  );\n"
                  "};\n"
                  "pipeline = ( { stage = \"langid\"; } );\n",
                  &d);
    CHECK(c == NULL);
    CHECK(has_error(&d, 4, "output.routes[1].when: expected a condition (column 22)"));
    CHECK(has_error(&d, 6, "output.routes[2].when: unknown field \"lang.cod\""));
    CHECK(has_error(&d, 6, "output.routes[2].copy must be true or false"));
    CHECK(has_error(&d, 6, "unknown key 'route' in output.routes[2]"));
    CHECK(has_error(&d, 7, "output.routes[3]: missing 'when'"));
    nlpd_config_free(c);
    unlink(path);
    nlpd_diag_free(&d);
}

/* The deprecated moderation action "route" is the route moderation.flagged -> kafka.flagged_topic, ahead of the
 * configured ones. */
static void deprecated_flagged_topic(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c = load_text(
        "kafka: { brokers = \"b:9092\"; input_topics = [ \"in\" ]; output_topic = \"out\"; dlq_topic = \"dlq\";\n"
        "  flagged_topic = \"flagged\"; };\n"
        "output: { routes = ( { when = \"lang.code == 'de'\"; topic = \"de\"; } ); };\n"
        "pipeline = ( { stage = \"moderation\"; action = \"route\"; } );\n",
        &d);
    CHECK(c && c->routes.n == 2);
    if (c && c->routes.n == 2) {
        CHECK(strcmp(c->routes.r[0].topic, "flagged") == 0 &&
              strcmp(c->routes.r[0].when_text, "moderation.flagged") == 0);
        struct nlpd_record r = {0};
        r.lang.set = 1;
        strcpy(r.lang.code, "de");
        CHECK(nlpd_record_add_category(&r, "hate", "x", 0.9f, 1) == 0);
        CHECK(nlpd_routes_match(&c->routes, &r) == &c->routes.r[0]);
        nlpd_record_free_results(&r);
    }
    nlpd_config_free(c);
    unlink(path);
    nlpd_diag_free(&d);
}

/* input/output.schema_registry: parsed with their defaults, checked with FILE:LINE, and enough for Avro input. */
static void schema_registry(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *c =
        load_text("input: { format = \"avro\";\n"
                  "  schema_registry = { url = \"http://127.0.0.1:8081\"; }; };\n"
                  "output: { format = \"avro\"; schema_registry = { url = \"https://r\"; subject = \"s-value\";\n"
                  "  auto_register = false; basic_auth = \"u:p\"; }; };\n"
                  "pipeline = ( { stage = \"langid\"; } );\n",
                  &d);
    CHECK(c != NULL); /* no input.schema needed with a registry */
    if (c) {
        CHECK(c->input.registry.set && strcmp(c->input.registry.url, "http://127.0.0.1:8081") == 0);
        CHECK(c->input.registry.timeout_ms == 5000 && c->input.registry.auto_register == 0);
        CHECK(c->output.registry.set && strcmp(c->output.registry.subject, "s-value") == 0);
        CHECK(c->output.registry.auto_register == 0 && strcmp(c->output.registry.basic_auth, "u:p") == 0);
    }
    nlpd_config_free(c);
    nlpd_diag_free(&d);
    unlink(path);

    c = load_text("input: { format = \"avro\";\n"
                  "  schema_registry = { url = \"ftp://x\"; subject = \"s\"; }; };\n"
                  "output: { schema_registry = { timeout_ms = 1; }; };\n"
                  "pipeline = ( { stage = \"langid\"; } );\n",
                  &d);
    CHECK(c == NULL);
    CHECK(has_error(&d, 2, "input.schema_registry.url \"ftp://x\": not an http:// or https:// URL"));
    CHECK(has_error(&d, 2, "unknown key 'subject' in input.schema_registry")); /* output only */
    CHECK(has_error(&d, 3, "output.schema_registry needs 'url'"));
    CHECK(has_error(&d, 3, "timeout_ms"));
    CHECK(has_error(&d, 3, "output.schema_registry needs output.format \"avro\""));
    nlpd_config_free(c);
    nlpd_diag_free(&d);
    unlink(path);
}

/* ${VAR}, ${VAR:-default} (unset or empty), $${ and lone $ kept, in daemon sections and in kafka.properties pairs. */
static void env_substitution(void)
{
    setenv("NLPD_T_A", "alpha", 1);
    setenv("NLPD_T_EMPTY", "", 1);
    unsetenv("NLPD_T_UNSET");
    struct nlpd_diag d = {0};
    struct nlpd_config *c =
        load_text("kafka: { brokers = \"${NLPD_T_A}:9092,${NLPD_T_UNSET:-b}:1\"; input_topics = [\"in.${NLPD_T_A}\"];\n"
                  "         output_topic = \"$${x}$ $5 ${NLPD_T_EMPTY:-dflt}\"; dlq_topic = \"${NLPD_T_EMPTY}d\";\n"
                  "         properties = ( (\"sasl.username\", \"${NLPD_T_A}\") ); };\n"
                  "pipeline = ( { stage = \"langid\"; } );\n",
                  &d);
    CHECK(c != NULL);
    if (c) {
        CHECK(strcmp(c->kafka.brokers, "alpha:9092,b:1") == 0);
        CHECK(strcmp(c->kafka.input_topics.items[0], "in.alpha") == 0);
        CHECK(strcmp(c->kafka.output_topic, "${x}$ $5 dflt") == 0);
        CHECK(strcmp(c->kafka.dlq_topic, "d") == 0);
        CHECK(c->kafka.properties.n == 1 && strcmp(c->kafka.properties.to[0], "alpha") == 0);
    }
    nlpd_config_free(c);
    nlpd_diag_free(&d);
    unlink(path);
    struct nlpd_diag e = {0};
    c = load_text("input: { text_field = \"t\";\n"
                  "  id_field = \"${NLPD_T_UNSET}\"; };\n"
                  "log: { level = \"${1x}\"; format = \"${NLPD_T_A:-x\"; };\n"
                  "pipeline = ( { stage = \"langid\"; } );\n",
                  &e);
    CHECK(c == NULL);
    CHECK(has_error(&e, 2, "environment variable NLPD_T_UNSET is not set"));
    CHECK(has_error(&e, 3, "level: \"${1x}\": \"${\" must be followed by a variable name"));
    CHECK(has_error(&e, 3, "no closing"));
    nlpd_diag_free(&e);
    unlink(path);
}

int main(void)
{
    RUN(env_substitution);
    RUN(defaults);
    RUN(syntax_error_has_line);
    RUN(all_errors_reported);
    RUN(pipeline_required);
    RUN(bad_field_paths);
    RUN(stage_errors);
    RUN(from_string);
    RUN(kafka_section);
    RUN(output_schema_only_for_avro);
    RUN(missing_file);
    RUN(section_wrong_type);
    RUN(output_routes);
    RUN(deprecated_flagged_topic);
    RUN(schema_registry);
    return TEST_REPORT();
}
