/* nlpd command line (DESIGN.md §9): run, check, pipe, demo, config-doc, version, help. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_help.h"
#include "cmd_model.h"
#include "cmd_replay.h"
#include "conf_check.h"
#include "conf_map.h"
#include "config.h"
#include "demo.h"
#include "diag.h"
#include "kafka.h"
#include "log.h"
#include "nlpd_kernels.h"
#include "pipe.h"
#include "pipeline.h"

#ifndef NLPD_VERSION
#define NLPD_VERSION "0.1.0"
#endif

/* The demo's built-in configuration (conf/demo.conf says why): the models `make models` fetches (langid, the
 * moderation word lists, English sentiment), no metrics server (a demo must not fail on a busy port). */
static const char demo_config[] =
    "kafka:   { brokers = \"embedded\"; group_id = \"nlpd-demo\"; input_topics = [\"events\"];\n"
    "           output_topic = \"events.enriched\"; dlq_topic = \"events.dlq\"; };\n"
    "output:  { format = \"json\"; };\n"
    "flow:    { shutdown_timeout_ms = 10000; };\n"
    "input:   { format = \"json\"; text_field = \"text\"; id_field = \"id\"; };\n"
    "batch:   { max_records = 64; max_wait_ms = 10; };\n"
    "kernels: { threads = 0; };\n"
    "log:     { level = \"notice\"; };\n"
    "metrics: { listen = \"\"; };\n"
    "pipeline = (\n"
    "  { stage = \"langid\";    model = \"models/lid.176.ftz\"; },\n"
    "  { stage = \"moderation\"; lexicon = \"models/lexicons\"; },\n"
    "  { stage = \"sentiment\"; model = \"models/amazon_review_polarity.ftz\"; when = \"lang.code == 'en'\"; }\n"
    ");\n";

static const char demo_records[] = "conf/demo-records.jsonl";

static void usage(FILE *out)
{
    nlpd_cli_usage(out);
}

struct opts {
    const char *config;
    const char *input;
};

static int parse_opts(int argc, char **argv, struct opts *o, int allow_input)
{
    for (int i = 2; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            o->config = argv[++i];
        } else if (allow_input && (!strcmp(argv[i], "-i") || !strcmp(argv[i], "--input")) && i + 1 < argc) {
            o->input = argv[++i];
        } else {
            fprintf(stderr, "nlpd %s: unexpected argument '%s'\n", argv[1], argv[i]);
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

static void log_kernels(const char *line)
{
    nlpd_log(NLPD_LOG_INFO, "main", "%s", line);
}

/* Loads config and pipeline; prints every problem as FILE:LINE: message. */
static int load(const char *path, struct nlpd_config **cfg, struct nlpd_pipeline **p)
{
    struct nlpd_diag diag = {0};
    *cfg = path ? nlpd_config_load_all(path, &diag)
                : nlpd_config_load_string(demo_config, "(built-in demo config)", &diag);
    /* Stage problems are reported even when the sections have errors: one run shows them all. */
    if (*cfg && (*cfg)->pipeline) {
        nlpd_log_setup(nlpd_log_level_parse((*cfg)->log.level),
                       strcmp((*cfg)->log.format, "json") == 0 ? NLPD_LOG_JSON : NLPD_LOG_TEXT);
        /* transformer stages create their backends from these, and log which one they got */
        int dt = nlpd_dtype_parse((*cfg)->kernels.dtype);
        nlpd_kernels_set_defaults((*cfg)->kernels.backend, (int)(*cfg)->kernels.device,
                                  dt < 0 ? NLPD_DTYPE_F32 : (enum nlpd_dtype)dt);
        int g = nlpd_cpu_gemm_parse((*cfg)->kernels.cpu_gemm);
        nlpd_kernels_set_cpu_gemm(g < 0 ? NLPD_CPU_GEMM_AUTO : (enum nlpd_cpu_gemm)g);
        nlpd_kernels_set_logger(log_kernels);
        *p = nlpd_pipeline_create(*cfg, &diag);
        nlpd_kafka_check(*cfg, &diag);
    }
    if (diag.n || !*p) {
        nlpd_diag_print(&diag, stderr);
        nlpd_diag_free(&diag);
        nlpd_pipeline_free(*p);
        *p = NULL;
        nlpd_config_free(*cfg);
        *cfg = NULL;
        return -1;
    }
    return *p ? 0 : -1;
}

static int cmd_check(const struct opts *o)
{
    if (!o->config) {
        fprintf(stderr, "nlpd check: -c FILE is required\n");
        return 2;
    }
    struct nlpd_config *cfg = NULL;
    struct nlpd_pipeline *p = NULL;
    if (load(o->config, &cfg, &p) < 0)
        return 1;
    struct nlpd_diag warn = {0};
    nlpd_conf_check_reach(cfg, &warn); /* services that do not answer now: reported, not fatal */
    nlpd_diag_print(&warn, stderr);
    nlpd_diag_free(&warn);
    printf("%s: ok (%d stage%s)\n", o->config, config_setting_length(cfg->pipeline),
           config_setting_length(cfg->pipeline) == 1 ? "" : "s");
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    return 0;
}

static int cmd_models(const struct opts *o)
{
    if (!o->config) {
        fprintf(stderr, "nlpd models: -c FILE is required\n");
        return 2;
    }
    struct nlpd_config *cfg = NULL;
    struct nlpd_pipeline *p = NULL;
    if (load(o->config, &cfg, &p) < 0)
        return 1;
    nlpd_pipeline_models_print(p, stdout);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    return 0;
}

static int run_pipe(const struct opts *o, int in_fd, struct nlpd_pipe_stats *stats)
{
    struct nlpd_config *cfg = NULL;
    struct nlpd_pipeline *p = NULL;
    if (load(o->config, &cfg, &p) < 0)
        return 1;
    struct nlpd_error err = {0};
    if (nlpd_pipeline_start(p, (int)cfg->kernels.threads, &err) < 0) {
        nlpd_log(NLPD_LOG_ERR, "main", "%s", err.message);
        nlpd_pipeline_free(p);
        nlpd_config_free(cfg);
        return 1;
    }
    int rc = nlpd_pipe_run(cfg, p, in_fd, STDOUT_FILENO, stats);
    struct nlpd_stage_cache_stats cs[16];
    struct nlpd_cache_stats total;
    size_t ncs = nlpd_pipeline_cache_stats(p, cs, 16, &total);
    for (size_t i = 0; i < ncs; i++)
        nlpd_log(NLPD_LOG_NOTICE, "main", "cache %s: %llu hits, %llu misses", cs[i].stage,
                 (unsigned long long)cs[i].hits, (unsigned long long)cs[i].misses);
    struct nlpd_shadow_stats ss[16];
    size_t nss = nlpd_pipeline_shadow_stats(p, ss, 16);
    for (size_t i = 0; i < nss; i++)
        nlpd_log(NLPD_LOG_NOTICE, "main", "shadow %s: %llu agree, %llu disagree, %llu skipped, %llu failed",
                 ss[i].stage, (unsigned long long)ss[i].agree, (unsigned long long)ss[i].disagree,
                 (unsigned long long)ss[i].skipped, (unsigned long long)ss[i].failed);
    if (ncs && total.errors)
        nlpd_log(NLPD_LOG_WARNING, "main", "cache: %llu failed lookups or stores (served uncached)",
                 (unsigned long long)total.errors);
    if (ncs && (total.rejected[0] || total.rejected[1]))
        nlpd_log(NLPD_LOG_WARNING, "main", "cache: %llu cached values refused (%s %llu, %s %llu), computed again",
                 (unsigned long long)(total.rejected[0] + total.rejected[1]), nlpd_cache_reject_names[0],
                 (unsigned long long)total.rejected[0], nlpd_cache_reject_names[1],
                 (unsigned long long)total.rejected[1]);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    return rc;
}

static int cmd_pipe(const struct opts *o)
{
    if (!o->config) {
        fprintf(stderr, "nlpd pipe: -c FILE is required\n");
        return 2;
    }
    return run_pipe(o, STDIN_FILENO, NULL);
}

static int cmd_run(const struct opts *o)
{
    if (!o->config) {
        fprintf(stderr, "nlpd run: -c FILE is required\n");
        return 2;
    }
    struct nlpd_config *cfg = NULL;
    struct nlpd_pipeline *p = NULL;
    if (load(o->config, &cfg, &p) < 0)
        return 1;
    struct nlpd_error err = {0};
    struct nlpd_daemon *d = NULL;
    if (nlpd_pipeline_start(p, (int)cfg->kernels.threads, &err) < 0 || !(d = nlpd_daemon_new(cfg, p, &err))) {
        nlpd_log(NLPD_LOG_ERR, "main", "%s", err.message);
        nlpd_pipeline_free(p);
        nlpd_config_free(cfg);
        return 1;
    }
    nlpd_daemon_own_config(d); /* a reload replaces (and frees) them */
    int rc = nlpd_daemon_run(d, 1);
    nlpd_daemon_free(d);
    return rc;
}

/* `nlpd demo` with a config that has no kafka section: the records go through pipe mode. */
static int demo_pipe(struct opts *o)
{
    const char *input = o->input ? o->input : demo_records;
    int fd = open(input, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "nlpd demo: cannot open %s: %s (run from the source tree, or give -i RECORDS)\n", input,
                strerror(errno));
        return 1;
    }
    struct nlpd_pipe_stats st = {0};
    int rc = run_pipe(o, fd, &st);
    close(fd);
    if (rc == 0 || st.lines) {
        fprintf(stderr,
                "demo: %llu records (%llu enriched, %llu rejected) in %.3f s: %.0f records/s; "
                "latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                (unsigned long long)st.lines, (unsigned long long)st.ok, (unsigned long long)st.errors, st.seconds,
                st.seconds > 0 ? (double)st.lines / st.seconds : 0.0, st.latency_p50_ms, st.latency_p99_ms,
                st.latency_max_ms);
    }
    return rc;
}

static int cmd_demo(struct opts *o)
{
    struct nlpd_config *cfg = NULL;
    struct nlpd_pipeline *p = NULL;
    if (load(o->config, &cfg, &p) < 0)
        return 1;
    if (!cfg->has_kafka) {
        nlpd_pipeline_free(p);
        nlpd_config_free(cfg);
        return demo_pipe(o);
    }
    struct nlpd_error err = {0};
    int rc = 1;
    if (nlpd_pipeline_start(p, (int)cfg->kernels.threads, &err) < 0)
        nlpd_log(NLPD_LOG_ERR, "main", "%s", err.message);
    else
        rc = nlpd_demo_kafka(cfg, p, o->input ? o->input : demo_records);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    nlpd_kernels_omp_env(argv); /* may re-execute nlpd with OMP_WAIT_POLICY=passive */
    signal(SIGPIPE, SIG_IGN);   /* a closed output is reported as a write error */
    atexit(nlpd_log_flush);     /* the count of suppressed repeated log lines */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    struct opts o = {0};
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc > 2 && !strcmp(argv[2], "--roff")) { /* the COMMANDS section of nlpd.1 (scripts/gen-man.sh) */
            nlpd_cli_man(stdout);
            return 0;
        }
        if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            nlpd_cli_command_usage("help", stdout);
            return 0;
        }
        if (argc > 2 && nlpd_cli_command_usage(argv[2], stdout) < 0) {
            fprintf(stderr, "nlpd help: unknown command '%s'\n", argv[2]);
            usage(stderr);
            return 2;
        }
        if (argc <= 2)
            usage(stdout);
        return 0;
    }
    /* `nlpd COMMAND --help` anywhere on the line: the usage on stdout, exit 0, nothing run */
    for (int i = 2; i < argc && nlpd_cli_known(cmd); i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            nlpd_cli_command_usage(cmd, stdout);
            return 0;
        }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("nlpd %s\n", NLPD_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "config-doc")) {
        printf("nlpd configuration keys (see conf/nlpd.conf for an annotated example)\n\n");
        nlpd_config_doc(stdout);
        nlpd_stages_doc(stdout);
        return 0;
    }
    if (!strcmp(cmd, "check"))
        return parse_opts(argc, argv, &o, 0) < 0 ? 2 : cmd_check(&o);
    if (!strcmp(cmd, "models"))
        return parse_opts(argc, argv, &o, 0) < 0 ? 2 : cmd_models(&o);
    if (!strcmp(cmd, "pipe"))
        return parse_opts(argc, argv, &o, 0) < 0 ? 2 : cmd_pipe(&o);
    if (!strcmp(cmd, "demo"))
        return parse_opts(argc, argv, &o, 1) < 0 ? 2 : cmd_demo(&o);
    if (!strcmp(cmd, "infer"))
        return nlpd_cmd_infer(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize"))
        return nlpd_cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "replay"))
        return nlpd_cmd_replay(argc - 1, argv + 1);
    if (!strcmp(cmd, "run"))
        return parse_opts(argc, argv, &o, 0) < 0 ? 2 : cmd_run(&o);
    static const char *const commands[] = {"run",      "check",  "pipe",   "demo",    "config-doc", "infer",
                                           "tokenize", "replay", "models", "version", "help"};
    const char *near = nlpd_conf_suggest(cmd, commands, sizeof commands / sizeof commands[0]);
    fprintf(stderr, "nlpd: unknown command '%s'%s%s%s\n", cmd, near ? " (did you mean '" : "", near ? near : "",
            near ? "'?)" : "");
    usage(stderr);
    return 2;
}
