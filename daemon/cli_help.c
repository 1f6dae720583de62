/* The command line's usage texts, one per command (see cli_help.h): what `nlpd COMMAND --help` prints, and what
 * scripts/gen-man.sh turns into nlpd.1, so that the help and the man page cannot disagree. */
#include "cli_help.h"

#include <string.h>

struct cmd_help {
    const char *name;
    const char *synopsis;
    const char *brief; /* the line of `nlpd help` */
    const char *text;
};

static const struct cmd_help cmds[] = {
    {"run", "nlpd run -c FILE", "the Kafka daemon (foreground; SIGTERM/SIGINT drain and stop, SIGHUP reloads)",
     "Runs the Kafka daemon in the foreground (systemd runs it this way): consumes kafka.input_topics, runs the\n"
     "pipeline, produces to kafka.output_topic and dead letters to kafka.dlq_topic, commits delivered offsets.\n"
     "SIGTERM/SIGINT drain and stop within flow.shutdown_timeout_ms; SIGHUP reloads the file.\n"
     "  -c, --config FILE   the configuration (required)\n"},
    {"check", "nlpd check -c FILE", "validate a config and load its models; errors as FILE:LINE: message",
     "Validates a configuration and loads its models; every problem is printed as FILE:LINE: message.\n"
     "Warnings (e.g. an unreachable Redis) do not fail the check. Exit 0 when valid, 1 otherwise.\n"
     "  -c, --config FILE   the configuration (required)\n"},
    {"models", "nlpd models -c FILE",
     "the models a config loads (shadows and canaries too): digest, architecture, dtype, labels, source",
     "Loads the configuration's models and lists each (primary, shadow, canary): sha256 digest, path, architecture,\n"
     "dtype, labels and where it came from (config.json's _name_or_path / _commit_hash, the model card's\n"
     "base_model, else the path). The same is exported as nlpd_model_info in /metrics.\n"
     "  -c, --config FILE   the configuration (required)\n"},
    {"pipe", "nlpd pipe -c FILE", "JSON lines on stdin -> one enriched JSON line per input line on stdout",
     "JSON lines on stdin -> one enriched JSON line per input line on stdout, in order, through the same\n"
     "pipeline without Kafka. A bad line gives {\"error\": \"...\", \"line\": N} and processing goes on.\n"
     "  -c, --config FILE   the configuration (required; its kafka section is ignored)\n"},
    {"demo", "nlpd demo [-c FILE] [-i RECORDS]", "embedded broker, sample records in, enriched records out, summary",
     "Starts an embedded broker (its bootstrap address is printed alone on a line of stderr), sends the sample\n"
     "records through the pipeline and prints the enriched records, the dead letters and a summary.\n"
     "  -c, --config FILE   a configuration (default: a built-in one using the models `make models` fetches)\n"
     "  -i, --input FILE    JSON lines to send (default conf/demo-records.jsonl)\n"},
    {"config-doc", "nlpd config-doc", "every configuration key with its type, default and meaning",
     "Prints every configuration key (daemon sections and stages) with its type, default and meaning.\n"},
    {"infer", "nlpd infer --model DIR [options] < lines.jsonl",
     "raw model outputs of a Hugging Face folder, for debugging and parity",
     "JSON lines {\"text\", \"text_pair\"?} (or {\"input_ids\"}) -> raw outputs of a Hugging Face folder:\n"
     "{\"input_ids\", \"logits\"} | {\"input_ids\", \"token_logits\"} | {\"input_ids\", \"output_ids\"} "
     "(translation).\n"
     "  --model DIR         the model folder (required)\n"
     "  --max-length N      truncate (encoders) or cap the generated length (translation)\n"
     "  --num-beams K       beam search for translation models\n"
     "  --threads N         compute threads (0: one per CPU)\n"
     "  --backend B         auto, cpu or cuda\n"
     "  --dtype D           auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16, bf16 or int8\n"
     "  --device N          CUDA device ordinal\n"},
    {"tokenize", "nlpd tokenize --model DIR [--decode] [--max-length N] < lines.jsonl",
     "ids, tokens and offsets (or --decode: text) of a model folder's tokenizer",
     "JSON lines {\"text\", \"text_pair\"?} -> {\"ids\", \"tokens\", \"offsets\"} with the folder's tokenizer\n"
     "(tokenizer.json, the legacy files, or a Marian folder's source.spm + vocab.json: {\"ids\", \"tokens\"}).\n"
     "With --decode: {\"ids\", \"skip_special_tokens\"?} | {\"tokens\"} -> {\"text\"}.\n"
     "  --model DIR         the model folder (required)\n"
     "  --max-length N      truncate to N tokens\n"
     "  --decode            decode ids or tokens to text\n"},
    {"replay",
     "nlpd replay -c FILE [--from TOPIC] [--to TOPIC] [--reason TEXT] [--stage NAME] [--since TIME] [--until TIME] "
     "[--limit N] [--group GROUP] [--dry-run]",
     "dead letters back to their source topics (or --to), up to the end offsets at start",
     "Reads the dead-letter topic (kafka.dlq_topic, or --from) from the beginning up to the end offsets seen at\n"
     "start and re-produces each matching dead letter's original value, key and headers (nlpd.* removed,\n"
     "nlpd.replayed added) to --to or to its nlpd.source.topic. Prints a summary; exit 0 only when every matched\n"
     "record was acknowledged, 1 otherwise, 2 for bad arguments.\n"
     "  -c, --config FILE   the configuration (its kafka section)\n"
     "  --from TOPIC        the topic to read (default kafka.dlq_topic)\n"
     "  --to TOPIC          where to produce (default: each record's nlpd.source.topic)\n"
     "  --reason TEXT       only dead letters whose reason contains TEXT\n"
     "  --stage NAME        only dead letters of that stage (\"input\" for undecodable records)\n"
     "  --since TIME, --until TIME\n"
     "                      only dead letters written in that window: 2026-12-07, 2026-12-07T10:00:00[.123][Z]\n"
     "                      (UTC), or @UNIX_SECONDS\n"
     "  --limit N           at most N records\n"
     "  --group GROUP       resume from and commit this consumer group's offsets (default: no commit)\n"
     "  --dry-run           print one JSON line per match, produce nothing\n"},
    {"version", "nlpd version | nlpd --version", "the version", "Prints the version.\n"},
    {"help", "nlpd help [COMMAND] | nlpd --help", "this list, or one command's usage",
     "Prints the commands, or one command's usage.\n"},
    {NULL, NULL, NULL, NULL},
};

static const struct cmd_help *find(const char *name)
{
    for (const struct cmd_help *c = cmds; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

int nlpd_cli_known(const char *cmd)
{
    return find(cmd) != NULL;
}

void nlpd_cli_usage(FILE *out)
{
    fprintf(out, "usage: nlpd COMMAND [options]   (nlpd COMMAND --help: one command's usage)\n\n");
    for (const struct cmd_help *c = cmds; c->name; c++)
        fprintf(out, "  %s\n      %s\n", c->synopsis, c->brief);
}

int nlpd_cli_command_usage(const char *cmd, FILE *out)
{
    const struct cmd_help *c = find(cmd);
    if (!c)
        return -1;
    fprintf(out, "usage: %s\n\n%s", c->synopsis, c->text);
    return 0;
}

void nlpd_cli_man(FILE *out)
{
    /* roff source; gen-man.sh adds the header and the sections that do not come from here */
    for (const struct cmd_help *c = cmds; c->name; c++) {
        fprintf(out, ".TP\n.B %s\n", c->synopsis);
        for (const char *p = c->text; *p; p++) {
            if (*p == '\\')
                fputs("\\e", out);
            else if (*p == '-')
                fputs("\\-", out);
            else if (*p == '\n' && p[1] == ' ' && p[2] == ' ')
                fputs("\n.br\n", out);
            else if ((*p == '.' || *p == '\'') && p > c->text && p[-1] == '\n')
                fputs("\\&.", out);
            else
                fputc(*p, out);
        }
    }
}
