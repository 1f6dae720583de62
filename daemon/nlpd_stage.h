/* The stage contract: the only daemon header a stage includes.
 * A stage is a constant descriptor (struct nlpd_stage_plugin) plus a per-instance context whose
 * configurable fields are described by a conf_map table (parsing, validation, defaults and docs). */
#ifndef NLPD_STAGE_H
#define NLPD_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

#define NLPD_STAGE_ABI 2

/* ---- configuration table ---- */

enum nlpd_conf_type {
    NLPD_CONF_END = 0,
    NLPD_CONF_STRING, /* char * (framework-owned, freed after fini) */
    NLPD_CONF_PATH,   /* char *: a file that must exist */
    NLPD_CONF_INT,    /* long long */
    NLPD_CONF_FLOAT,  /* double */
    NLPD_CONF_BOOL,   /* int 0/1 */
    NLPD_CONF_ENUM,   /* char *, one of `choices` ("a|b|c") */
    NLPD_CONF_MAP,    /* struct nlpd_conf_map: a list of ("from", "to") string pairs */
    NLPD_CONF_LIST,   /* struct nlpd_conf_list: a list or array of strings */
};

enum {
    NLPD_CONF_REQUIRED = 1 << 0,
    NLPD_CONF_MODEL = 1 << 1,     /* a model file: digested for provenance and cache keys */
    NLPD_CONF_CACHE_KEY = 1 << 2, /* changes the stage's output: part of its cache key */
    NLPD_CONF_RESTART = 1 << 3,   /* daemon sections: read only at start; a SIGHUP reload changing it is refused */
};

struct nlpd_conf_map {
    size_t n;
    char **from;
    char **to;
};

struct nlpd_conf_entry {
    const char *key;
    enum nlpd_conf_type type;
    const char *def; /* default as text ("0.5", "true", "a|b"), NULL for none */
    size_t offset;   /* offsetof(ctx struct, field) */
    int flags;
    const char *choices; /* NLPD_CONF_ENUM: "a|b|c" */
    double min, max;     /* NLPD_CONF_INT / NLPD_CONF_FLOAT range, ignored when min == max */
    const char *doc;
};

struct nlpd_conf_list {
    size_t n;
    char **items;
};

/* Looks a map entry up; returns NULL when absent. */
const char *nlpd_conf_map_get(const struct nlpd_conf_map *map, const char *from);

/* ---- records and results ---- */

/* Results are typed slots matching the enriched record (DESIGN.md §11); a stage fills its own. How each is freed,
 * written (JSON, Avro), cached and read by `when` is described once, in the daemon's table (daemon/results.c). */
#define NLPD_LANG_CODE_MAX 32
#define NLPD_LABEL_MAX     64

struct nlpd_lang_result {
    int set;
    char code[NLPD_LANG_CODE_MAX];
    float score;
};

struct nlpd_label_score {
    char label[NLPD_LABEL_MAX];
    float score;
};

struct nlpd_label_result {
    int set;
    char label[NLPD_LABEL_MAX];
    float score;
    size_t nscores;                  /* optional: every label's score (the stage's `scores` option) */
    struct nlpd_label_score *scores; /* owned by the record: use nlpd_record_set_scores() */
};

/* A named entity in the Hugging Face token-classification pipeline's shape. */
struct nlpd_entity {
    char group[NLPD_LABEL_MAX]; /* entity_group (or entity, with aggregation "none") */
    float score;
    char *word;         /* owned by the record */
    int32_t start, end; /* Unicode code points of the original text, end exclusive */
    int32_t index;      /* token index, for aggregation "none" (-1 otherwise) */
    const char *source; /* NULL for the model; e.g. "gazetteer" for entities added by a list */
};

struct nlpd_entities_result {
    int set;
    size_t n, cap;
    struct nlpd_entity *items; /* owned by the record: use nlpd_record_add_entity() */
};

/* One moderation category in the OpenAI moderation shape, with the model's own label kept. */
struct nlpd_mod_category {
    char name[NLPD_LABEL_MAX];  /* e.g. "harassment", "hate", "sexual", "violence", "profanity" */
    char label[NLPD_LABEL_MAX]; /* the model label (or "lexicon") it came from */
    float score;
    int flagged;
};

struct nlpd_moderation_result {
    int set;
    int flagged;
    size_t n, cap;
    struct nlpd_mod_category *cats; /* owned by the record: use nlpd_record_add_category() */
};

/* A machine translation. With `feeds` set, later stages read it: rec->text points at the translation and the
 * input text is kept in input_text (what the output's "text" field shows). */
struct nlpd_translation_result {
    int set;
    char *text; /* owned by the record: use nlpd_record_set_translation() */
    size_t text_len;
    char source_lang[NLPD_LANG_CODE_MAX];
    char target_lang[NLPD_LANG_CODE_MAX];
    int feeds;
    const char *input_text;
    size_t input_text_len;
};

struct nlpd_record {
    const char *text; /* valid UTF-8, NUL-terminated, text_len bytes: what the next stage reads */
    size_t text_len;
    struct nlpd_lang_result lang;
    struct nlpd_translation_result translation;
    struct nlpd_label_result sentiment;
    struct nlpd_entities_result entities;
    struct nlpd_moderation_result moderation;
    /* The topic the record goes to instead of the default output (NULL: the default, or output.routes). Set by a
     * stage, or by the daemon's routing after the pipeline. */
    const char *route;
    const char *topic; /* the input topic (Kafka input), NULL otherwise */
    /* Bit i set by the framework when pipeline stage i processed this record (i < 32). */
    uint32_t stages_run;
    /* Bit i set when stage i's canary model (not its primary) processed this record. */
    uint32_t canary_run;
    /* What a canary split may hash (set by the decoders): the record id (NULL when absent), the Kafka key. */
    const char *id;
    const char *key;
    size_t key_len;
    /* Set by nlpd_record_fail(); a failed record is skipped by later stages and dead-lettered. */
    char *error;
    const char *error_stage;
};

struct nlpd_batch {
    size_t n;
    struct nlpd_record **recs;
    /* Out, optional: the padded tokens the stage's model ran on in this process() call (for each model
     * sub-batch: sequences x padded length, summed). A transformer stage adds to it; the framework starts it
     * at 0 and records the stage's total per micro-batch in the nlpd_stage_batch_padded_tokens histogram.
     * Stages without a padded model (fastText, word lists) leave it 0: nothing is recorded for them. */
    size_t padded_tokens;
};

/* Result helpers: they allocate inside the record (freed with it). Return 0 or NLPD_ENOMEM. */
int nlpd_record_set_scores(struct nlpd_record *rec, const struct nlpd_label_score *scores, size_t n);
int nlpd_record_add_entity(struct nlpd_record *rec, const char *group, float score, const char *word, size_t word_len,
                           int32_t start, int32_t end, int32_t index, const char *source);
/* Adds (or, for an existing name, raises to the max score and ORs flagged) one category; updates flagged. */
int nlpd_record_add_category(struct nlpd_record *rec, const char *name, const char *label, float score, int flagged);
/* Sets the translation (text copied); feeds: later stages read it instead of the input text. */
int nlpd_record_set_translation(struct nlpd_record *rec, const char *text, size_t len, const char *source_lang,
                                const char *target_lang, int feeds);
/* The record's input text (not a translation that later stages read). */
const char *nlpd_record_input_text(const struct nlpd_record *rec, size_t *len);
/* Frees what the helpers above allocated and clears the results. */
void nlpd_record_free_results(struct nlpd_record *rec);

/* ---- the plugin ---- */

/* A stage instance as the framework configured it: passed to init() and process() so that what a stage logs
 * and the records it fails are tagged by the framework, never by a name the stage spells itself. */
struct nlpd_stage_instance {
    const char *name; /* the pipeline entry's `name` (default: the stage type): the tag of logs and failures */
    const char *type; /* the plugin's name, e.g. "sentiment" */
    size_t index;     /* position in the pipeline */
    /* Plugins with token_budget: the padded-token budget of one model batch, from the stage's max_tokens or
     * else batch.max_tokens (one bound for both); 0 for other plugins. */
    size_t max_tokens;
};

/* Marks one record as failed with a reason, tagged with the instance's name; the batch goes on. */
void nlpd_stage_fail(const struct nlpd_stage_instance *inst, struct nlpd_record *rec, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

enum nlpd_stage_status {
    NLPD_STAGE_OK = 0,
    NLPD_STAGE_RETRY = 1, /* transient (e.g. out of memory): the batch is retried, then split */
    NLPD_STAGE_FATAL = 2, /* the stage cannot go on */
};

/* The result fields a stage writes (struct nlpd_stage_plugin.results): what the result cache stores. */
enum {
    NLPD_RESULT_LANG = 1 << 0,
    NLPD_RESULT_SENTIMENT = 1 << 1,
    NLPD_RESULT_ENTITIES = 1 << 2,
    NLPD_RESULT_MODERATION = 1 << 3,
    NLPD_RESULT_TRANSLATION = 1 << 4,
};

struct nlpd_stage_plugin {
    int abi; /* NLPD_STAGE_ABI */
    const char *name;
    const char *description;
    const struct nlpd_conf_entry *conf_map; /* terminated by an entry with type NLPD_CONF_END */
    size_t ctx_size;                        /* zeroed, then filled from conf_map before init() */
    /* Loads models; err says why not. Called once per instance; inst stays valid until after fini(). */
    int (*init)(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err);
    /* Per-worker-thread state (scratch buffers); may be NULL when not needed. */
    void *(*thread_init)(void *ctx);
    void (*thread_fini)(void *ctx, void *tstate);
    /* Processes the records of a batch that are still OK and match the stage's `when`. */
    enum nlpd_stage_status (*process)(const struct nlpd_stage_instance *inst, void *ctx, void *tstate,
                                      struct nlpd_batch *batch, struct nlpd_error *err);
    void (*fini)(void *ctx);
    /* NLPD_RESULT_* bits of the fields process() writes; non-zero makes the stage cacheable: the framework
     * looks results up by the stage's cache key and calls process() on the misses only. */
    unsigned results;
    /* Optional: how the loaded model computes ("int8", "bf16"; NULL or "fp32" for plain fp32), after init. The
     * framework appends it to the model id ("sst2@sha256:...+int8"), so it shows in meta.models and the cache
     * key. */
    const char *(*model_variant)(void *ctx);
    /* Non-zero: the stage batches its model under a padded-token budget. The framework then accepts the
     * stage's `max_tokens` option (default batch.max_tokens) and passes the value as inst->max_tokens. */
    int token_budget;
    /* Optional, after init: the distinct labels the stage can write (up to cap into out; returns how many there
     * are). The framework refuses a shadow whose label set differs from the primary's: they could not agree. */
    size_t (*labels)(void *ctx, const char **out, size_t cap);
};

/* ---- per-language models: what every model stage's `model` / `models` options mean ---- */

/* One model from `model` (it serves every record, as "default"), or one per entry of `models` (lang.code ->
 * path; "default" serves the languages without their own). A slot is the stage's own model struct. */
struct nlpd_stage_models {
    size_t n;
    size_t slot_size;
    const char **lang; /* per model: the lang.code it serves ("default": the rest); the config's strings */
    char *slots;       /* n zeroed slots of slot_size bytes, filled by the stage's load() */
    size_t loaded;     /* slots load() was called on (unload() gets exactly these) */
};

/* The stage's model loader: fills one zeroed slot from path; 0 or a negative NLPD_E* with err set. */
typedef int (*nlpd_stage_model_load_fn)(void *ctx, void *slot, const char *path, struct nlpd_error *err);
/* Runs the stage on recs[0..n), the batch's records that model `model` serves (batch: for padded_tokens). */
typedef enum nlpd_stage_status (*nlpd_stage_model_run_fn)(const struct nlpd_stage_instance *inst, void *ctx,
                                                          void *tstate, size_t model, struct nlpd_record **recs,
                                                          size_t n, struct nlpd_batch *batch, struct nlpd_error *err);

/* Loads a stage's models in config order; exactly one of model (may be NULL) and models (may be empty) is given,
 * else NLPD_EINVAL. On an error ms keeps what was loaded for nlpd_stage_models_free. */
int nlpd_stage_models_load(struct nlpd_stage_models *ms, const char *model, const struct nlpd_conf_map *models,
                           size_t slot_size, nlpd_stage_model_load_fn load, void *ctx, struct nlpd_error *err);
/* Model i's slot. */
static inline void *nlpd_stage_model(const struct nlpd_stage_models *ms, size_t i)
{
    return ms->slots + i * ms->slot_size;
}
/* The model of a record: its lang.code's, else the default, else -1 (the record is left alone). */
int nlpd_stage_models_pick(const struct nlpd_stage_models *ms, const struct nlpd_record *rec);
/* Calls run once per model, in config order, on the records of the batch that model serves (none: not called);
 * records whose lang.code is skip_lang (may be NULL) are left alone. Stops at the first status that is not OK;
 * NLPD_STAGE_RETRY when out of memory. */
enum nlpd_stage_status nlpd_stage_models_run(const struct nlpd_stage_models *ms, const struct nlpd_stage_instance *inst,
                                             struct nlpd_batch *batch, const char *skip_lang,
                                             nlpd_stage_model_run_fn run, void *ctx, void *tstate,
                                             struct nlpd_error *err);
/* Calls unload(ctx, slot) on every slot load() was called on (may be NULL), then frees the set. */
void nlpd_stage_models_free(struct nlpd_stage_models *ms, void (*unload)(void *ctx, void *slot), void *ctx);

/* Logging (the daemon's logger underneath). Stages log through nlpd_stage_log, which tags the line with the
 * instance's name; nlpd_log with a spelled-out facility is the framework's. */
enum nlpd_log_level {
    NLPD_LOG_ERR = 3,
    NLPD_LOG_WARNING = 4,
    NLPD_LOG_NOTICE = 5,
    NLPD_LOG_INFO = 6,
    NLPD_LOG_DEBUG = 7
};
int nlpd_log_enabled(enum nlpd_log_level level);
void nlpd_stage_log(const struct nlpd_stage_instance *inst, enum nlpd_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void nlpd_log(enum nlpd_log_level level, const char *facility, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The level is checked before the call, so below it the arguments are neither formatted nor evaluated (level
 * itself is evaluated twice). (nlpd_log)(...) calls the function, which checks again. */
#define nlpd_log(level, ...)                                                                                           \
    do {                                                                                                               \
        if (nlpd_log_enabled(level))                                                                                   \
            (nlpd_log)((level), __VA_ARGS__);                                                                          \
    } while (0)

#endif
