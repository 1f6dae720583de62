/* tool_ftpredict MODEL K < lines: prints what `fasttext predict-prob MODEL - K` prints, for parity tests
 * and speed comparisons. Replays fastText's stream behaviour: a literal </s> token ends a "line" early,
 * and a last line without a newline gets no end-of-sentence token. */
#include <stdio.h>
#include <stdlib.h>

#include "fasttext.h"

static void print_preds(const struct nlpd_ft_model *m, const struct nlpd_ft_pred *p, int n)
{
    for (int i = 0; i < n; i++)
        printf("%s%s %.9g", i ? " " : "", nlpd_ft_label(m, p[i].label), (double)p[i].prob);
    putchar('\n');
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL K < lines\n", argv[0]);
        return 2;
    }
    struct nlpd_error err = {0};
    struct nlpd_ft_model *m = nlpd_ft_load(argv[1], &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    int k = atoi(argv[2]);
    if (k < 1) {
        fprintf(stderr, "K must be >= 1\n");
        return 2;
    }
    struct nlpd_ft_scratch *s = nlpd_ft_scratch_new(m);
    struct nlpd_ft_pred *out = malloc(sizeof *out * (size_t)k);
    if (!s || !out) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = 0;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        size_t len = (size_t)got;
        int newline = line[len - 1] == '\n';
        if (newline)
            len--;
        size_t pos = 0;
        do {
            size_t used = 0;
            int n = nlpd_ft_predict_ex(m, s, line + pos, len - pos, newline ? 0 : NLPD_FT_NO_EOS, k, 0.0f, out, &used);
            if (n < 0) {
                fprintf(stderr, "predict failed: %s\n", nlpd_strerror(n));
                rc = 1;
                break;
            }
            print_preds(m, out, n);
            if (used == 0)
                break;
            /* fastText goes on reading after a literal </s>: the rest (and the newline) is a new line */
            pos += used;
            if (pos == len && !newline)
                break;
        } while (1);
    }
    free(line);
    free(out);
    nlpd_ft_scratch_free(s);
    nlpd_ft_free(m);
    return rc;
}
